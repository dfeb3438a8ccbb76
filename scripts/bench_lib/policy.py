"""The statement policy's own figures: what one ``SessionPolicy.decide`` costs.

Every statement a client sends is decided on the gateway's event loop before it is
forwarded, so this cost adds to every query. Three paths, from cheapest to dearest:

- ``cached``: a COM_QUERY whose exact text was decided before: one lookup by text and
  one by (subject, schema, command), then the runaway guard. Each call gets a new
  ``ClientCommand`` holding a new copy of the text, as one read from the socket would, so
  the text's hash is computed every time;
- ``by_shape``: sysbench's point selects, ``SELECT c FROM sbtest1 WHERE id=<n>`` with a
  different id each time: the text is new, but its shape (literals replaced by ``?``) was
  decided before, so the lexer runs and the parser does not;
- ``uncached``: a join of three tables as an agent writes it (joins, a few predicates,
  ORDER BY, LIMIT, a trailing comment, about 300 bytes), with a column alias that changes
  on every call, so neither the exact-text nor the shape cache can answer: the lexer, the
  shape, sqlglot's tokenizer and parser, the analysis of the tree and the rules all run.
  (A new literal or a new comment alone would share the shape of the previous text.)

Each run is a fresh Python process (``python -m bench_lib.policy ...``, which prints one
JSON object), with one ``Policy(PolicyConfig(), ())`` and one ``SessionPolicy`` for
``agent`` of group ``agents`` on target ``orders``, schema ``shop``, character set 45
(utf8mb4). Each path is warmed up, then timed with ``time.perf_counter_ns`` around a loop
of many calls, several times; the per-call mean of each loop is one repeat, and the
process reports every repeat. The commands are built before the loop starts. The garbage
collector stays on, as in the gateway, and runs a full collection before each loop.
"""

from __future__ import annotations

import argparse
import gc
import importlib.machinery
import json
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from .errors import BenchError
from .worker import run_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from appliance.mysql.relay import ClientCommand

    Decide = Callable[[ClientCommand, int, dict[int, bytes]], object]

# sysbench's oltp_point_select, as sent with --db-ps-mode=disable
POINT_SELECT = "SELECT c FROM sbtest1 WHERE id={id}"
# A join as agents write them. The alias ``t{n}`` changes per call: a new literal or
# comment alone would still share the shape of the previous text.
AGENT_JOIN = (
    "SELECT o.id, o.created_at, o.total AS t{n}, c.name, c.email, p.title FROM orders o "
    "JOIN customers c ON c.id = o.customer_id JOIN products p ON p.id = o.product_id "
    "WHERE o.status = 'shipped' AND o.created_at >= '2026-01-01' AND o.total > {n} "
    "ORDER BY o.created_at DESC LIMIT 50 /* request {n} */"
)
_FIRST_N = 1_000_000  # keeps every AGENT_JOIN text the same length (7-digit numbers)
WARMUP_CALLS = 1_000
WARMUP_UNCACHED = 50


@dataclass(frozen=True)
class PolicyRun:
    """One process's repeats, in µs per call, for each path."""

    cached_us: list[float]
    by_shape_us: list[float]
    uncached_us: list[float]
    sqlglot: str  # e.g. "sqlglot 30.30.0, compiled (sqlglotc)"
    compiled: bool
    join_bytes: int  # length of the uncached statement's text


# ------------------------------------------------------------------ the parent's side


def run(*, cached: int, by_shape: int, uncached: int, repeats: int) -> PolicyRun:
    """One fresh process: ``repeats`` timed loops of the given number of calls per path."""
    data = run_json(
        "bench_lib.policy",
        [
            f"--cached={cached}",
            f"--by-shape={by_shape}",
            f"--uncached={uncached}",
            f"--repeats={repeats}",
        ],
        "policy decide",
    )
    return PolicyRun(
        cached_us=data["cached_us"],
        by_shape_us=data["by_shape_us"],
        uncached_us=data["uncached_us"],
        sqlglot=data["sqlglot"],
        compiled=data["compiled"],
        join_bytes=data["join_bytes"],
    )


# ------------------------------------------------------------------ the worker's side


