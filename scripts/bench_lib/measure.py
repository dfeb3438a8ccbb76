"""The measurements: each runs once through one endpoint and returns its figures.

:func:`interleave` runs one measurement through every endpoint, round after round, with
the order rotated each round (direct, socat, gateway; then gateway, direct, socat; ...),
so drift on the shared machine (other load, CPU frequency, the page cache) spreads over
all endpoints instead of favouring whichever runs first.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pymysql

from .errors import BenchError
from .rig import SBTEST_DATABASE, Endpoint, RssSampler, cpu_seconds, rss_kib

T = TypeVar("T")

SYSBENCH_TABLES = 4
SYSBENCH_TABLE_SIZE = 10_000
# Text protocol (COM_QUERY) rather than server-side prepared statements: what most agent
# clients send, and what a statement classifier in the gateway will have to look at.
SYSBENCH_PS_MODE = "disable"
STREAM_ROW_BYTES = 1000
# socat reaps a connection's child process shortly after the connection closes; its CPU
# time reaches the parent's counters only then.
REAP_WAIT_S = 0.3


def rotation(names: Sequence[str], round_no: int) -> list[str]:
    """The endpoint order of one round: the first round as given, then rotated right."""
    k = round_no % len(names)
    cut = len(names) - k
    return [*names[cut:], *names[:cut]]


def interleave(
    names: Sequence[str],
    rounds: int,
    measure: Callable[[str], T],
    describe: Callable[[T], str],
    label: str,
) -> dict[str, list[T]]:
    """Run ``measure`` for every endpoint in every round; results per endpoint, in order."""
    results: dict[str, list[T]] = {name: [] for name in names}
    for r in range(rounds):
        for name in rotation(names, r):
            value = measure(name)
            results[name].append(value)
            progress(f"{label:<28} round {r + 1}/{rounds} {name:<12} {describe(value)}")
    return results


def interleave_slices(
    names: Sequence[str],
    rounds: int,
    slices: int,
    measure: Callable[[str], T],
    describe: Callable[[str, list[T]], str],
    label: str,
) -> dict[str, list[list[T]]]:
    """Like ``interleave``, with each round cut into ``slices`` short runs per endpoint,
    the order mirrored from one slice to the next (A B, B A, A B, ...): a burst of other
    work on the machine then falls on every endpoint alike. Per endpoint, per round, the
    results of its slices."""
    results: dict[str, list[list[T]]] = {name: [] for name in names}
    for r in range(rounds):
        order = rotation(names, r)
        done: dict[str, list[T]] = {name: [] for name in names}
        for k in range(slices):
            for name in order if k % 2 == 0 else reversed(order):
                done[name].append(measure(name))
        for name in order:
            results[name].append(done[name])
            progress(f"{label:<28} round {r + 1}/{rounds} {name:<12} {describe(name, done[name])}")
    return results


def progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..1)."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


# ---------------------------------------------------------------------------- sysbench


@dataclass(frozen=True)
class SysbenchResult:
    qps: float
    queries: int
    relay_cpu_us_per_query: float | None
    stalls: int  # attempts lost to connections that never completed their login


_QUERIES = re.compile(r"queries:\s+(\d+)\s+\(([\d.]+) per sec\.\)")
_CONNECT_FAILED = ("unable to connect", "connection creation failed")


def _sysbench_args(ep: Endpoint) -> list[str]:
    return [
        f"--mysql-host={ep.host}",
        f"--mysql-port={ep.port}",
        f"--mysql-user={ep.user}",
        f"--mysql-password={ep.password}",
        f"--mysql-db={SBTEST_DATABASE}",
        "--mysql-ssl=off",
        f"--db-ps-mode={SYSBENCH_PS_MODE}",
        f"--tables={SYSBENCH_TABLES}",
        f"--table-size={SYSBENCH_TABLE_SIZE}",
    ]


def sysbench_prepare(direct: Endpoint) -> None:
    """Create and fill the sbtest tables once, directly against the server."""
    cmd = [
        "sysbench",
        "oltp_read_only",
        *_sysbench_args(direct),
        f"--threads={SYSBENCH_TABLES}",
        "prepare",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise BenchError(f"sysbench prepare failed: {_last_line(result)}")


@dataclass(frozen=True)
class SysbenchRun:
    """A finished sysbench run: its output, the relay's CPU seconds before it, and how
    many attempts were lost to stalled logins."""

    stdout: str
    cpu_before: float
    stalls: int

    def relay_cpu_us_per(self, ep: Endpoint, count: int) -> float | None:
        """The relay's CPU per ``count`` units of work since the run began (None direct)."""
        if not ep.pid:
            return None
        time.sleep(REAP_WAIT_S)
        return (cpu_seconds(ep.pid) - self.cpu_before) / max(count, 1) * 1e6


