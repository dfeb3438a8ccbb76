"""The whole sqlgate story on one machine (run by ``scripts/demo``, as root).

1. The lab (netconfig.lab): namespaces ``sgdemo-agent``, ``sgdemo-gw`` (the router) and
   ``sgdemo-db``, on 10.79.1.0/24 and 10.79.2.0/24, apart from ``scripts/lab`` (10.77)
   and the test suite's labs.
2. MariaDB in the db namespace on 10.79.2.10:3306 with the shop schema: customers with
   card numbers and e-mail addresses, and their orders.
3. Mosquitto in the gateway namespace on its loopback: the bus of approvals and events.
4. The gateway in the gateway namespace: its interception rules, ``[[masking]]`` of the
   card number (last4) and the e-mail (redact), ``[identity]`` trusting a local signing
   key, ``[bus]``, ``[approvals]`` for group dba, ``[recording]``, and a rule that holds
   ALTER TABLE for review.
5. An agent in the agent namespace dials the database's own address: a read (masked), a
   DELETE without WHERE (blocked) and an ALTER TABLE (held: it waits in the background).
6. The operator console as dba@example.com: ``2`` shows the request, ``a`` approves it,
   ``q`` quits. ``--no-console`` skips it (nothing is approved).

Then, or at Ctrl-C, everything is torn down: the console, the gateway (SIGTERM: it
removes its rules and answers what is still held), Mosquitto, MariaDB, the namespaces
and the work directory ($SQLGATE_DEMO_DIR, else /run/sqlgate-demo). What a run that was
killed left behind is removed when the next one starts.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import Any, cast

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import pymysql  # noqa: E402
from lab.approvals import approvals_toml, operator_config  # noqa: E402
from lab.broker import Broker  # noqa: E402
from lab.certs import make_pki  # noqa: E402
from lab.gateway import GatewayProcess  # noqa: E402
from lab.mariadb import MariaDB  # noqa: E402
from lab.tokens import Provider  # noqa: E402
from lab.topology import (  # noqa: E402
    DB_PORT,
    DEFAULT_ACCOUNTS,
    LabEnv,
    LabGateway,
    ns_argv,
    python_env,
    sqlgate_argv,
)

from netconfig import nft  # noqa: E402
from netconfig.lab import Lab  # noqa: E402

PREFIX = "sgdemo"
SUBNET_BASE = 79
APPROVER = "dba@example.com"
AGENT = DEFAULT_ACCOUNTS[0]  # the gateway account "agent", group agents
APPROVAL_TIMEOUT_S = 600
CONSOLE_PAUSE_S = 10.0
STOP_TIMEOUT_S = 30.0
MARKER = ".sqlgate-demo"  # in the work directory: it is ours to delete
PID_FILES = ("db/mysqld.pid", "gateway/gateway.pid")  # in the work directory

READ_SQL = "SELECT id, name, email, card_number FROM customers ORDER BY id"
DELETE_SQL = "DELETE FROM orders"
ALTER_SQL = "ALTER TABLE orders ADD COLUMN note TEXT"

# The gateway's sections beyond what lab.topology writes (accounts, TLS, targets, ledger,
# interception) and lab.approvals adds ([identity], [bus], [approvals]).
POLICY_TOML = """
[recording]

[[masking]]
column = "shop.customers.card_number"
strategy = "last4"

[[masking]]
column = "shop.customers.email"
strategy = "redact"