def sqlglot_build() -> tuple[str, bool]:
    """Which sqlglot the classifier uses: the mypyc-compiled build (sqlglotc) parses
    2 to 4 times faster than the pure-Python one, so the figure depends on it."""
    import sqlglot
    import sqlglot.parser

    compiled = sqlglot.parser.__file__ is not None and sqlglot.parser.__file__.endswith(
        tuple(importlib.machinery.EXTENSION_SUFFIXES)
    )
    if compiled:
        try:
            build = f"compiled (sqlglotc {metadata.version('sqlglotc')})"
        except metadata.PackageNotFoundError:
            build = "compiled"
    else:
        build = "pure Python (no sqlglotc)"
    return f"sqlglot {sqlglot.__version__}, {build}", compiled


def _command(number: int, sql: str) -> ClientCommand:
    from appliance.mysql.relay import ClientCommand

    # a new bytes object per command, as each one read from a socket is
    return ClientCommand(number, 3, b"\x03" + sql.encode(), b"")


def _timed(decide: Decide, commands: list[ClientCommand], status: int) -> float:
    """µs per call of one loop over ``commands``."""
    prepared: dict[int, bytes] = {}
    gc.collect()
    start = time.perf_counter_ns()
    for cmd in commands:
        decide(cmd, status, prepared)
    return (time.perf_counter_ns() - start) / len(commands) / 1000


def measure(cached: int, by_shape: int, uncached: int, repeats: int) -> dict[str, Any]:
    from appliance.config import PolicyConfig
    from appliance.mysql.constants import ServerStatus
    from appliance.policy.gate import Policy, SessionPolicy
    from appliance.policy.lexer import LexMode, shape
    from appliance.policy.rules import Subject

    build, compiled = sqlglot_build()
    session = SessionPolicy(
        Policy(PolicyConfig(), ()), Subject("agent", frozenset({"agents"}), "orders"), "shop", 45
    )
    decide = session.decide
    status = int(ServerStatus.AUTOCOMMIT)
    counter = iter(range(1, 1 << 62))
    join = AGENT_JOIN.format(n=_FIRST_N)

    # The inputs must be what each figure claims to measure.
    mode = LexMode()
    points = [POINT_SELECT.format(id=i) for i in (1, 5000)]
    if shape(points[0].encode(), mode) != shape(points[1].encode(), mode):
        raise BenchError("two point selects do not share a shape")
    joins = [AGENT_JOIN.format(n=_FIRST_N + i) for i in (0, 1)]
    if shape(joins[0].encode(), mode) == shape(joins[1].encode(), mode):
        raise BenchError("two agent joins share a shape: they would not be uncached")
    for sql in (join, points[0]):
        verdict = decide(_command(next(counter), sql), status, {})
        if verdict.refusal is not None or verdict.parts[0].kind != "SELECT":
            raise BenchError(f"the policy does not allow {sql[:40]!r} as a SELECT")

    def cached_loop(calls: int) -> list[ClientCommand]:
        return [_command(next(counter), join) for _ in range(calls)]

    def shape_loop(calls: int) -> list[ClientCommand]:
        # ids 1..10,000, each once in 10,000 consecutive calls (sysbench draws at random)
        return [
            _command(n, POINT_SELECT.format(id=n * 7919 % 10_000 + 1))
            for n in (next(counter) for _ in range(calls))
        ]

    fresh = iter(range(_FIRST_N + 2, 10_000_000))

    def uncached_loop(calls: int) -> list[ClientCommand]:
        return [_command(next(counter), AGENT_JOIN.format(n=next(fresh))) for _ in range(calls)]

    result: dict[str, Any] = {}
    for name, build_loop, calls, warmup in (
        ("cached", cached_loop, cached, WARMUP_CALLS),
        ("by_shape", shape_loop, by_shape, WARMUP_CALLS),
        ("uncached", uncached_loop, uncached, WARMUP_UNCACHED),
    ):
        _timed(decide, build_loop(warmup), status)
        result[f"{name}_us"] = [
            round(_timed(decide, build_loop(calls), status), 3) for _ in range(repeats)
        ]
    result.update(
        sqlglot=build,
        compiled=compiled,
        join_bytes=len(join.encode()),
        calls=[cached, by_shape, uncached],
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench_lib.policy")
    parser.add_argument("--cached", type=int, default=20_000, help="calls per timed loop")
    parser.add_argument("--by-shape", type=int, default=10_000, help="calls per timed loop")
    parser.add_argument("--uncached", type=int, default=1_000, help="calls per timed loop")
    parser.add_argument("--repeats", type=int, default=7, help="timed loops per path")
    args = parser.parse_args(argv)
    try:
        result = measure(args.cached, args.by_shape, args.uncached, args.repeats)
    except BenchError as exc:
        print(f"bench_lib.policy: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