def sysbench(
    ep: Endpoint, test: str, threads: int, seconds: int, *, attempts: int = 3
) -> SysbenchRun:
    """One sysbench run; a run whose connections stall at login is repeated (and counted)."""
    cmd = [
        "sysbench",
        test,
        *_sysbench_args(ep),
        f"--threads={threads}",
        f"--time={seconds}",
        "--report-interval=0",
        "run",
    ]
    stalls = 0
    for attempt in range(attempts):
        cpu_before = cpu_seconds(ep.pid) if ep.pid else 0.0
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 120, check=False
        )
        if result.returncode == 0:
            return SysbenchRun(result.stdout, cpu_before, stalls)
        output = result.stdout + result.stderr
        if any(s in output for s in _CONNECT_FAILED) and attempt + 1 < attempts:
            stalls += 1
            progress(f"{ep.name}: sysbench could not connect ({_last_line(result)}); repeating")
            continue
        raise BenchError(f"sysbench {test} through {ep.name} failed: {_last_line(result)}")
    raise BenchError(f"sysbench {test} through {ep.name}: no attempt made")


def run_sysbench(
    ep: Endpoint, test: str, threads: int, seconds: int, *, attempts: int = 3
) -> SysbenchResult:
    """One sysbench run: queries per second and the relay's CPU per query."""
    done = sysbench(ep, test, threads, seconds, attempts=attempts)
    match = _QUERIES.search(done.stdout)
    if match is None:
        raise BenchError(f"sysbench {test} through {ep.name}: no 'queries:' line in its output")
    queries, qps = int(match.group(1)), float(match.group(2))
    return SysbenchResult(qps, queries, done.relay_cpu_us_per(ep, queries), done.stalls)


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.startswith("FATAL") or "ERROR" in ln]
    chosen = fatal[0] if fatal else (lines[-1] if lines else "")
    return f"exit {result.returncode}: {chosen}"


# ------------------------------------------------------------------ large result stream


@dataclass(frozen=True)
class StreamResult:
    mb_per_s: float
    seconds: float
    relay_cpu_s: float | None
    rss_before_kib: int | None  # the relay's RSS just before the query
    rss_max_kib: int | None  # the largest RSS sampled (every 100 ms) while it streamed


def stream_sql(rows: int) -> str:
    return f"SELECT REPEAT('x', {STREAM_ROW_BYTES}) FROM seq_1_to_{rows}"


def run_stream(
    ep: Endpoint,
    rows: int,
    *,
    sample_rss: bool,
    sql: str | None = None,
    row_bytes: int = STREAM_ROW_BYTES,
    database: str = SBTEST_DATABASE,
) -> StreamResult:
    """Stream ``rows`` rows of 1,000 bytes with the ``mariadb`` client into /dev/null
    (or ``rows`` rows of ``row_bytes`` bytes of row data that ``sql`` returns)."""
    cmd = [
        "mariadb",
        "--no-defaults",
        f"--host={ep.host}",
        f"--port={ep.port}",
        f"--user={ep.user}",
        "--skip-ssl",
        "--batch",
        "--quick",
        "--skip-column-names",
        f"--database={database}",
        f"--execute={sql or stream_sql(rows)}",
    ]
    env = dict(os.environ, MYSQL_PWD=ep.password)
    pid = ep.pid if sample_rss else None
    cpu_before = cpu_seconds(ep.pid) if ep.pid else 0.0
    rss_before = rss_kib(pid) if pid else None
    sampler: RssSampler | None
    with RssSampler(pid) if pid else contextlib.nullcontext() as sampler:
        started = time.perf_counter()
        result = subprocess.run(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            timeout=600,
            check=False,
        )
        elapsed = time.perf_counter() - started
    if result.returncode != 0:
        why = result.stderr.strip().splitlines()[-1:] or [""]
        raise BenchError(f"mariadb client through {ep.name} failed: {why[0]}")
    relay_cpu: float | None = None
    if ep.pid:
        time.sleep(REAP_WAIT_S)
        relay_cpu = cpu_seconds(ep.pid) - cpu_before
    mb = rows * row_bytes / 1e6
    return StreamResult(
        mb_per_s=mb / elapsed,
        seconds=elapsed,
        relay_cpu_s=relay_cpu,
        rss_before_kib=rss_before,
        rss_max_kib=sampler.max_kib if sampler is not None else None,
    )


