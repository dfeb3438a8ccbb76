"""The recording part: what recording (on by default) costs oltp_read_only throughput.

It starts, all on 127.0.0.1: a private MariaDB (``tests/lab/mariadb.py``) with the
gateway part's sysbench tables, and two ``sqlgate run`` with ``tls = "disabled"`` toward
the backend and the same ``[ledger]`` settings (the lab's: ``fsync = false``, the
default):

- ``gateway-plain``: ``[recording] enabled = false``;
- ``gateway-recording``: no ``[recording]`` section, so sessions are recorded with
  ``max_bytes``, ``max_rows`` and ``keep_days`` at their defaults (64 KiB, 1,000 rows,
  30 days; docs/recording.md).

sysbench ``oltp_read_only``, 8 threads, as in the gateway part's row, runs through each,
interleaved in ``rounds`` rounds with the order rotated; after a warm-up run through each.
The figure is the median over rounds of each round's with / without TPS ratio.

After measuring, both gateways stop and their ledgers are read: the recording gateway's
``recordings`` table must hold rows (one per distinct answer: a recording is stored under
its SHA-256, so the same answer twice is one row), and its ``result`` records must carry
a ``recording``; the plain gateway's must hold none.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import measure
from .errors import BenchError
from .private import PrivateRig
from .report import Figure, median
from .rig import GATEWAY_USER, SBTEST_DATABASE, Endpoint

RECORDING_MIN_RATIO = 0.90  # oltp_read_only 8 thr: with / without recording TPS
TEST = "oltp_read_only"
THREADS = 8  # the gateway part's "oltp_read_only 8 thr" row
NOT_RECORDING_TOML = "[recording]\nenabled = false\n"  # recording is on by default
ENDPOINTS = ("without", "with")  # gateway-plain, gateway-recording
GATEWAYS = {"without": "gateway-plain", "with": "gateway-recording"}

_TRANSACTIONS = re.compile(r"transactions:\s+(\d+)\s+\(([\d.]+) per sec\.\)")


@dataclass(frozen=True)
class TpsResult:
    tps: float
    qps: float
    relay_cpu_us_per_txn: float | None
    stalls: int


def run_tps(ep: Endpoint, seconds: int, *, attempts: int = 3) -> TpsResult:
    """One sysbench oltp_read_only run through ``ep``: transactions and queries per second,
    and the gateway's CPU per transaction; a run whose logins stall is repeated."""
    done = measure.sysbench(ep, TEST, THREADS, seconds, attempts=attempts)
    txn = _TRANSACTIONS.search(done.stdout)
    queries = measure._QUERIES.search(done.stdout)
    if txn is None or queries is None:
        raise BenchError(f"sysbench {TEST} through {ep.name}: no transactions/queries line")
    count, tps = int(txn.group(1)), float(txn.group(2))
    cpu_us = done.relay_cpu_us_per(ep, count)
    return TpsResult(tps, float(queries.group(2)), cpu_us, done.stalls)


# -------------------------------------------------------------------------------- rig


class RecordingRig(PrivateRig):
    """MariaDB and the two gateways; ``with RecordingRig(...) as rig`` starts and stops them."""

    def start(self) -> RecordingRig:
        db = self.start_db()
        db.admin_sql(f"CREATE DATABASE {SBTEST_DATABASE}")
        self.endpoints["direct"] = Endpoint("direct", db.port, db.native_user, db.native_password)
        for name, toml in (("without", NOT_RECORDING_TOML), ("with", "")):
            gw = self.start_gateway(GATEWAYS[name], toml)
            assert gw.proc is not None
            acct = gw.account(GATEWAY_USER)
            self.endpoints[name] = Endpoint(name, gw.port, acct.user, acct.password, gw.proc.pid)
        return self


# ---------------------------------------------------------------------------- ledger


@dataclass(frozen=True)
class LedgerCounts:
    recordings: int  # rows of the ``recordings`` table
    recording_bytes: int  # their bodies' bytes
    results: int  # ``result`` records
    recorded_results: int  # ``result`` records that carry a ``recording`` hash
    truncated: int  # of those, ``recording_truncated``


