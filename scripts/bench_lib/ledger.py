"""The ledger's own figures: group-commit append rate and ``sqlgate ledger verify`` rate.

They need no database server. Each append run and each ledger build is a fresh Python
process on uvloop, like the gateway (``python -m bench_lib.ledger append|build ...``,
which prints one JSON object), so nothing the benchmark itself loaded or allocated
weighs on it:

- ``append``: one ``LedgerWriter`` on a new file and ``tasks`` asyncio tasks, each
  appending ``records.statement(...)`` fields (sysbench-like point selects, the fields the
  gateway fills) and waiting for each before the next, as a session waits before it
  forwards. After a warm-up, records answered, commits and the process's CPU time (both
  threads) are counted over ``seconds``;
- ``build``: the same appenders until they appended ``records`` statement records; the
  writer adds its own checkpoints (every second, and one at close);
- verify: the real command line, ``python -m appliance.cli ledger verify --ledger DB
  --pubkey ledger.pub`` (what ``sqlgate`` runs), timed from start to exit.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BenchError
from .worker import run_json

WARMUP_S = 0.5
_VERIFIED = re.compile(r"^ok: (\d+) records")


@dataclass(frozen=True)
class AppendResult:
    records_per_s: float
    cpu_us_per_record: float  # the whole process: both threads, the appenders' own work too
    records_per_commit: float
    records: int  # answered during the measured seconds
    seconds: float


@dataclass(frozen=True)
class BuiltLedger:
    path: Path
    public_key: Path
    records: int  # checkpoints included
    checkpoints: int
    seconds: float


@dataclass(frozen=True)
class VerifyRun:
    records_per_s: float
    records: int
    seconds: float


# ------------------------------------------------------------------ the parent's side


def _worker(args: list[str]) -> dict[str, Any]:
    """Run ``python -m bench_lib.ledger ARGS`` and return the JSON object it prints."""
    return run_json("bench_lib.ledger", args, f"ledger {args[0]}")


def run_append(workdir: Path, *, fsync: bool, tasks: int, seconds: float) -> AppendResult:
    """One append run on a new ledger file in ``workdir`` (removed afterwards)."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / f"append-{'fsync' if fsync else 'nofsync'}-{time.monotonic_ns()}.db"
    try:
        data = _worker(
            ["append", str(db), f"--tasks={tasks}", f"--seconds={seconds}"]
            + (["--fsync"] if fsync else [])
        )
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    return AppendResult(
        records_per_s=data["records"] / data["seconds"],
        cpu_us_per_record=data["cpu_s"] / max(data["records"], 1) * 1e6,
        records_per_commit=data["records"] / max(data["commits"], 1),
        records=data["records"],
        seconds=data["seconds"],
    )


def build_ledger(workdir: Path, records: int, tasks: int) -> BuiltLedger:
    """A ledger of ``records`` statement records plus the writer's checkpoints, and its key."""
    from appliance.ledger.chain import generate_key, private_key_pem, public_key_pem

    workdir.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    key_file, pub_file = workdir / "ledger.key", workdir / "ledger.pub"
    key_file.write_bytes(private_key_pem(key))
    key_file.chmod(0o600)
    pub_file.write_bytes(public_key_pem(key.public_key()))
    db = workdir / "verify.db"
    data = _worker(
        ["build", str(db), f"--key={key_file}", f"--records={records}", f"--tasks={tasks}"]
    )
    return BuiltLedger(db, pub_file, data["records"], data["checkpoints"], data["seconds"])


def run_verify(ledger: BuiltLedger) -> VerifyRun:
    """``sqlgate ledger verify`` on the built ledger, timed from start to exit."""
    cmd = [
        sys.executable,
        "-m",
        "appliance.cli",
        "ledger",
        "verify",
        "--ledger",
        str(ledger.path),
        "--pubkey",
        str(ledger.public_key),
    ]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - started
    match = _VERIFIED.match(done.stdout)
    if done.returncode != 0 or match is None:
        why = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
        raise BenchError(f"sqlgate ledger verify failed: {why[-1]}")
    records = int(match.group(1))
    if records != ledger.records:
        raise BenchError(f"sqlgate ledger verify read {records} records, {ledger.records} written")
    return VerifyRun(records / seconds, records, seconds)


