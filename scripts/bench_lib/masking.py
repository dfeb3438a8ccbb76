"""The masking part: what result-set masking costs a large streamed result.

It starts, all on 127.0.0.1: a private MariaDB (``tests/lab/mariadb.py``) with a table
``bench_mask.cards (id INT PRIMARY KEY, card VARCHAR(19))`` of 1,000 rows (16-digit card
numbers), and two ``sqlgate run`` with ``tls = "disabled"`` toward the backend:

- ``gateway-masking`` with one ``[[masking]]`` rule: ``bench_mask.cards.card``, strategy
  ``last4``, group ``pii-readers`` exempt. Its account ``agent`` (group ``agents``) gets
  the card masked; its account ``reader`` (groups ``agents`` and ``pii-readers``) is exempt
  from the rule, so its sessions have no masker at all and take the fast relay;
- ``gateway-plain``, the same without any ``[[masking]]`` rule.

Two measurements, each through the ``mariadb`` client (``--batch --quick``) into
/dev/null like the gateway part's large result, ``rounds`` rounds:

- the join ``SELECT c.card, REPEAT('x', 1000) FROM bench_mask.cards c JOIN
  seq_1_to_<n> s`` (Sequence engine; 1,000 x n rows of 1,016 bytes, about 1 GB for n =
  1,000). MariaDB gives ``c.card`` its origin (schema, table and column) in the column
  definition, so the rule applies. Endpoints, in rotated order: ``direct`` (MariaDB as
  ``sqlgate_native``), ``unmasked`` (``gateway-masking`` as ``reader``) and ``masked``
  (``gateway-masking`` as ``agent``);
- the gateway part's ``REPEAT('x', 1000)`` result, which no rule applies to, through
  ``gateway-plain`` (``without``) and through ``gateway-masking`` as ``agent`` (``with``: a
  session that has a masker, whose result sets are planned and found to need nothing), in
  slices of 0.1 GB (``NO_RULE_SLICE_ROWS``) that alternate between the two.

Before measuring, PyMySQL checks what the clients get: the join's first rows directly
(the card column's origin is ``bench_mask.cards.card``), as ``reader`` (the real numbers)
and as ``agent`` (``************`` and the last four digits). After measuring, the
masking gateway's ledger must hold a ``result`` record for every measured run of the join:
as ``agent`` with every row's card counted as masked, as ``reader`` with none.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pymysql
from lab.gateway import GatewayAccount

from .errors import BenchError
from .private import PrivateRig
from .rig import Endpoint

SCHEMA = "bench_mask"
TABLE = "cards"
COLUMN = "card"
CARD_ROWS = 1000
CARD_DIGITS = 16
FILLER_BYTES = 1000  # REPEAT('x', 1000) beside the card
JOIN_ROW_BYTES = CARD_DIGITS + FILLER_BYTES
EXEMPT_GROUP = "pii-readers"
RULE = f"""
[[masking]]
column = "{SCHEMA}.{TABLE}.{COLUMN}"
strategy = "last4"
exempt_groups = ["{EXEMPT_GROUP}"]
"""
ACCOUNTS = (
    GatewayAccount("agent", "agent-secret-1", ("agents",)),
    GatewayAccount("reader", "reader-secret-5", ("agents", EXEMPT_GROUP)),
)
JOIN_ENDPOINTS = ("direct", "unmasked", "masked")
NO_RULE_ENDPOINTS = ("without", "with")
NO_RULE_SLICE_ROWS = 100_000  # the result no rule applies to streams in slices of 0.1 GB
_MASKED_CARD = re.compile(rf"\*{{{CARD_DIGITS - 4}}}[0-9]{{4}}")


def card(i: int) -> str:
    """The card number of row ``i`` (16 digits)."""
    return f"4{i:0{CARD_DIGITS - 1}d}"


def join_sql(seq: int) -> str:
    return (
        f"SELECT c.{COLUMN}, REPEAT('x', {FILLER_BYTES}) FROM {SCHEMA}.{TABLE} c "
        f"JOIN seq_1_to_{seq} s"
    )


# -------------------------------------------------------------------------------- rig


class MaskingRig(PrivateRig):
    """MariaDB and the two gateways; ``with MaskingRig(...) as rig`` starts and stops them."""

    def start(self) -> MaskingRig:
        db = self.start_db()
        values = ", ".join(f"({i}, '{card(i)}')" for i in range(1, CARD_ROWS + 1))
        db.admin_sql(
            f"CREATE DATABASE {SCHEMA}",
            f"CREATE TABLE {SCHEMA}.{TABLE} (id INT PRIMARY KEY, {COLUMN} VARCHAR(19))",
            f"INSERT INTO {SCHEMA}.{TABLE} VALUES {values}",
        )
        self.endpoints["direct"] = Endpoint("direct", db.port, db.native_user, db.native_password)
        masking = self.start_gateway("gateway-masking", RULE, ACCOUNTS)
        plain = self.start_gateway("gateway-plain", "", ACCOUNTS)
        for name, gw, user in (
            ("unmasked", masking, "reader"),
            ("masked", masking, "agent"),
            ("with", masking, "agent"),
            ("without", plain, "agent"),
        ):
            assert gw.proc is not None
            acct = gw.account(user)
            self.endpoints[name] = Endpoint(name, gw.port, acct.user, acct.password, gw.proc.pid)
        return self


# ---------------------------------------------------------------------------- checks


def _first_rows(ep: Endpoint, rows: int = 5) -> tuple[list[tuple[Any, ...]], Any]:
    """The join's first rows through ``ep`` with PyMySQL, and the card column's field."""
    conn = pymysql.connect(
        host=ep.host,
        port=ep.port,
        user=ep.user,
        password=ep.password,
        database=SCHEMA,
        ssl_disabled=True,
        autocommit=True,
        connect_timeout=15,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(f"{join_sql(2)} LIMIT {rows}")
            got = [tuple(r) for r in cur.fetchall()]
            fields = cur._result.fields  # the column definitions as they came
    finally:
        conn.close()
    return got, fields[0]


def check_clients(rig: MaskingRig) -> str:
    """What each endpoint's client receives: the origin directly, real cards as the exempt
    identity, masked ones as ``agent``. A one-line summary; BenchError when wrong."""
    real = {card(i) for i in range(1, CARD_ROWS + 1)}
    rows, col = _first_rows(rig.endpoints["direct"])
    origin = tuple(
        v.decode() if isinstance(v, bytes) else v for v in (col.db, col.org_table, col.org_name)
    )
    if origin != (SCHEMA, TABLE, COLUMN):
        raise BenchError(f"the join's card column has the origin {origin}: the rule cannot apply")
    if not rows or any(r[0] not in real for r in rows):
        raise BenchError(f"direct: unexpected rows {rows[:2]}")
    rows, _ = _first_rows(rig.endpoints["unmasked"])
    if not rows or any(r[0] not in real for r in rows):
        raise BenchError(f"the exempt identity did not get the real cards: {rows[:2]}")
    rows, col = _first_rows(rig.endpoints["masked"])
    if not rows or any(not _MASKED_CARD.fullmatch(r[0]) for r in rows):
        raise BenchError(f"the masked identity did not get masked cards: {rows[:2]}")
    if any(len(r[1]) != FILLER_BYTES for r in rows):
        raise BenchError("the masked identity's second column changed")
    return (
        f"checked with PyMySQL before measuring: the join's card column keeps its origin "
        f"{SCHEMA}.{TABLE}.{COLUMN}; the exempt identity gets the real numbers, the masked "
        f"one e.g. {rows[0][0]}"
    )


def masked_runs(ledger: Path, sql: str) -> dict[str, list[int]]:
    """Per identity, the ``masked_values`` of the ``result`` record of each ``sql`` run."""
    done = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "ledger", "export", "--ledger", str(ledger)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
        raise BenchError(f"sqlgate ledger export failed: {why[-1]}")
    ours: set[tuple[str, int]] = set()
    runs: dict[str, list[int]] = {}
    for line in done.stdout.splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        key = (record.get("session"), record.get("statement_seq"))
        if record["kind"] == "statement" and record.get("sql") == sql:
            ours.add(key)
        elif record["kind"] == "result" and key in ours:
            runs.setdefault(record["identity"], []).append(int(record.get("masked_values", 0)))
    return runs


def profile(ep: Endpoint, seq: int, out: Path) -> str:
    """py-spy record of the gateway behind ``ep`` during one more stream of the join;
    what happened, in one line."""
    from . import measure

    assert ep.pid is not None
    fmt = "raw" if out.suffix in (".txt", ".folded") else "flamegraph"
    cmd = ["py-spy", "record", "--pid", str(ep.pid), "--rate", "250", "--format", fmt]
    spy = subprocess.Popen(
        [*cmd, "--output", str(out.resolve())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(0.5)  # py-spy attaches
        result = measure.run_stream(
            ep,
            seq * CARD_ROWS,
            sample_rss=False,
            sql=join_sql(seq),
            row_bytes=JOIN_ROW_BYTES,
            database=SCHEMA,
        )
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it recorded, then exits
        _, err = spy.communicate(timeout=60)
    if spy.returncode != 0 and not out.exists():
        return f"py-spy failed: {err.decode(errors='replace').strip()[-300:]}"
    return (
        f"profile of the masking gateway ({result.mb_per_s:,.1f} MB/s masked under py-spy) "
        f"written to {out}"
    )
