"""How many rows a held UPDATE or DELETE would touch: the number an approver wants.

The gateway runs ``SELECT COUNT(*) FROM t WHERE <the statement's own WHERE>`` on a
connection of its own with the target's credential, inside a read-only transaction,
bounded in time (``max_statement_time`` on MariaDB, and a deadline here). Only when the
WHERE calls nothing but plain built-in functions: an expression that could write or
wait is never run before a person has approved it. Any failure gives no estimate
(None), never an error for the client.
"""

from __future__ import annotations

import asyncio
import logging

from appliance.config import TargetConfig
from appliance.side_connection import connect

__all__ = ["SAFE_FUNCTIONS", "estimate_rows"]

log = logging.getLogger("sqlgate.estimate")

#: Functions a WHERE may call and still be counted: pure, quick, no side effects.
SAFE_FUNCTIONS = frozenset(
    {
        "ABS", "ADDDATE", "CAST", "CEIL", "CEILING", "COALESCE", "CONCAT", "CONVERT",
        "CURDATE", "CURRENT_DATE", "CURRENT_TIME", "CURRENT_TIMESTAMP", "DATE", "DATEDIFF",
        "DATE_ADD", "DATE_FORMAT", "DATE_SUB", "DAY", "DAYOFMONTH", "FLOOR", "GREATEST",
        "HOUR", "IF", "IFNULL", "INTERVAL", "ISNULL", "LCASE", "LEAST", "LEFT", "LENGTH",
        "LOWER", "LTRIM", "MINUTE", "MONTH", "NOW", "NULLIF", "RIGHT", "ROUND", "RTRIM",
        "SUBDATE", "SUBSTR", "SUBSTRING", "TIMESTAMP", "TIMESTAMPDIFF", "TRIM", "TRUNCATE",
        "UCASE", "UNIX_TIMESTAMP", "UPPER", "UTC_DATE", "UTC_TIMESTAMP", "YEAR",
    }
)  # fmt: skip


async def estimate_rows(
    target: TargetConfig,
    db: str | None,
    count_sql: str,
    mark: int,
    timeout_s: float = 2.0,
    collation: int | None = None,
) -> int | None:
    """The count, or None when it cannot be had within ``timeout_s``. ``collation``: the
    id of the one the session compares literals in (``collation_connection``; None: the
    default of utf8mb4, this connection's own), which the count uses too: ``'ä' = 'ae'``
    is true under utf8mb4_german2_ci, false under the default."""
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(_count, target, db, count_sql, mark, timeout_s, collation),
            timeout_s + 0.5,
        )
    except TimeoutError:
        log.info("row estimate for target %s: no answer within %.1f s", target.name, timeout_s)
    except Exception as exc:  # an estimate is a courtesy: never a failure of the statement
        log.info("row estimate for target %s failed: %s", target.name, type(exc).__name__)
    return None


def _count(
    target: TargetConfig,
    db: str | None,
    count_sql: str,
    mark: int,
    timeout_s: float,
    collation: int | None,
) -> int | None:
    conn = connect(target, db, timeout_s, mark)
    try:
        with conn.cursor() as cur:
            if collation is not None:
                cur.execute(
                    "SELECT CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS "
                    "WHERE ID = %s",
                    (collation,),
                )
                found = cur.fetchone()
                if found is None:
                    return None  # a collation the server does not know: not comparable
                charset, name = str(found[0]), str(found[1])
                if not (charset.startswith("utf8") or count_sql.isascii()):
                    return None  # the text is sent in UTF-8, which the server would misread
                cur.execute("SET NAMES %s COLLATE %s", (charset, name))
            cur.execute("START TRANSACTION READ ONLY")
            limited = count_sql
            if "mariadb" in conn.get_server_info().lower():
                limited = f"SET STATEMENT max_statement_time = {timeout_s:g} FOR {count_sql}"
            cur.execute(limited)
            row = cur.fetchone()
            cur.execute("ROLLBACK")
        return int(row[0]) if row else None
    finally:
        conn.close()