[[rules]]
name = "review-schema-changes"
statements = ["ALTER TABLE"]
action = "review"
"""


def say(text: str = "", indent: str = "") -> None:
    """Print ``text`` at once with ``indent`` before each line, wrapped to a terminal's
    width (at most 100 columns); a terminal that went away (SIGHUP) is not an error."""
    lines = [indent + line if line else "" for line in text.split("\n")]
    if sys.stdout.isatty():
        width = min(shutil.get_terminal_size().columns, 100)
        lines = [
            textwrap.fill(
                line,
                width,
                subsequent_indent=indent * 2,
                break_long_words=False,
                break_on_hyphens=False,
            )
            for line in lines
        ]
    with suppress(OSError, ValueError):
        print("\n".join(lines), flush=True)


def demo_dir() -> Path:
    """$SQLGATE_DEMO_DIR, else /run/sqlgate-demo, else /tmp/sqlgate-demo."""
    if os.environ.get("SQLGATE_DEMO_DIR"):
        return Path(os.environ["SQLGATE_DEMO_DIR"]).resolve()
    run = Path("/run")
    return run / "sqlgate-demo" if os.access(run, os.W_OK) else Path("/tmp/sqlgate-demo")


@contextmanager
def only_run() -> Iterator[None]:
    """One demo on this machine at a time (an flock): they would share namespaces."""
    lock_dir = Path("/run/lock") if os.access("/run/lock", os.W_OK) else Path("/tmp")
    path = lock_dir / "sqlgate-demo.lock"
    with open(path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit("scripts/demo: another demo is running on this machine") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # nothing left behind


# --------------------------------------------------------------------------------------
# Processes and what a run leaves behind


def runs_from(pid: int | None, base: Path) -> bool:
    """Whether ``pid`` is alive and its command line names ``base`` (so it is ours, not
    a process that got a recycled pid)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return str(base) in cmdline