def ledger_counts(path: Path) -> LedgerCounts:
    """What a stopped gateway's ledger holds: recordings and result records."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BenchError(f"the ledger {path} cannot be read: {exc}") from exc
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        rows, size = 0, 0
        if "recordings" in tables:
            rows, size = conn.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM recordings"
            ).fetchone()
        results = recorded = truncated = 0
        for (body,) in conn.execute("SELECT body FROM records WHERE kind = 'result'"):
            results += 1
            record = _body(body)
            if record.get("recording"):
                recorded += 1
                truncated += bool(record.get("recording_truncated"))
    except sqlite3.Error as exc:
        raise BenchError(f"the ledger {path} cannot be read: {exc}") from exc
    finally:
        conn.close()
    return LedgerCounts(rows, size, results, recorded, truncated)


def _body(body: Any) -> dict[str, Any]:
    if isinstance(body, bytes):
        body = body.split(b"\0", 1)[0].decode(errors="replace")
    try:
        value = json.loads(body)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------------------------ part


def run(workdir: Path, plan: Any, notes: list[str], machine: dict[str, Any]) -> list[Figure]:
    """The recording part's figures (``plan``: cli.Plan; rounds, seconds, warmup_s)."""
    with RecordingRig(workdir) as rig:
        assert rig.db is not None
        machine["mariadb"] = machine.get("mariadb") or rig.db.version
        eps = rig.endpoints
        measure.progress("preparing sysbench tables and warming up")
        measure.sysbench_prepare(eps["direct"])
        for name in ENDPOINTS:
            run_tps(eps[name], plan.warmup_s)
        runs = measure.interleave(
            ENDPOINTS,
            plan.rounds,
            lambda n: run_tps(eps[n], plan.seconds),
            lambda r: f"{r.tps:>8,.1f} tps, {r.qps:>9,.0f} qps",
            f"{TEST} {THREADS} thr",
        )
        for name in ENDPOINTS:
            rig.stop_gateway(GATEWAYS[name])
        counts = {n: ledger_counts(rig.gateways[GATEWAYS[n]].ledger) for n in ENDPOINTS}

    got, plain = counts["with"], counts["without"]
    if got.recordings == 0 or got.recorded_results == 0:
        raise BenchError(
            f"the recording gateway's ledger holds {got.recordings} recordings and "
            f"{got.recorded_results} result records with a recording: nothing was recorded"
        )
    if plain.recordings or plain.recorded_results:
        raise BenchError(
            f"the gateway with recording off recorded answers ({plain.recordings} rows)"
        )
    stalls = sum(r.stalls for rs in runs.values() for r in rs)
    if stalls:
        notes.append(f"recording part: {stalls} sysbench run(s) repeated after a stalled login")
    notes.append(
        f"recording part: the recording gateway's ledger holds {got.recordings:,} recordings "
        f"({got.recording_bytes / 1e6:.1f} MB; one per distinct answer) for "
        f"{got.recorded_results:,} of its {got.results:,} result records "
        f"({got.truncated:,} truncated); the plain gateway's holds none for its "
        f"{plain.results:,}"
    )

    tps = {n: [r.tps for r in rs] for n, rs in runs.items()}
    cpu = {n: [r.relay_cpu_us_per_txn or 0.0 for r in rs] for n, rs in runs.items()}
    ratio = [w / o for w, o in zip(tps["with"], tps["without"], strict=True)]
    ratio_med = median(ratio)
    label = f"{TEST} {THREADS} thr"

    def row(key: str, text: str, unit: str, value: float | None, **kw: Any) -> Figure:
        return Figure(key=key, label=text, unit=unit, gateway=value, ratios=False, **kw)

    return [
        row(
            "recording_without_tps",
            f"{label}, gateway without recording",
            "TPS",
            median(tps["without"]),
            decimals=1,
            rounds={"gateway": tps["without"]},
        ),
        row(
            "recording_with_tps",
            f"{label}, gateway with recording",
            "TPS",
            median(tps["with"]),
            decimals=1,
            rounds={"gateway": tps["with"]},
        ),
        row(
            "recording_ratio",
            f"{label}, with / without recording",
            "",
            ratio_med,
            decimals=2,
            threshold=f">= {RECORDING_MIN_RATIO:.2f}",
            passed=ratio_med is not None and ratio_med >= RECORDING_MIN_RATIO,
            rounds={"gateway": ratio},
        ),
        row(
            "recording_relay_cpu_without",
            f"{label}, relay CPU, without recording",
            "µs/txn",
            median(cpu["without"]),
            rounds={"gateway": cpu["without"]},
        ),
        row(
            "recording_relay_cpu_with",
            f"{label}, relay CPU, with recording",
            "µs/txn",
            median(cpu["with"]),
            rounds={"gateway": cpu["with"]},
        ),
        row(
            "recording_rows",
            "recordings written (ledger table `recordings`)",
            "rows",
            float(got.recordings),
            threshold="> 0",
            passed=got.recordings > 0,
            rounds={"gateway": [float(got.recordings)]},
        ),
    ]
