#!/usr/bin/env node
// Runs queries with mysql2 (or MariaDB Connector/Node.js, the npm package mariadb) and
// prints one JSON line: node run.js '<json>'
//
// Input: {
//   host, port, user, password, database?,
//   ssl?: {ca: PEM string or file path, rejectUnauthorized?: bool (default true)},
//   queries: ["..."],
//   prepared?: bool            use execute() (binary protocol) instead of query()
//   params?: [[...], ...]      parameters for each query, by position (optional)
//   continueOnError?: bool     record an error per query and go on (exit 0)
//   options?: {...}            extra connection options, merged last
//   driver?: "mysql2" | "mariadb"  the client library (default mysql2); mariadb keeps its
//                              default pipelining, so execute() sends COM_STMT_PREPARE and
//                              COM_STMT_EXECUTE (statement id 0xFFFFFFFF) in one write
// }
// Output, exit 0: {"results": [{"fields": [...], "rows": [[...]]}
//                              | {"affectedRows", "insertId", "warningStatus"}
//                              | {"error": {...}} (continueOnError only)]}
// Output, exit 1: {"error": {"code", "errno", "sqlState", "message"}, "results": [...]}
// Dates come back as strings, BLOBs as {"hex": "..."}, DECIMAL and BIGINT as mysql2 gives them.
'use strict';

const fs = require('fs');
const mysql = require('mysql2/promise');

// MariaDB Connector/Node.js behind mysql2's promise interface: [result, fields].
async function mariadbConnection(config) {
  const mariadb = require('mariadb');
  const conn = await mariadb.createConnection({ ...config, ssl: config.ssl || false });
  const call = (run) => async (sql, params) => {
    const result = await run.call(conn, { sql: sql.sql, rowsAsArray: true }, params);
    if (!Array.isArray(result)) {
      const { affectedRows, insertId, warningStatus } = result;
      return [{ affectedRows, insertId: Number(insertId), warningStatus }, undefined];
    }
    const fields = (result.meta || []).map((m) => ({ name: m.name() }));
    return [Array.from(result), fields];
  };
  return {
    execute: call(conn.execute),
    query: call(conn.query),
    end: () => conn.end(),
    destroy: () => conn.destroy(),
  };
}

function toJsonValue(value) {
  if (Buffer.isBuffer(value)) return { hex: value.toString('hex') };
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Date) return value.toISOString();
  return value;
}

function errorJson(err) {
  return {
    code: err.code ?? null,
    errno: err.errno ?? null,
    sqlState: err.sqlState ?? null,
    message: String(err.sqlMessage ?? err.message ?? err),
  };
}

function resultJson(result, fields) {
  if (Array.isArray(result)) {
    return {
      fields: (fields || []).map((f) => f.name),
      rows: result.map((row) => row.map(toJsonValue)),
    };
  }
  return {
    affectedRows: result.affectedRows,
    insertId: result.insertId,
    warningStatus: result.warningStatus,
  };
}

function sslOptions(ssl) {
  if (!ssl) return undefined;
  const out = { rejectUnauthorized: ssl.rejectUnauthorized !== false };
  if (ssl.ca) out.ca = ssl.ca.includes('-----BEGIN') ? ssl.ca : fs.readFileSync(ssl.ca, 'utf8');
  return out;
}

async function main() {
  const spec = JSON.parse(process.argv[2] ?? '');
  const config = {
    host: spec.host,
    port: spec.port,
    user: spec.user,
    password: spec.password,
    database: spec.database,
    ssl: sslOptions(spec.ssl),
    dateStrings: true,
    connectTimeout: 10000,
    ...(spec.options || {}),
  };
  const results = [];
  let conn;
  try {
    conn =
      spec.driver === 'mariadb'
        ? await mariadbConnection(config)
        : await mysql.createConnection(config);
  } catch (err) {
    return { out: { error: errorJson(err), results }, code: 1 };
  }
  try {
    for (const [i, sql] of (spec.queries || []).entries()) {
      const params = spec.params ? spec.params[i] : undefined;
      const call = { sql, rowsAsArray: true };
      try {
        const [result, fields] = spec.prepared
          ? await conn.execute(call, params)
          : await conn.query(call, params);
        results.push(resultJson(result, fields));
      } catch (err) {
        if (!spec.continueOnError || err.fatal) {
          return { out: { error: errorJson(err), results }, code: 1 };
        }
        results.push({ error: errorJson(err) });
      }
    }
    return { out: { results }, code: 0 };
  } finally {
    await conn.end().catch(() => conn.destroy());
  }
}

main()
  .catch((err) => ({ out: { error: errorJson(err), results: [] }, code: 1 }))
  .then(({ out, code }) => {
    process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(code));
  });