# ------------------------------------------------------------------ the worker's side


def _statement(session: str, number: int, client: str, seq: int) -> dict[str, Any]:
    """The fields the gateway records for one sysbench point select."""
    from appliance.ledger import records

    sql = f"SELECT c FROM sbtest{number % 4 + 1} WHERE id={(seq * 7919 + number) % 10000 + 1}"
    return records.statement(
        session=session,
        statement_seq=seq,
        identity="agent",
        groups=["agents"],
        client=client,
        target="orders",
        db="sbtest",
        command="COM_QUERY",
        sql=sql,
        sql_sha256=hashlib.sha256(b"\x03" + sql.encode()).hexdigest(),
        decision="allowed",
        rule=None,
        reason=None,
    )


async def _append(db: Path, fsync: bool, tasks: int, seconds: float) -> dict[str, Any]:
    from appliance.ledger import LedgerWriter
    from appliance.ledger.chain import generate_key

    writer = LedgerWriter(db, generate_key(), fsync=fsync)
    await writer.open()
    answered = 0
    stop = False

    async def session(number: int) -> None:
        nonlocal answered
        sid, client, seq = f"bench-{os.getpid():x}-{number}", f"127.0.0.1:{40000 + number}", 0
        while not stop:
            seq += 1
            await writer.append(_statement(sid, number, client, seq))
            answered += 1

    workers = [asyncio.create_task(session(n)) for n in range(tasks)]
    try:
        await asyncio.sleep(WARMUP_S)
        n0, c0 = answered, writer.stats.commits
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        n1, c1 = answered, writer.stats.commits
        cpu1, t1 = time.process_time(), time.perf_counter()
    finally:
        stop = True
        await asyncio.gather(*workers)
        await writer.close()
    return {
        "records": n1 - n0,
        "commits": c1 - c0,
        "cpu_s": cpu1 - cpu0,
        "seconds": t1 - t0,
        "fsync": fsync,
        "tasks": tasks,
    }


async def _build(db: Path, key_file: Path, count: int, tasks: int) -> dict[str, Any]:
    from appliance.ledger import LedgerWriter, load_private_key

    writer = LedgerWriter(db, load_private_key(key_file))
    await writer.open()
    started = time.perf_counter()
    statements = 0

    async def session(number: int) -> None:
        nonlocal statements
        sid, client, seq = f"bench-{os.getpid():x}-{number}", f"127.0.0.1:{40000 + number}", 0
        while statements < count:
            statements += 1
            seq += 1
            await writer.append(_statement(sid, number, client, seq))

    try:
        await asyncio.gather(*(session(n) for n in range(tasks)))
    finally:
        await writer.close()
    return {
        "records": writer.stats.records,
        "checkpoints": writer.stats.checkpoints,
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench_lib.ledger")
    commands = parser.add_subparsers(dest="command", required=True)
    append = commands.add_parser("append")
    append.add_argument("db", type=Path)
    append.add_argument("--fsync", action="store_true")
    append.add_argument("--tasks", type=int, default=64)
    append.add_argument("--seconds", type=float, default=3.0)
    build = commands.add_parser("build")
    build.add_argument("db", type=Path)
    build.add_argument("--key", type=Path, required=True)
    build.add_argument("--records", type=int, required=True)
    build.add_argument("--tasks", type=int, default=64)
    args = parser.parse_args(argv)

    import uvloop

    if args.command == "append":
        result = uvloop.run(_append(args.db, args.fsync, args.tasks, args.seconds))
    else:
        result = uvloop.run(_build(args.db, args.key, args.records, args.tasks))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
