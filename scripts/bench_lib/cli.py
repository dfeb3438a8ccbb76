"""``scripts/bench``: the gateway against direct access and a socat relay, in one run,
the audit ledger's own figures (append and verify rates), the statement policy's (the
cost of one decision, cached or not), what result-set masking costs a large result, and
what a just-in-time approval adds to a held statement's round trip.

Usage: ``scripts/bench [--quick] [--only gateway|ledger|policy|masking|approvals|recording]
[--json FILE] [--check] [--profile FILE] [--keep]``.
Progress goes to stderr, the table to stdout; docs/performance.md explains every figure.
Exit status: 0 when the run completed (with ``--check``: and every threshold was met),
1 when a threshold was missed under ``--check`` or the run failed, 2 when a tool is missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BenchError
from .report import (
    APPROVAL_MAX_ADDED_P50_MS,
    IDLE_MAX_RSS_MB,
    LEDGER_APPEND_MIN_PER_S,
    LEDGER_VERIFY_MIN_PER_S,
    MASK_MIN_RATIO,
    MASK_NO_RULE_MIN_RATIO,
    POINT_SELECT_LEDGER_MIN_RATIO,
    POINT_SELECT_MIN_RATIO,
    POLICY_CACHED_MAX_US,
    POLICY_UNCACHED_MAX_US,
    SELECT1_MAX_ADDED_P50_US,
    STREAM_MAX_RSS_GROWTH_MB,
    STREAM_MIN_RATIO,
    Figure,
    format_table,
    median,
)

if TYPE_CHECKING:
    from .measure import StreamResult, SysbenchResult
    from .rig import Endpoint, Rig

REPO = Path(__file__).resolve().parents[2]

# Program -> the Debian package that provides it.
PROGRAMS = {
    "sysbench": "sysbench",
    "socat": "socat",
    "mariadb": "mariadb-client",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "mosquitto": "mosquitto",
    "mosquitto_passwd": "mosquitto",
}
PART_PROGRAMS = {
    "gateway": ("sysbench", "socat", "mariadb", "mariadbd", "mariadb-install-db"),
    "masking": ("mariadb", "mariadbd", "mariadb-install-db"),
    "approvals": ("mariadbd", "mariadb-install-db", "mosquitto", "mosquitto_passwd"),
    "recording": ("sysbench", "mariadb", "mariadbd", "mariadb-install-db"),
}
MODULES = ("pymysql", "uvloop", "cryptography")
LEDGER_MODULES = ("uvloop", "cryptography")
POLICY_MODULES = ("sqlglot", "cryptography")
MASKING_MODULES = ("pymysql", "uvloop", "cryptography", "sqlglot")
APPROVALS_MODULES = ("pymysql", "uvloop", "cryptography", "aiomqtt", "jwt")
PARTS = ("gateway", "ledger", "policy", "masking", "approvals", "recording")
PROFILED = ("gateway", "masking")  # the parts --profile records
_SBIN = os.pathsep.join(("/usr/sbin", "/usr/local/sbin", "/sbin"))

RELAYS = ("direct", "socat", "gateway")
TLS = "gateway-tls"


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to do."""

    rounds: int  # interleaved rounds of each sysbench workload and of the large result
    seconds: int  # each sysbench run
    warmup_s: int  # one oltp_point_select run per endpoint before measuring
    stream_rows: int  # rows of 1,000 bytes in the large result
    trips: int  # timed SELECT 1 round trips per endpoint and round
    warmup_trips: int
    latency_rounds: int
    idle_sessions: int
    tls: bool  # also measure a gateway that speaks TLS to the backend
    ledger_tasks: int = 64  # concurrent appenders, each waiting for its record
    ledger_seconds: float = 3.0  # each append run, after a warm-up of 0.5 s
    verify_records: int = 200_000  # statement records in the ledger that is verified
    # calls per timed loop of SessionPolicy.decide: cached, by shape, uncached
    policy_calls: tuple[int, int, int] = (20_000, 10_000, 1_000)
    policy_repeats: int = 7  # timed loops per path in each of ``rounds`` processes
    approval_trips: int = 50  # timed statements per endpoint and round
    approval_warmup: int = 3  # statements per endpoint before the first round


FULL = Plan(3, 6, 2, 1_000_000, 5_000, 500, 7, 1_000, True)
QUICK = Plan(
    1,
    2,
    1,
    100_000,
    1_000,
    200,
    1,
    1_000,
    True,
    ledger_seconds=1.5,
    verify_records=100_000,
    policy_calls=(5_000, 2_000, 300),
    policy_repeats=3,
    approval_trips=10,
)