# ------------------------------------------------------------------------ SELECT 1


@dataclass(frozen=True)
class LatencyResult:
    p50_us: float
    p99_us: float
    trips: int
    relay_cpu_us: float | None  # the relay's CPU per round trip (login and warm-up included)


def connect(ep: Endpoint, **kwargs: Any) -> pymysql.connections.Connection[Any]:
    """A plain (no TLS) PyMySQL connection to an endpoint."""
    return pymysql.connect(
        host=ep.host,
        port=ep.port,
        user=ep.user,
        password=ep.password,
        ssl_disabled=True,
        autocommit=True,
        connect_timeout=15,
        **kwargs,
    )


def run_select1(ep: Endpoint, trips: int, warmup: int) -> LatencyResult:
    """Round trips of ``SELECT 1`` over one connection, timed one by one."""
    times: list[int] = []
    cpu_before = cpu_seconds(ep.pid) if ep.pid else 0.0
    with connect(ep) as conn, conn.cursor() as cur:
        for _ in range(warmup):
            cur.execute("SELECT 1")
            cur.fetchall()
        clock = time.perf_counter_ns
        gc.disable()  # the client's own collector pauses are not the relay's latency
        try:
            for _ in range(trips):
                t0 = clock()
                cur.execute("SELECT 1")
                cur.fetchall()
                times.append(clock() - t0)
        finally:
            gc.enable()
    cpu_us: float | None = None
    if ep.pid:
        time.sleep(REAP_WAIT_S)
        cpu_us = (cpu_seconds(ep.pid) - cpu_before) / (trips + warmup) * 1e6
    ordered = sorted(t / 1000 for t in times)
    return LatencyResult(percentile(ordered, 0.50), percentile(ordered, 0.99), trips, cpu_us)


# ------------------------------------------------------------------------ idle sessions


@dataclass(frozen=True)
class IdleResult:
    sessions: int
    rss_before_kib: int  # after one warm-up session, before the idle ones
    rss_open_kib: int  # with all sessions open and idle
    rss_closed_kib: int  # after they were closed again
    retries: int  # connections that failed and were opened again
    open_seconds: float

    @property
    def per_session_kib(self) -> float:
        return (self.rss_open_kib - self.rss_before_kib) / self.sessions


def run_idle_sessions(ep: Endpoint, count: int, settle_s: float = 1.0) -> IdleResult:
    """Open ``count`` sessions through a gateway, use each once, and read its RSS."""
    assert ep.pid is not None
    with connect(ep) as warm, warm.cursor() as cur:
        cur.execute("SELECT 1")
    time.sleep(settle_s)
    before = rss_kib(ep.pid)
    conns: list[pymysql.connections.Connection[Any]] = []
    retries = 0
    started = time.perf_counter()
    try:
        while len(conns) < count:
            try:
                conns.append(connect(ep, read_timeout=5, write_timeout=5))
            except pymysql.err.MySQLError as exc:
                retries += 1
                if retries > max(10, count // 20):
                    raise BenchError(
                        f"opening idle sessions through {ep.name} failed {retries} times "
                        f"(after {len(conns)} sessions): {exc}"
                    ) from exc
        for conn in conns:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()
        opened = time.perf_counter() - started
        time.sleep(settle_s)
        during = rss_kib(ep.pid)
    finally:
        for conn in conns:
            try:
                conn.close()
            except pymysql.err.Error:
                pass
    time.sleep(settle_s)
    after = rss_kib(ep.pid)
    return IdleResult(count, before, during, after, retries, opened)