def terminate(pid: int | None, base: Path, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM ``pid`` if it is one of this demo's processes; SIGKILL after ``timeout``."""
    if not runs_from(pid, base):
        return
    assert pid is not None
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while runs_from(pid, base) and time.monotonic() < deadline:
            time.sleep(0.1)
        if runs_from(pid, base):
            os.kill(pid, signal.SIGKILL)


def recorded_pids(base: Path) -> list[int]:
    """The pids a run recorded in its state.json and in the pid files its processes
    wrote as soon as they existed."""
    pids: list[int] = []
    with suppress(OSError, ValueError, KeyError):
        pids += json.loads((base / "state.json").read_text())["pids"].values()
    for pid_file in PID_FILES:
        with suppress(OSError, ValueError):
            pids.append(int((base / pid_file).read_text()))
    return pids


def remove_leftovers(base: Path) -> None:
    """Stop what an earlier run that was killed left running (by the pids it recorded),
    delete the demo's namespaces and the old work directory."""
    if base.exists() and any(base.iterdir()) and not (base / MARKER).exists():
        raise SystemExit(f"scripts/demo: {base} exists and is not a demo's work directory")
    pids = recorded_pids(base)
    if any(runs_from(pid, base) for pid in pids):
        say(f"stopping what an earlier demo left running in {base}")
    for pid in pids:
        terminate(pid, base)
    Lab(PREFIX, SUBNET_BASE).down()
    shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------------------
# The statement that waits for a person


class HeldStatement:
    """A statement run from a background thread on its own agent connection: the
    gateway holds it until an operator decides, or until the gateway stops."""

    def __init__(self, conn: pymysql.connections.Connection[Any], sql: str) -> None:
        self.conn = conn
        self.sql = sql
        self.started = time.monotonic()
        self.waited_s = 0.0
        self.error: str | None = None
        self.done = threading.Event()
        threading.Thread(target=self._run, name="held-statement", daemon=True).start()

    def _run(self) -> None:
        try:
            with self.conn.cursor() as cur:
                cur.execute(self.sql)
        except pymysql.err.MySQLError as exc:
            self.error = error_text(exc)
        finally:
            self.waited_s = time.monotonic() - self.started
            self.done.set()

    def outcome(self) -> str:
        """One line: completed, refused with the gateway's message, or still waiting."""
        if not self.done.is_set():
            return f"not decided, still held after {time.monotonic() - self.started:.0f} s"
        if self.error is None:
            return f"completed, after {self.waited_s:.1f} s held for approval"
        return f"refused after {self.waited_s:.1f} s: {self.error}"

    def close(self) -> None:
        with suppress(Exception):
            self.conn.close()


def error_text(exc: BaseException) -> str:
    """``(1227) sqlgate: ...`` from a PyMySQL error."""
    if len(exc.args) >= 2:
        return f"({exc.args[0]}) {exc.args[1]}"
    return str(exc)


# --------------------------------------------------------------------------------------
# The demo


class Demo:
    """Everything one run builds, kept so that :meth:`teardown` can undo it in reverse
    order, each step even when another fails or the run was interrupted half-way."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.lab = Lab(PREFIX, SUBNET_BASE)
        self.started = time.monotonic()
        self.db: MariaDB | None = None
        self.env: LabEnv | None = None
        self.broker: Broker | None = None
        self.gateway: LabGateway | None = None
        self.console: subprocess.Popen[bytes] | None = None
        self.operator: Path | None = None
        self.token: Path | None = None
        self.held: HeldStatement | None = None
        self.state: dict[str, Any] = {
            "prefix": PREFIX,
            "subnet_base": SUBNET_BASE,
            "dir": str(base),
            "pids": {},
        }

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.1f} s"

    def record(self, **values: Any) -> None:
        """Merge ``values`` into state.json (mode 0600: it holds the root password)."""
        pids = values.pop("pids", {})
        self.state.update(values)
        self.state["pids"].update(pids)
        path = self.base / "state.json"
        path.write_text(json.dumps(self.state, indent=2) + "\n")
        path.chmod(0o600)

    # -- building ------------------------------------------------------------------------

    def build_lab(self) -> None:
        """Namespaces, then MariaDB with the shop schema in the db namespace."""
        lab = self.lab
        lab.up()
        built("lab", f"{lab.agent_ns} {lab.agent_v4} -> {lab.gw_ns} -> {lab.db_ns} {lab.db_v4}")
        pki = make_pki(self.base / "pki", [lab.db_v4, lab.db_v6])
        self.db = MariaDB(
            self.base / "db",
            bind=f"{lab.db_v4},{lab.db_v6}",
            port=DB_PORT,
            pki=pki,
            command_prefix=ns_argv(lab.db_ns, []),
        )
        self.db.host = lab.db_v4
        self.db.start()
        self.env = LabEnv(lab, self.db, self.base, pki)
        # Its pid is in db/mysqld.pid (PID_FILES); these let tests look inside.
        self.record(db_socket=str(self.db.socket), root_password=self.db.root_password)
        built(
            "mariadb",
            f"{self.db.version.split('-')[0]} in {lab.db_ns} on {lab.db_v4}:{DB_PORT}, "
            f"database shop  [{self.elapsed()}]",
        )

    def build_broker(self) -> None:
        """Mosquitto on the gateway namespace's loopback (started from a thread switched
        into it, so the process lives there)."""
        assert self.env is not None
        self.broker = Broker(self.base / "broker")
        with self.env.in_ns("gw"):
            self.broker.start()
        self.record(pids={"broker": self.broker._proc.pid if self.broker._proc else None})
        built("broker", f"mosquitto in {self.lab.gw_ns} on {self.broker.host}:{self.broker.port}")

    def build_gateway(self) -> None:
        """The gateway in the gateway namespace, with the operator's config and token."""
        assert self.db is not None and self.env is not None and self.broker is not None
        work = self.base / "gateway"
        provider = Provider(self.base / "idp")
        extra = (
            approvals_toml(work, self.broker, provider, timeout_s=APPROVAL_TIMEOUT_S) + POLICY_TOML
        )
        self.gateway = LabGateway(
            work,
            self.lab,
            backend_user=self.db.native_user,
            backend_password=self.db.native_password,
            pki=self.env.pki,
            extra_toml=extra,
        )
        self.gateway.start()  # its pid is in gateway/gateway.pid (PID_FILES)
        rules = "intercepting" if self.gateway.rules_ready else "NO interception rules for"
        built(
            "gateway",
            f"in {self.lab.gw_ns}, {rules}: {self.lab.db_v4}:{DB_PORT} -> :{self.gateway.port}"
            f"  [{self.elapsed()}]",
        )
        # operator_config reads only the gateway's .ledger and .workdir (for ledger.pub).
        ledger_of = cast(GatewayProcess, SimpleNamespace(ledger=work / "ledger.db", workdir=work))
        self.operator = operator_config(self.base / "operator", self.broker, gateway=ledger_of)
        self.token = self.base / "operator" / "dba.jwt"
        self.token.write_text(
            provider.token(sub="dba-1", email=APPROVER, groups=["dba"], exp=int(time.time()) + 3600)
        )
        self.token.chmod(0o600)
        built("operator", f"{APPROVER} (group dba): token {self.token}")

    # -- the agent -----------------------------------------------------------------------

    def agent_connect(self, read_timeout: float = 30) -> pymysql.connections.Connection[Any]:
        """A PyMySQL connection made from the agent namespace to the DATABASE's address,
        with TLS verified against the lab's CA: the gateway intercepts it."""
        assert self.env is not None
        with self.env.in_ns("agent"):
            return pymysql.connect(
                host=self.lab.db_v4,
                port=DB_PORT,
                user=AGENT.user,
                password=AGENT.password,
                database="shop",
                ssl={"ca": str(self.env.pki.ca_cert)},
                connect_timeout=10,
                read_timeout=read_timeout,
                autocommit=True,
            )

    def agent_session(self) -> None:
        """The scripted part: a read (masked), a DELETE without WHERE (blocked), and the
        ALTER TABLE that is held and left waiting in the background."""
        assert self.db is not None
        conn = self.agent_connect()
        say(
            f"\nThe agent in {self.lab.agent_ns} ({self.lab.agent_v4}) connects to the "
            f"database's own address {self.lab.db_v4}:{DB_PORT} as '{AGENT.user}';"
        )
        say(f"the server greeting says {conn.get_server_info()!r}: the gateway answered.")
        with conn, conn.cursor() as cur:
            say(f"\nagent> {READ_SQL}")
            cur.execute(READ_SQL)
            print_rows([d[0] for d in cur.description], cur.fetchall())
            real = self.db.admin_sql("SELECT email, card_number FROM shop.customers WHERE id = 1")
            say(f"(MariaDB holds {real[0][1]} and {real[0][0]} for customer 1)", "  ")
            say(f"\nagent> {DELETE_SQL}")
            try:
                cur.execute(DELETE_SQL)
                say(f"ran: {cur.rowcount} rows deleted (it should have been blocked)", "  ")
            except pymysql.err.MySQLError as exc:
                say(f"blocked: {error_text(exc)}", "  ")
        say(f"\nagent> {ALTER_SQL}")
        self.held = HeldStatement(
            self.agent_connect(read_timeout=APPROVAL_TIMEOUT_S + 60), ALTER_SQL
        )
        pending = self.pending_requests()
        if self.held.done.is_set():
            say(self.held.outcome(), "  ")
            return
        say("held for approval: the agent's session waits while a person decides", "  ")
        for line in pending:
            say(f"sqlgate approvals list: {line}", "  ")

    def pending_requests(self, timeout: float = 15.0) -> list[str]:
        """``sqlgate approvals list`` as the operator, until it shows the held request."""
        assert self.operator is not None and self.held is not None
        argv = ns_argv(self.lab.gw_ns, sqlgate_argv("approvals", "list", "-c", str(self.operator)))
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=30, env=python_env(), cwd=REPO
            )
            lines = done.stdout.splitlines()
            if lines or self.held.done.is_set() or time.monotonic() > deadline:
                return lines
            time.sleep(0.2)

    # -- the operator ----------------------------------------------------------------------

    def open_console(self) -> int:
        """``sqlgate tui`` in the gateway namespace (where the broker is), in this
        terminal, until the person quits it; its exit status."""
        assert self.operator is not None and self.token is not None
        argv = sqlgate_argv("tui", "-c", str(self.operator), "--token-file", str(self.token))
        self.console = subprocess.Popen(ns_argv(self.lab.gw_ns, argv), env=python_env(), cwd=REPO)
        self.record(pids={"console": self.console.pid})
        code = self.console.wait()
        self.console = None
        return code

    def report_held(self, wait_s: float = 2.0) -> None:
        """How the held ALTER ended (an approval sent just before quitting gets ``wait_s``
        to land); when it ran, the columns MariaDB now has and the approval record."""
        if self.held is None:
            return
        self.held.done.wait(wait_s)
        say(f"\n{self.held.sql}: {self.held.outcome()}")
        if self.held.done.is_set() and self.held.error is None and self.db is not None:
            rows = self.db.admin_sql("SHOW COLUMNS FROM shop.orders")
            say(f"shop.orders now has the columns {', '.join(str(r[0]) for r in rows)}", "  ")
            for record in self.ledger_records("approval"):
                say(
                    f"the ledger's approval record: {record.get('decision')} by "
                    f"{record.get('approver')}",
                    "  ",
                )

    def ledger_records(self, kind: str) -> list[dict[str, Any]]:
        """``sqlgate ledger export --kind KIND`` of the gateway's ledger."""
        assert self.gateway is not None
        ledger = str(self.gateway.workdir / "ledger.db")
        argv = sqlgate_argv("ledger", "export", "--ledger", ledger, "--kind", kind)
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, env=python_env(), cwd=REPO
        )
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    # -- tearing down ----------------------------------------------------------------------

    def teardown(self, keep: bool) -> None:
        """Stop everything in reverse order and delete the namespaces and (unless
        ``keep``) the work directory; each step runs even when one before failed."""
        say("\ntearing down")
        steps: list[tuple[str, Callable[[], None]]] = [
            ("console", self._stop_console),
            ("gateway", self._stop_gateway),
            ("held statement", self._finish_held),
            ("ledger", self._verify_ledger),
            ("broker", self._stop_broker),
            ("mariadb", self._stop_db),
            ("leftover processes", self._sweep),
            ("namespaces", self._remove_namespaces),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # keep going: the rest must go too
                say(f"{what}: {type(exc).__name__}: {exc}", "  ")
        running = [pid for pid in recorded_pids(self.base) if runs_from(pid, self.base)]
        namespaces = [name for name, present in self.lab.present().items() if present]
        if keep:
            say(f"kept {self.base} (ledger, logs, configuration)", "  ")
        else:
            shutil.rmtree(self.base, ignore_errors=True)
        if running or namespaces:
            say(f"demo NOT fully torn down: pids {running}, namespaces {namespaces}")
        else:
            say("demo torn down: nothing left running")

    def _stop_console(self) -> None:
        if self.console is not None and self.console.poll() is None:
            self.console.terminate()
            try:
                self.console.wait(5)
            except subprocess.TimeoutExpired:
                self.console.kill()
                self.console.wait(5)

    def _stop_gateway(self) -> None:
        if self.gateway is None:
            return
        code = self.gateway.stop()
        left = nft.status(self.lab.gw_ns) if self.lab.present()[self.lab.gw_ns] else []
        rules = f"{len(left)} rules LEFT" if left else "its rules removed"
        say(f"gateway stopped with SIGTERM (exit {code}), {rules}", "  ")

    def _finish_held(self) -> None:
        if self.held is not None:
            if self.held.done.wait(10) and self.held.error is not None:
                say(f"{self.held.sql}: {self.held.outcome()}", "  ")
            self.held.close()

    def _verify_ledger(self) -> None:
        if self.gateway is None or not (self.gateway.workdir / "ledger.pub").exists():
            return
        work = self.gateway.workdir
        ledger, pubkey = str(work / "ledger.db"), str(work / "ledger.pub")
        argv = sqlgate_argv("ledger", "verify", "--ledger", ledger, "--pubkey", pubkey)
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, env=python_env(), cwd=REPO
        )
        say(f"sqlgate ledger verify: {(done.stdout or done.stderr).strip()}", "  ")

    def _stop_broker(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            say("mosquitto stopped", "  ")

    def _stop_db(self) -> None:
        if self.db is not None:
            self.db.stop()
            say("mariadb stopped", "  ")

    def _sweep(self) -> None:
        for pid in recorded_pids(self.base):
            terminate(pid, self.base)

    def _remove_namespaces(self) -> None:
        self.lab.down()
        say(f"namespaces {', '.join(self.lab.namespaces)} deleted", "  ")


def built(what: str, text: str) -> None:
    """One line of the build: what, then where and how."""
    say(f"{what:<9}{text}", "  ")


def print_rows(names: list[str], rows: Any) -> None:
    """A result set as an aligned table, indented under the statement."""
    table = [names, *[["NULL" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(cell) for cell in column) for column in zip(*table, strict=True)]
    for line in table:
        say("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), "  ")


def pause_for_console(seconds: float) -> None:
    """Give the person time to read the output above before the console covers it:
    Enter opens it at once; without a terminal there is nothing to wait for."""
    if not sys.stdin.isatty() or seconds <= 0:
        return
    say(f"\nPress Enter to open the console (it opens by itself in {seconds:.0f} s).")
    ready, _, _ = select.select([sys.stdin], [], [], seconds)
    if ready:
        sys.stdin.readline()


# --------------------------------------------------------------------------------------


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the demo like Ctrl-C does (the teardown runs); after a
    SIGHUP the terminal is gone, so output goes nowhere. A child forked from this
    process (pyroute2 creates namespaces from one) just exits."""
    owner = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        if signum == signal.SIGHUP:
            sys.stdout = sys.stderr = open(os.devnull, "w")  # for the rest of the process
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def ignore_signals() -> None:
    """While tearing down: a second Ctrl-C must not leave things half stopped."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def tell_the_story(demo: Demo, console: bool) -> int:
    """Build everything, run the agent, then (with ``console``) let a person approve;
    the exit status: 0, 130 when interrupted, 1 when something failed."""
    say(f"sqlgate demo (work directory {demo.base})")
    try:
        demo.build_lab()
        demo.build_broker()
        demo.build_gateway()
        demo.agent_session()
        if not console:
            say("\n--no-console: nobody approves the ALTER TABLE")
            return 0
        say(
            f"\nReady in {demo.elapsed()}. The operator console opens next, as {APPROVER}: "
            "2 shows the approvals, a approves the highlighted one, q quits and ends the "
            "demo (Ctrl-C outside the console ends it too)."
        )
        pause_for_console(CONSOLE_PAUSE_S)
        if (status := demo.open_console()) != 0:
            say(f"the console exited with status {status}")
        demo.report_held()
        return 0
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130
    except Exception as exc:
        say(f"\nscripts/demo: {type(exc).__name__}: {exc}")
        if demo.gateway is not None:
            say(f"the end of {demo.gateway.log_path}:")
            with suppress(OSError):
                print(demo.gateway.log()[-3000:], flush=True)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--no-console",
        action="store_true",
        help="everything but the console: nothing is approved, then all is torn down",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (ledger, logs)"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("scripts/demo: run as root (namespaces and nftables need it)", file=sys.stderr)
        return 2
    base = demo_dir()
    with only_run():
        stop_on_signals()
        remove_leftovers(base)
        base.mkdir(parents=True, mode=0o700)
        (base / MARKER).touch()
        demo = Demo(base)
        try:
            return tell_the_story(demo, console=not args.no_console)
        finally:
            ignore_signals()
            demo.teardown(keep=args.keep)


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # before anything was built (the lock, the leftovers)
        raise SystemExit(130) from None