# key, sysbench test, threads; the first one carries the throughput threshold
WORKLOADS = (
    ("point_select_8", "oltp_point_select", 8),
    ("point_select_1", "oltp_point_select", 1),
    ("read_only_1", "oltp_read_only", 1),
    ("read_only_8", "oltp_read_only", 8),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Measure sqlgate against direct access and a socat relay, interleaved "
        "in one run, on a private MariaDB server; its audit ledger's append and verify "
        "rates; the cost of its statement policy's decisions; what result-set masking "
        "costs a large result; and what a just-in-time approval adds to a held statement. "
        "See docs/performance.md.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of about a minute (1 round, short)"
    )
    parser.add_argument(
        "--only",
        choices=PARTS,
        help="run one part: 'gateway' (against MariaDB, direct and socat), 'ledger' "
        "(append and verify rates), 'policy' (the cost of one statement decision; these "
        "two need no database server), 'masking' (a large result with a masked column, "
        "masked and unmasked) or 'approvals' (a held statement's round trip, with a "
        "private Mosquitto and an operator that approves at once) or 'recording' "
        "(oltp_read_only through a gateway that records sessions and one that does not)",
    )
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the figures here")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when an acceptance threshold is missed"
    )
    parser.add_argument("--rounds", type=int, metavar="N", help="override the number of rounds")
    parser.add_argument("--time", type=int, metavar="S", help="override each sysbench run's time")
    parser.add_argument(
        "--no-tls", action="store_true", help="skip the gateway with TLS toward the backend"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        type=Path,
        help="after measuring, record the gateway with py-spy during one more 8-thread "
        "oltp_point_select run (FILE.svg: flame graph; FILE.txt: collapsed stacks); the "
        "masking part records the masking gateway during one more masked stream (to FILE "
        "with --only masking, else to FILE with '-masking' added to its name)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser


def missing_tools(profile: bool, parts: tuple[str, ...] = PARTS) -> str | None:
    """One line naming what is missing and how to get it, or None."""
    programs = {p: None for part in parts for p in PART_PROGRAMS.get(part, ())}
    absent = [p for p in programs if not shutil.which(p) and not shutil.which(p, path=_SBIN)]
    hints = []
    if absent:
        packages = " ".join(sorted({PROGRAMS[p] for p in absent}))
        hints.append(f"apt-get install {packages} (scripts/test installs them)")
    if profile and not shutil.which("py-spy"):
        absent.append("py-spy")
        hints.append("pip install py-spy")
    wanted = {
        "gateway": MODULES,
        "ledger": LEDGER_MODULES,
        "policy": POLICY_MODULES,
        "masking": MASKING_MODULES,
        "approvals": APPROVALS_MODULES,
        "recording": MODULES,
    }
    modules = sorted(
        {m for part in parts for m in wanted[part] if importlib.util.find_spec(m) is None}
    )
    if modules:
        absent.extend(f"Python module {m}" for m in modules)
        hints.append("pip install -e '.[test]'")
    if not absent:
        return None
    return f"missing {', '.join(absent)}: {'; '.join(hints)}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    parts = (args.only,) if args.only else PARTS
    if args.profile is not None and not set(PROFILED) & set(parts):
        parser.error("--profile records a gateway: it needs the gateway or the masking part")
    problem = missing_tools(args.profile is not None, parts)
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2

    plan = QUICK if args.quick else FULL
    plan = Plan(
        **dict(
            asdict(plan),
            rounds=args.rounds or plan.rounds,
            seconds=args.time or plan.seconds,
            tls=plan.tls and not args.no_tls,
        )
    )
    try:
        return _run(args, plan, parts)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, plan: Plan, parts: tuple[str, ...]) -> int:
    # The gateway runs as ``python -m appliance.cli`` and must import this checkout.
    os.chdir(REPO)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    # The client side holds one socket per idle session and the gateway two; the gateway
    # inherits this soft limit.
    if "gateway" in parts:
        from .rig import raise_nofile

        raise_nofile(2 * plan.idle_sessions + 512)
    workdir = Path(tempfile.mkdtemp(prefix="sqlgate-bench-"))
    started = time.monotonic()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    notes: list[str] = []
    figures: list[Figure] = []
    kind = "quick" if args.quick else "full"
    try:
        machine = machine_info(None)
        if "ledger" in parts:
            # First, on a machine without the database server and the relays running.
            _say(
                f"sqlgate bench {date}: {machine['cpu']} x{machine['nproc']}; {kind} run, "
                f"ledger part: {plan.rounds} rounds; work dir {workdir}"
            )
            figures.extend(_ledger(workdir / "ledger", plan))
        if "policy" in parts:
            # Like the ledger part: before the database server and the relays start.
            _say(
                f"sqlgate bench {date}: {machine['cpu']} x{machine['nproc']}; {kind} run, "
                f"policy part: {plan.rounds} rounds"
            )
            figures.extend(_policy(plan, notes))
        if "gateway" in parts:
            from .rig import Rig

            with Rig(workdir, with_tls=plan.tls) as rig:
                assert rig.db is not None
                machine = {
                    **machine_info(rig.db.version),
                    "loadavg_start": machine["loadavg_start"],
                }
                _say(
                    f"sqlgate bench {date}: {machine['cpu']} x{machine['nproc']}, "
                    f"MariaDB {machine['mariadb']}; {kind} run, "
                    f"{plan.rounds} rounds, sysbench {plan.seconds}s; work dir {workdir}"
                )
                # the gateway rows go first, as before the ledger part existed
                figures[:0] = _measure(rig, plan, notes)
                if args.profile is not None:
                    _profile(rig, plan, args.profile)
        if "masking" in parts:
            # After the gateway part's servers have stopped: a MariaDB and gateways of its own.
            _say(
                f"sqlgate bench {date}: {machine['cpu']} x{machine['nproc']}; {kind} run, "
                f"masking part: {plan.rounds} rounds; work dir {workdir}"
            )
            out = args.profile
            if out is not None and "gateway" in parts:
                out = out.with_name(f"{out.stem}-masking{out.suffix}")
            figures.extend(_masking(workdir / "masking", plan, notes, machine, out))
        if "approvals" in parts:
            # Last, once the gateway part's servers have stopped.
            _say(
                f"sqlgate bench {date}: {machine['cpu']} x{machine['nproc']}; {kind} run, "
                f"approvals part: {plan.rounds} rounds of {plan.approval_trips} statements "
                f"per endpoint; work dir {workdir}"
            )
            figures.extend(_approvals(workdir / "approvals", plan, notes, machine))
        if "recording" in parts:
            from . import recording

            _say(f"sqlgate bench {date}: {kind} run, recording part: {plan.rounds} rounds")
            figures.extend(recording.run(workdir / "recording", plan, notes, machine))
        machine["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    finally:
        if args.keep:
            _say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    duration = time.monotonic() - started
    commit = machine["sqlgate_commit"] + (" + changes" if machine["appliance_modified"] else "")
    server = f", MariaDB {machine['mariadb']}" if machine["mariadb"] else ""
    print(
        f"\nsqlgate bench, {date}, {duration:.0f} s; {machine['cpu']}, "
        f"{machine['nproc']} CPUs{server}; sqlgate {commit}; parts: {', '.join(parts)}\n"
    )
    if "gateway" in parts:
        print(
            "gateway: `sqlgate run` with its audit ledger on (fsync = false) and its statement "
            "policy (built-in rules): every statement is decided, then waits for its "
            "record's group commit before it is forwarded; its answer is recorded (the "
            "default [recording]).\n"
        )
    if "masking" in parts:
        print(
            "masking: two `sqlgate run` as above, one with a [[masking]] rule (a card column, "
            "last4, one group exempt), one without; the same MariaDB, mariadb CLI into "
            "/dev/null.\n"
        )
    if "approvals" in parts:
        print(
            "approvals: `sqlgate run` with [approvals] on and a private Mosquitto; an operator "
            "in the bench process approves each request as soon as it arrives, so the "
            "person's own time is about zero.\n"
        )
    if "recording" in parts:
        print(
            "recording: two `sqlgate run` as above, one recording sessions (the default), "
            "one with [recording] enabled = false; the same MariaDB, sysbench oltp_read_only "
            "8 threads.\n"
        )
    print(format_table(figures))
    for note in notes:
        print(f"note: {note}")
    if args.json is not None:
        data = {
            "date": date,
            "duration_s": round(duration, 1),
            "quick": args.quick,
            "parts": list(parts),
            "plan": asdict(plan),
            "machine": machine,
            "figures": [f.as_json() for f in figures],
            "notes": notes,
        }
        args.json.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    missed = [f.label for f in figures if f.passed is False]
    if missed:
        print(f"thresholds missed: {'; '.join(missed)}")
    return 1 if args.check and missed else 0


def _mb(kib: int | None) -> float:
    """KiB (as /proc reports them) in MB of 10^6 bytes, the unit of every RSS figure."""
    return (kib or 0) * 1024 / 1e6


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- measurements


def _measure(rig: Rig, plan: Plan, notes: list[str]) -> list[Figure]:
    from . import measure

    eps = rig.endpoints
    with_tls = [*RELAYS, TLS] if plan.tls else list(RELAYS)
    figures: list[Figure] = []

    _say("preparing sysbench tables and warming up")
    measure.sysbench_prepare(eps["direct"])
    for name in with_tls:
        measure.run_sysbench(eps[name], "oltp_point_select", 8, plan.warmup_s)

    stalls: dict[str, int] = {}
    for key, test, threads in WORKLOADS:
        names = with_tls if key == "point_select_8" else list(RELAYS)
        runs = measure.interleave(
            names,
            plan.rounds,
            functools.partial(_sysbench_on, eps, test, threads, plan.seconds),
            lambda r: f"{r.qps:>9,.0f} qps",
            f"{test} {threads} thr",
        )
        for name, results in runs.items():
            stalls[name] = stalls.get(name, 0) + sum(r.stalls for r in results)
        qps = {n: [r.qps for r in rs] for n, rs in runs.items()}
        fig = Figure(
            key=key,
            label=f"{test} {threads} thr",
            unit="QPS",
            direct=median(qps["direct"]),
            socat=median(qps["socat"]),
            gateway=median(qps["gateway"]),
            rounds=qps,
        )
        figures.append(fig)
        if key != "point_select_8":
            continue
        ratio = fig.vs_direct
        fig.threshold = f"gw/direct >= {POINT_SELECT_MIN_RATIO:.2f}"
        fig.passed = ratio is not None and ratio >= POINT_SELECT_MIN_RATIO
        # The gateway always writes its ledger, so the same run is the "ledger on" figure;
        # its own threshold allows for the statement record committed before each query.
        figures.append(
            Figure(
                key="point_select_8_ledger",
                label=f"{test} {threads} thr, gateway ledger on",
                unit="QPS",
                direct=fig.direct,
                socat=fig.socat,
                gateway=fig.gateway,
                threshold=f"gw/direct >= {POINT_SELECT_LEDGER_MIN_RATIO:.2f}",
                passed=ratio is not None and ratio >= POINT_SELECT_LEDGER_MIN_RATIO,
                rounds=qps,
            )
        )
        cpu = {
            n: [r.relay_cpu_us_per_query or 0.0 for r in rs]
            for n, rs in runs.items()
            if n != "direct"
        }
        figures.append(
            Figure(
                key="point_select_8_relay_cpu",
                label=f"{test} {threads} thr, relay CPU",
                unit="µs/query",
                socat=median(cpu["socat"]),
                gateway=median(cpu["gateway"]),
                decimals=1,
                rounds=cpu,
            )
        )
        if plan.tls:
            figures.append(
                Figure(
                    key="point_select_8_backend_tls",
                    label=f"{test} {threads} thr, gateway with backend TLS",
                    unit="QPS",
                    direct=fig.direct,
                    socat=fig.socat,
                    gateway=median(qps[TLS]),
                    rounds={TLS: qps[TLS]},
                )
            )
    for name, count in stalls.items():
        if count:
            notes.append(
                f"{count} sysbench run(s) through {name} were repeated: some of their "
                "connections never completed the login (docs/performance.md, known issues)"
            )

    figures.extend(_stream(rig, plan))
    figures.extend(_latency(rig, plan, with_tls))
    notes.append(_gateway_ledger_note(rig))
    figures.extend(_idle(rig, plan, notes))
    return figures


def _gateway_ledger_note(rig: Rig) -> str:
    """How many records the measured gateway committed: the proof that its ledger was on."""
    import sqlite3

    path = rig.ledger_path("gateway")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            (count,) = conn.execute("SELECT count(*) FROM records").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"the gateway's ledger {path} cannot be read: {exc}"
    return (
        f"the gateway's ledger holds {count:,} records after the measurements above "
        "(a statement and a result record per query)"
    )


def _ledger(workdir: Path, plan: Plan) -> list[Figure]:
    """The ledger part: append rates with fsync off and on, then ``ledger verify``."""
    from . import ledger, measure

    settings = {"fsync=false": False, "fsync=true": True}
    runs = measure.interleave(
        list(settings),
        plan.rounds,
        lambda name: ledger.run_append(
            workdir, fsync=settings[name], tasks=plan.ledger_tasks, seconds=plan.ledger_seconds
        ),
        lambda r: (
            f"{r.records_per_s:>9,.0f} records/s, {r.cpu_us_per_record:5.1f} µs CPU/record, "
            f"{r.records_per_commit:5.1f} records/commit"
        ),
        f"ledger append x{plan.ledger_tasks}",
    )
    figures: list[Figure] = []
    for name, fsync in settings.items():
        results = runs[name]
        rate = [r.records_per_s for r in results]
        cpu = [r.cpu_us_per_record for r in results]
        per_commit = [r.records_per_commit for r in results]
        setting = f"fsync = {'true' if fsync else 'false'}"
        fig = Figure(
            key=f"ledger_append_{'fsync' if fsync else 'nofsync'}",
            label=f"ledger append, {plan.ledger_tasks} tasks, {setting}",
            unit="records/s",
            gateway=median(rate),
            ratios=False,
            rounds={"gateway": rate, "records_per_commit": per_commit},
        )
        if not fsync:
            fig.threshold = f">= {LEDGER_APPEND_MIN_PER_S:,.0f}/s"
            fig.passed = fig.gateway is not None and fig.gateway >= LEDGER_APPEND_MIN_PER_S
        figures.append(fig)
        figures.append(
            Figure(
                key=f"ledger_append_{'fsync' if fsync else 'nofsync'}_cpu",
                label=f"ledger append, {setting}, CPU",
                unit="µs/record",
                gateway=median(cpu),
                decimals=1,
                ratios=False,
                rounds={"gateway": cpu},
            )
        )

    measure.progress(f"building a ledger of {plan.verify_records:,} statement records")
    built = ledger.build_ledger(workdir / "verify", plan.verify_records, plan.ledger_tasks)
    measure.progress(
        f"built: {built.records:,} records ({built.checkpoints} checkpoints) in "
        f"{built.seconds:.1f} s, {built.path.stat().st_size / 1e6:.0f} MB"
    )
    verified = measure.interleave(
        ["verify"],
        plan.rounds,
        lambda _: ledger.run_verify(built),
        lambda r: f"{r.records_per_s:>9,.0f} records/s ({r.seconds:.2f} s)",
        "sqlgate ledger verify",
    )["verify"]
    rate = [r.records_per_s for r in verified]
    verify = Figure(
        key="ledger_verify",
        label=f"ledger verify, {built.records:,} records",
        unit="records/s",
        gateway=median(rate),
        ratios=False,
        threshold=f">= {LEDGER_VERIFY_MIN_PER_S:,.0f}/s",
        rounds={"gateway": rate, "seconds": [r.seconds for r in verified]},
    )
    verify.passed = verify.gateway is not None and verify.gateway >= LEDGER_VERIFY_MIN_PER_S
    figures.append(verify)
    return figures


def _policy(plan: Plan, notes: list[str]) -> list[Figure]:
    """The policy part: ``SessionPolicy.decide`` per call, cached, by shape and uncached,
    in ``plan.rounds`` fresh processes; each figure is the median of their medians."""
    from . import policy

    cached, by_shape, uncached = plan.policy_calls
    runs: list[policy.PolicyRun] = []
    for r in range(plan.rounds):
        run = policy.run(
            cached=cached, by_shape=by_shape, uncached=uncached, repeats=plan.policy_repeats
        )
        runs.append(run)
        _say(
            f"  {'policy decide':<28} round {r + 1}/{plan.rounds} "
            f"cached {median(run.cached_us):.2f} µs, by shape {median(run.by_shape_us):.2f} "
            f"µs, uncached {median(run.uncached_us):.1f} µs"
        )
    first = runs[0]
    build = "compiled sqlglot" if first.compiled else "pure-Python sqlglot"
    notes.append(
        f"policy part: {first.sqlglot}; {plan.policy_repeats} timed loops per path in each "
        f"of {plan.rounds} process(es), of {cached:,} / {by_shape:,} / {uncached:,} calls"
    )
    if not first.compiled:
        notes.append(
            "the uncached decision's threshold assumes the compiled build: pip install "
            "sqlglotc (pyproject.toml pins the version)"
        )

    def figure(
        key: str, label: str, values: list[list[float]], limit: float | None, decimals: int
    ) -> Figure:
        per_run = [median(v) or 0.0 for v in values]
        fig = Figure(
            key=key,
            label=label,
            unit="µs",
            gateway=median(per_run),
            decimals=decimals,
            ratios=False,
            rounds={"gateway": per_run, "repeats": [x for v in values for x in v]},
        )
        if limit is not None:
            fig.threshold = f"<= {limit:g} µs"
            fig.passed = fig.gateway is not None and fig.gateway <= limit
        return fig

    return [
        figure(
            "policy_cached",
            "policy decision, cached (same text)",
            [r.cached_us for r in runs],
            POLICY_CACHED_MAX_US,
            2,
        ),
        figure(
            "policy_by_shape",
            "policy decision, by shape (point selects)",
            [r.by_shape_us for r in runs],
            None,
            2,
        ),
        figure(
            "policy_uncached",
            f"policy decision, uncached {first.join_bytes}-byte join, {build}",
            [r.uncached_us for r in runs],
            POLICY_UNCACHED_MAX_US,
            1,
        ),
    ]


def _total_stream(runs: list[StreamResult]) -> StreamResult:
    """Several streams as one: their bytes over their time, their relay CPU added up."""
    from .measure import StreamResult

    seconds = sum(r.seconds for r in runs)
    mb = sum(r.mb_per_s * r.seconds for r in runs)
    cpu = [r.relay_cpu_s for r in runs if r.relay_cpu_s is not None]
    return StreamResult(
        mb_per_s=mb / seconds if seconds else 0.0,
        seconds=seconds,
        relay_cpu_s=sum(cpu) if cpu else None,
        rss_before_kib=None,
        rss_max_kib=None,
    )


def _masking(
    workdir: Path, plan: Plan, notes: list[str], machine: dict[str, Any], profile: Path | None
) -> list[Figure]:
    """The masking part: a large join with one masked column, direct, through the gateway
    as an identity exempt from the rule and as one it masks; and a result no rule applies
    to, through a gateway with rules and one without."""
    from . import masking, measure

    seq = max(1, plan.stream_rows // masking.CARD_ROWS)
    join_rows = seq * masking.CARD_ROWS
    join_sql = masking.join_sql(seq)
    join_gb = join_rows * masking.JOIN_ROW_BYTES / 1e9
    plain_gb = plan.stream_rows * measure.STREAM_ROW_BYTES / 1e9

    def describe(gb: float) -> Callable[[measure.StreamResult], str]:
        def line(r: measure.StreamResult) -> str:
            cpu = "" if r.relay_cpu_s is None else f", relay CPU {r.relay_cpu_s / gb:5.2f} s/GB"
            return f"{r.mb_per_s:>9,.1f} MB/s{cpu}"

        return line

    with masking.MaskingRig(workdir) as rig:
        assert rig.db is not None
        machine["mariadb"] = machine.get("mariadb") or rig.db.version
        eps = rig.endpoints
        checked = masking.check_clients(rig)
        measure.progress(checked)
        joins = measure.interleave(
            masking.JOIN_ENDPOINTS,
            plan.rounds,
            lambda n: measure.run_stream(
                eps[n],
                join_rows,
                sample_rss=n == "masked",
                sql=join_sql,
                row_bytes=masking.JOIN_ROW_BYTES,
                database=masking.SCHEMA,
            ),
            describe(join_gb),
            "join, one column masked",
        )
        # in slices of 0.1 GB: whole 1 GB runs of the same endpoint differ by up to 10%
        # within minutes on a shared machine, more than the threshold's margin
        slices = max(1, plan.stream_rows // masking.NO_RULE_SLICE_ROWS)
        slice_rows = plan.stream_rows // slices
        plain = measure.interleave_slices(
            masking.NO_RULE_ENDPOINTS,
            plan.rounds,
            slices,
            lambda n: measure.run_stream(
                eps[n], slice_rows, sample_rss=False, database=masking.SCHEMA
            ),
            lambda n, rs: describe(plain_gb)(_total_stream(rs)),
            "result no rule applies to" + (f", {slices} slices" if slices > 1 else ""),
        )
        profiled = 0
        if profile is not None:
            _say(masking.profile(eps["masked"], seq, profile))
            profiled = 1
        rig.stop_gateway("gateway-masking")
        ledger = masking.masked_runs(rig.gateways["gateway-masking"].ledger, join_sql)

    # Every measured masked run must have masked every card; the exempt identity's none.
    agent, reader = ledger.get("agent", []), ledger.get("reader", [])
    if len(agent) != plan.rounds + profiled or any(v != join_rows for v in agent):
        raise BenchError(
            f"the masking gateway's ledger does not show {join_rows:,} masked values for "
            f"each masked run of the join: {agent}"
        )
    if len(reader) != plan.rounds or any(reader):
        raise BenchError(f"the exempt identity's runs of the join were masked: {reader}")
    notes.append(f"masking part: {checked}")
    notes.append(
        f"masking part: the masking gateway's ledger counts {join_rows:,} masked values "
        f"(every card) for each of the {len(agent)} masked runs of the join, none for the "
        f"exempt identity's {len(reader)}"
    )

    size = f"{join_gb:.1g} GB join"
    rate = {n: [r.mb_per_s for r in rs] for n, rs in joins.items()}
    ratio = [m / u for m, u in zip(rate["masked"], rate["unmasked"], strict=True)]
    cpu = {n: [(r.relay_cpu_s or 0.0) / join_gb for r in joins[n]] for n in ("unmasked", "masked")}
    before = [_mb(r.rss_before_kib) for r in joins["masked"] if r.rss_before_kib is not None]
    peak = [_mb(r.rss_max_kib) for r in joins["masked"] if r.rss_max_kib is not None]
    growth = max((p - b for p, b in zip(peak, before, strict=True)), default=0.0)
    plain_size = f"{plain_gb:g} GB result no rule applies to"
    if slices > 1:
        plain_size += f" ({slices} x {slice_rows * measure.STREAM_ROW_BYTES / 1e9:g} GB)"
    # a round's figures are over all of its slices: their bytes over their time
    totals = {n: [_total_stream(rs) for rs in rounds] for n, rounds in plain.items()}
    plain_rate = {n: [r.mb_per_s for r in rs] for n, rs in totals.items()}
    plain_ratio = [w / o for w, o in zip(plain_rate["with"], plain_rate["without"], strict=True)]
    plain_cpu = {n: [(r.relay_cpu_s or 0.0) / plain_gb for r in rs] for n, rs in totals.items()}
    ratio_med = median(ratio)
    plain_med = median(plain_ratio)

    def rows(key: str, label: str, unit: str, **kw: Any) -> Figure:
        return Figure(key=key, label=label, unit=unit, **kw)

    return [
        rows(
            "mask_join_unmasked",
            f"{size}, exempt identity (unmasked)",
            "MB/s",
            direct=median(rate["direct"]),
            gateway=median(rate["unmasked"]),
            decimals=1,
            rounds={"direct": rate["direct"], "gateway": rate["unmasked"]},
        ),
        rows(
            "mask_join_masked",
            f"{size}, card masked (last4)",
            "MB/s",
            direct=median(rate["direct"]),
            gateway=median(rate["masked"]),
            decimals=1,
            rounds={"direct": rate["direct"], "gateway": rate["masked"]},
        ),
        rows(
            "mask_join_ratio",
            f"{size}, masked / unmasked",
            "",
            gateway=ratio_med,
            decimals=2,
            ratios=False,
            threshold=f">= {MASK_MIN_RATIO:.2f}",
            passed=ratio_med is not None and ratio_med >= MASK_MIN_RATIO,
            rounds={"gateway": ratio},
        ),
        rows(
            "mask_join_relay_cpu_unmasked",
            f"{size}, relay CPU, exempt identity",
            "s/GB",
            gateway=median(cpu["unmasked"]),
            decimals=2,
            ratios=False,
            rounds={"gateway": cpu["unmasked"]},
        ),
        rows(
            "mask_join_relay_cpu_masked",
            f"{size}, relay CPU, masked",
            "s/GB",
            gateway=median(cpu["masked"]),
            decimals=2,
            ratios=False,
            rounds={"gateway": cpu["masked"]},
        ),
        rows(
            "mask_join_rss_max",
            f"{size}, gateway RSS max while masking",
            "MB",
            gateway=max(peak, default=None),
            decimals=1,
            ratios=False,
            threshold=f"growth <= {STREAM_MAX_RSS_GROWTH_MB:g} MB (was {growth:.1f})",
            passed=growth <= STREAM_MAX_RSS_GROWTH_MB,
            rounds={"gateway": peak, "before": before},
        ),
        rows(
            "mask_norule_without",
            f"{plain_size}, gateway without rules",
            "MB/s",
            gateway=median(plain_rate["without"]),
            decimals=1,
            ratios=False,
            rounds={
                "gateway": plain_rate["without"],
                "slices": [[r.mb_per_s for r in rs] for rs in plain["without"]],
            },
        ),
        rows(
            "mask_norule_with",
            f"{plain_size}, gateway with rules",
            "MB/s",
            gateway=median(plain_rate["with"]),
            decimals=1,
            ratios=False,
            rounds={
                "gateway": plain_rate["with"],
                "slices": [[r.mb_per_s for r in rs] for rs in plain["with"]],
            },
        ),
        rows(
            "mask_norule_ratio",
            f"{plain_size}, with / without rules",
            "",
            gateway=plain_med,
            decimals=2,
            ratios=False,
            threshold=f">= {MASK_NO_RULE_MIN_RATIO:.2f}",
            passed=plain_med is not None and plain_med >= MASK_NO_RULE_MIN_RATIO,
            rounds={"gateway": plain_ratio},
        ),
        rows(
            "mask_norule_relay_cpu_without",
            f"{plain_size}, relay CPU, without rules",
            "s/GB",
            gateway=median(plain_cpu["without"]),
            decimals=2,
            ratios=False,
            rounds={"gateway": plain_cpu["without"]},
        ),
        rows(
            "mask_norule_relay_cpu_with",
            f"{plain_size}, relay CPU, with rules",
            "s/GB",
            gateway=median(plain_cpu["with"]),
            decimals=2,
            ratios=False,
            rounds={"gateway": plain_cpu["with"]},
        ),
    ]


def _approvals(
    workdir: Path, plan: Plan, notes: list[str], machine: dict[str, Any]
) -> list[Figure]:
    """The approvals part: a held statement against the same statement sent directly and
    through the gateway without a hold, with an operator that approves at once."""
    from . import approvals, measure

    ends = approvals.ENDPOINTS
    with approvals.ApprovalsRig(workdir) as rig:
        assert rig.db is not None and rig.broker is not None and rig.provider is not None
        machine["mariadb"] = machine.get("mariadb") or rig.db.version
        mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path=_SBIN)
        machine["mosquitto"] = _first_line([mosquitto or "mosquitto", "-h"], "mosquitto version")
        machine["aiomqtt"] = _version("aiomqtt")
        held = plan.rounds * plan.approval_trips + plan.approval_warmup
        tokens = [
            rig.provider.token(email=approvals.APPROVER, groups=["dba"]) for _ in range(held + 5)
        ]
        operator = approvals.Operator(rig.broker, approvals.APPLIANCE, tokens).start()
        clients: dict[str, approvals.Client] = {}
        try:
            statements = approvals.Statements()
            for name in ends:
                clients[name] = approvals.connect(rig, name)
                approvals.run_trips(clients[name], statements, plan.approval_warmup)
            runs = measure.interleave(
                ends,
                plan.rounds,
                lambda n: approvals.run_trips(clients[n], statements, plan.approval_trips),
                lambda trips: (
                    f"p50 {_pct([t.ms for t in trips], 0.5):7.2f} ms, "
                    f"p95 {_pct([t.ms for t in trips], 0.95):7.2f} ms"
                ),
                f"ALTER TABLE x {plan.approval_trips}",
            )
        except BenchError as exc:
            if operator.errors:  # the likelier cause of a statement that was not approved
                raise BenchError(f"{exc}; approval operator: {operator.errors[0]}") from exc
            raise
        finally:
            for client in clients.values():
                client.conn.close()
            operator.stop()
        if operator.errors:
            raise BenchError(f"approval operator: {operator.errors[0]}")
        rig.stop_gateway()
        ledger = approvals.approval_records(rig)

    ms = {n: [[t.ms for t in trips] for trips in runs[n]] for n in ends}
    operator_ms: list[list[float]] = []
    ledger_ms: list[list[float]] = []
    to_operator_ms: list[list[float]] = []
    after_decision_ms: list[list[float]] = []
    for trips in runs["held"]:
        answers = []
        for trip in trips:
            answer = operator.answers.get(trip.sql)
            record = ledger.get(answer.request_id) if answer is not None else None
            if answer is None or record is None or record.get("decision") != "approved":
                raise BenchError(f"no approved request in the ledger for {trip.sql!r}")
            answers.append((trip, answer, float(record["latency_ms"])))
        operator_ms.append([(a.published - a.received) * 1000 for _, a, _ in answers])
        ledger_ms.append([latency for _, _, latency in answers])
        to_operator_ms.append([(a.received - t.sent) * 1000 for t, a, _ in answers])
        after_decision_ms.append([(t.done - a.published) * 1000 for t, a, _ in answers])

    def per_round(values: list[list[float]], q: float) -> list[float]:
        return [_pct(v, q) for v in values]

    p50 = {n: per_round(ms[n], 0.5) for n in ends}
    p95 = {n: per_round(ms[n], 0.95) for n in ends}
    added50 = [h - d for h, d in zip(p50["held"], p50["direct"], strict=True)]
    added95 = [h - d for h, d in zip(p95["held"], p95["direct"], strict=True)]
    own50 = [h - g for h, g in zip(p50["held"], p50["gateway"], strict=True)]
    count = plan.rounds * plan.approval_trips
    notes.append(
        f"approvals part: {count} held statements (after {plan.approval_warmup} to warm up), "
        f"all approved; the same number direct and through the gateway without a hold; "
        f"{machine['mosquitto']}"
    )
    stmt = "ALTER TABLE ... COMMENT"

    def row(key: str, label: str, **kw: Any) -> Figure:
        return Figure(key=key, label=label, unit="ms", decimals=2, ratios=False, **kw)

    added = median(added50)
    return [
        row(
            "approval_unheld_p50",
            f"{stmt} p50, gateway without a hold",
            direct=median(p50["direct"]),
            gateway=median(p50["gateway"]),
            rounds={"direct": p50["direct"], "gateway": p50["gateway"]},
        ),
        row(
            "approval_held_p50",
            f"{stmt} p50, held for approval",
            direct=median(p50["direct"]),
            gateway=median(p50["held"]),
            rounds={"direct": p50["direct"], "gateway": p50["held"]},
        ),
        row(
            "approval_held_p95",
            f"{stmt} p95, held for approval",
            direct=median(p95["direct"]),
            gateway=median(p95["held"]),
            rounds={"direct": p95["direct"], "gateway": p95["held"]},
        ),
        row(
            "approval_added_p50",
            "approval added p50 (held - direct)",
            gateway=added,
            threshold=f"<= {APPROVAL_MAX_ADDED_P50_MS:g} ms",
            passed=added is not None and added <= APPROVAL_MAX_ADDED_P50_MS,
            rounds={"gateway": added50, "vs_gateway_unheld": own50},
        ),
        row(
            "approval_added_p95",
            "approval added p95 (held - direct)",
            gateway=median(added95),
            rounds={"gateway": added95},
        ),
        row(
            "approval_to_operator_p50",
            "approval: execute -> request at the operator, p50",
            gateway=median(per_round(to_operator_ms, 0.5)),
            rounds={"gateway": per_round(to_operator_ms, 0.5)},
        ),
        row(
            "approval_operator_p50",
            "approval: request at the operator -> decision acked, p50",
            gateway=median(per_round(operator_ms, 0.5)),
            rounds={"gateway": per_round(operator_ms, 0.5), "p95": per_round(operator_ms, 0.95)},
        ),
        row(
            "approval_after_decision_p50",
            "approval: decision acked -> result, p50",
            gateway=median(per_round(after_decision_ms, 0.5)),
            rounds={"gateway": per_round(after_decision_ms, 0.5)},
        ),
        row(
            "approval_ledger_latency_p50",
            "approval: latency_ms in the ledger, p50",
            gateway=median(per_round(ledger_ms, 0.5)),
            rounds={"gateway": per_round(ledger_ms, 0.5), "p95": per_round(ledger_ms, 0.95)},
        ),
    ]


def _pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of unsorted values."""
    from .measure import percentile

    return percentile(sorted(values), q)


def _sysbench_on(
    eps: dict[str, Endpoint], test: str, threads: int, seconds: int, name: str
) -> SysbenchResult:
    from . import measure

    return measure.run_sysbench(eps[name], test, threads, seconds)


def _stream(rig: Rig, plan: Plan) -> list[Figure]:
    from . import measure

    eps = rig.endpoints
    runs = measure.interleave(
        RELAYS,
        plan.rounds,
        lambda n: measure.run_stream(eps[n], plan.stream_rows, sample_rss=n == "gateway"),
        lambda r: (
            f"{r.mb_per_s:>9,.1f} MB/s"
            + (
                f", RSS {_mb(r.rss_before_kib):.1f} -> {_mb(r.rss_max_kib):.1f} MB"
                if r.rss_before_kib is not None and r.rss_max_kib is not None
                else ""
            )
        ),
        "large result, mariadb CLI",
    )
    size = f"{plan.stream_rows * measure.STREAM_ROW_BYTES / 1e9:g} GB"
    rate = {n: [r.mb_per_s for r in rs] for n, rs in runs.items()}
    fig = Figure(
        key="stream",
        label=f"{size} result, mariadb CLI",
        unit="MB/s",
        direct=median(rate["direct"]),
        socat=median(rate["socat"]),
        gateway=median(rate["gateway"]),
        decimals=1,
        threshold=f"gw/direct >= {STREAM_MIN_RATIO:.2f}",
        rounds=rate,
    )
    fig.passed = fig.vs_direct is not None and fig.vs_direct >= STREAM_MIN_RATIO
    gb = plan.stream_rows * measure.STREAM_ROW_BYTES / 1e9
    cpu = {n: [(r.relay_cpu_s or 0.0) / gb for r in rs] for n, rs in runs.items() if n != "direct"}
    before = [_mb(r.rss_before_kib) for r in runs["gateway"] if r.rss_before_kib is not None]
    peak = [_mb(r.rss_max_kib) for r in runs["gateway"] if r.rss_max_kib is not None]
    growth = max((p - b for p, b in zip(peak, before, strict=True)), default=0.0)
    rss_before = Figure(
        key="stream_rss_before",
        label=f"{size} result, gateway RSS before",
        unit="MB",
        gateway=median(before),
        decimals=1,
        ratios=False,
        rounds={"gateway": before},
    )
    rss_peak = Figure(
        key="stream_rss_max",
        label=f"{size} result, gateway RSS max while streaming",
        unit="MB",
        gateway=max(peak, default=None),
        decimals=1,
        ratios=False,
        threshold=f"growth <= {STREAM_MAX_RSS_GROWTH_MB:g} MB (was {growth:.1f})",
        passed=growth <= STREAM_MAX_RSS_GROWTH_MB,
        rounds={"gateway": peak},
    )
    relay_cpu = Figure(
        key="stream_relay_cpu",
        label=f"{size} result, relay CPU",
        unit="s/GB",
        socat=median(cpu["socat"]),
        gateway=median(cpu["gateway"]),
        decimals=2,
        rounds=cpu,
    )
    return [fig, relay_cpu, rss_before, rss_peak]


def _latency(rig: Rig, plan: Plan, names: list[str]) -> list[Figure]:
    from . import measure

    eps = rig.endpoints
    runs = measure.interleave(
        names,
        plan.latency_rounds,
        lambda n: measure.run_select1(eps[n], plan.trips, plan.warmup_trips),
        lambda r: f"p50 {r.p50_us:>7.1f} µs, p99 {r.p99_us:>7.1f} µs",
        f"SELECT 1 x {plan.trips}",
    )
    p50 = {n: [r.p50_us for r in rs] for n, rs in runs.items()}
    p99 = {n: [r.p99_us for r in rs] for n, rs in runs.items()}
    # added latency per round (same round, so the same machine conditions), then the median
    added = {
        n: [a - d for a, d in zip(p50[n], p50["direct"], strict=True)]
        for n in names
        if n != "direct"
    }
    figures = [
        Figure(
            key="select1_p50",
            label="SELECT 1 p50",
            unit="µs",
            direct=median(p50["direct"]),
            socat=median(p50["socat"]),
            gateway=median(p50["gateway"]),
            decimals=1,
            rounds=p50,
        ),
        Figure(
            key="select1_p99",
            label="SELECT 1 p99",
            unit="µs",
            direct=median(p99["direct"]),
            socat=median(p99["socat"]),
            gateway=median(p99["gateway"]),
            decimals=1,
            rounds=p99,
        ),
    ]
    gw_added = median(added["gateway"])
    figures.append(
        Figure(
            key="select1_added_p50",
            label="SELECT 1 added p50 (vs direct)",
            unit="µs",
            socat=median(added["socat"]),
            gateway=gw_added,
            decimals=1,
            ratios=False,
            threshold=f"gateway <= {SELECT1_MAX_ADDED_P50_US:g} µs",
            passed=gw_added is not None and gw_added <= SELECT1_MAX_ADDED_P50_US,
            rounds=added,
        )
    )
    cpu = {n: [r.relay_cpu_us or 0.0 for r in rs] for n, rs in runs.items() if n != "direct"}
    figures.append(
        Figure(
            key="select1_relay_cpu",
            label="SELECT 1 relay CPU",
            unit="µs/query",
            socat=median(cpu["socat"]),
            gateway=median(cpu["gateway"]),
            decimals=1,
            rounds=cpu,
        )
    )
    if TLS in names:
        figures.append(
            Figure(
                key="select1_p50_backend_tls",
                label="SELECT 1 p50, gateway with backend TLS",
                unit="µs",
                direct=median(p50["direct"]),
                socat=median(p50["socat"]),
                gateway=median(p50[TLS]),
                decimals=1,
                rounds={TLS: p50[TLS]},
            )
        )
    return figures


def _idle(rig: Rig, plan: Plan, notes: list[str]) -> list[Figure]:
    from . import measure

    # A fresh gateway, so its RSS is not what earlier benchmarks left in its heap.
    ep = rig.add_gateway("gateway-idle", backend_tls="disabled")
    try:
        result = measure.run_idle_sessions(ep, plan.idle_sessions)
    finally:
        rig.stop_gateway("gateway-idle")
    measure.progress(
        f"{plan.idle_sessions:,} idle sessions: RSS {_mb(result.rss_before_kib):.1f} -> "
        f"{_mb(result.rss_open_kib):.1f} MB (closed: {_mb(result.rss_closed_kib):.1f}), "
        f"opened in {result.open_seconds:.1f} s"
    )
    if result.retries:
        notes.append(f"{result.retries} idle session(s) failed to open and were opened again")
    total_mb = _mb(result.rss_open_kib)
    n = f"{plan.idle_sessions:,}"
    return [
        Figure(
            key="idle_rss_before",
            label="gateway RSS before the idle sessions",
            unit="MB",
            gateway=_mb(result.rss_before_kib),
            decimals=1,
            ratios=False,
        ),
        Figure(
            key="idle_rss",
            label=f"{n} idle sessions, gateway RSS",
            unit="MB",
            gateway=total_mb,
            decimals=1,
            ratios=False,
            threshold=f"< {IDLE_MAX_RSS_MB:g} MB",
            passed=total_mb < IDLE_MAX_RSS_MB,
        ),
        Figure(
            key="idle_rss_per_session",
            label=f"{n} idle sessions, RSS per session",
            unit="kB",
            gateway=result.per_session_kib * 1024 / 1000,
            decimals=1,
            ratios=False,
        ),
    ]


def _profile(rig: Rig, plan: Plan, out: Path) -> None:
    """py-spy record of the gateway during one more 8-thread oltp_point_select run."""
    from . import measure

    ep = rig.endpoints["gateway"]
    assert ep.pid is not None
    fmt = "raw" if out.suffix in (".txt", ".folded") else "flamegraph"
    seconds = max(plan.seconds, 5)
    spy = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(ep.pid),
            "--duration",
            str(seconds),
            "--rate",
            "250",
            "--format",
            fmt,
            "--output",
            str(out.resolve()),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    result = measure.run_sysbench(ep, "oltp_point_select", 8, seconds)
    _, err = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0:
        _say(f"py-spy failed: {err.decode(errors='replace').strip()[-300:]}")
    else:
        _say(f"profile of the gateway ({result.qps:,.0f} qps under py-spy) written to {out}")


# --------------------------------------------------------------------------- machine


def machine_info(mariadb_version: str | None) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory": mem_total,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": _version("uvloop"),
        "pymysql": _version("PyMySQL"),
        "mariadb": mariadb_version,
        "mariadb_client": _first_line(["mariadb", "--version"]),
        "sysbench": _first_line(["sysbench", "--version"]),
        "socat": _first_line(["socat", "-V"], contains="socat version"),
        "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "sqlgate_commit": _git("rev-parse", "--short", "HEAD") or "?",
        # uncommitted changes under appliance/ mean the figures are not the commit's
        "appliance_modified": bool(_git("status", "--porcelain", "appliance")),
    }


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _git(*args: str) -> str:
    """Output of a read-only git command in the repository, or "" without git."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _first_line(cmd: list[str], contains: str = "") -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    for line in out.stdout.splitlines():
        if contains in line:
            return line.strip()
    return "?"
