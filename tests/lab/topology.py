"""The three-namespace lab for tests and ``scripts/lab``: topology, MariaDB, gateway.

- :func:`start_lab` builds a :class:`netconfig.lab.Lab` (agent, gw, db namespaces) and
  starts the private :class:`~lab.mariadb.MariaDB` inside the db namespace, listening on
  the db's IPv4 and IPv6 addresses, port 3306. It returns a
  :class:`LabEnv`: ``in_ns(role)`` moves the current thread into a namespace (sockets and
  child processes created inside stay there), ``run_in(role, argv)`` runs a command there
  through ``ip netns exec``, plus helpers for PyMySQL, the ``mariadb`` CLI and ``sqlgate``.
- :func:`write_gateway_config` writes the gateway configuration of the lab: listen on
  ``[::]:3307``, target ``orders`` on the db's IPv4 address and ``orders6`` on its IPv6
  address (same vaulted credential), ``[network] manage_rules = true``.
- :class:`LabGateway` runs ``sqlgate run -c CFG`` inside the gateway namespace.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from appliance.mysql.auth import native_password_hash
from netconfig import nft
from netconfig.lab import Lab, inside

from .certs import Pki, make_pki
from .clients import run_mariadb
from .gateway import GatewayAccount
from .mariadb import MariaDB

REPO_ROOT = Path(__file__).resolve().parents[2]
DB_PORT = 3306
GATEWAY_PORT = 3307
GATEWAY_LISTEN = f"[::]:{GATEWAY_PORT}"
GATEWAY_START_TIMEOUT_S = 20.0
RULES_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 45.0
COMMAND_TIMEOUT_S = 30.0

DEFAULT_ACCOUNTS: tuple[GatewayAccount, ...] = (
    GatewayAccount("agent", "agent-secret-1"),
    GatewayAccount("dba", "dba-secret-2", ("dba",)),
    GatewayAccount("outsider", "outsider-secret-3", ("visitors",)),
)


def unique_prefix() -> str:
    """``sgt`` and four hex digits: namespace names that parallel runs do not share."""
    return f"sgt{secrets.token_hex(2)}"


def python_env() -> dict[str, str]:
    """The environment for ``python -m appliance.cli``: this tree first on the path."""
    path = os.environ.get("PYTHONPATH", "")
    return dict(
        os.environ,
        PYTHONPATH=str(REPO_ROOT) + (os.pathsep + path if path else ""),
        PYTHONUNBUFFERED="1",
    )


def sqlgate_argv(*args: str) -> list[str]:
    """``sqlgate ARGS`` as this interpreter running this tree's ``appliance.cli``."""
    return [sys.executable, "-m", "appliance.cli", *args]


def ns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


# --------------------------------------------------------------------------------------
# The lab with its database


@dataclass
class LabEnv:
    """A built lab with MariaDB running in its db namespace."""

    lab: Lab
    db: MariaDB
    workdir: Path
    pki: Pki

    def ns(self, role: str) -> str:
        return self.lab.ns(role)

    @contextmanager
    def in_ns(self, role: str) -> Iterator[None]:
        """Switch the CURRENT THREAD into ``role``'s namespace for the body.

        Sockets created in the body (a PyMySQL connection, say) keep working after it;
        subprocesses started in the body run in the namespace too.
        """
        with inside(self.ns(role)):
            yield

    def run_in(
        self,
        role: str,
        argv: Sequence[str],
        *,
        timeout: float = COMMAND_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``ip netns exec NS ARGV``: output captured as text, never raises on exit status."""
        return subprocess.run(
            ns_argv(self.ns(role), argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=dict(env) if env is not None else python_env(),
            cwd=REPO_ROOT,
        )

    def sqlgate(
        self, role: str, *args: str, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """``sqlgate ARGS`` (this tree's) run inside ``role``'s namespace."""
        return self.run_in(role, sqlgate_argv(*args), timeout=timeout)

    def connect(
        self,
        role: str,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        timeout: float = 5.0,
        **kwargs: Any,
    ) -> pymysql.connections.Connection[Any]:
        """A PyMySQL connection whose socket lives in ``role``'s namespace."""
        with self.in_ns(role):
            return pymysql.connect(
                host=host,
                port=port,
                user=user,
                password=password,
                connect_timeout=timeout,
                read_timeout=30,
                write_timeout=30,
                autocommit=True,
                **kwargs,
            )

    def mariadb_cli(
        self, role: str, sql: str, *, host: str, port: int, user: str, password: str, **kwargs: Any
    ) -> str:
        """``mariadb --batch -e SQL`` (see :func:`lab.clients.run_mariadb`) run in ``role``'s
        namespace: the client is started from this thread while it is switched there."""
        kwargs.setdefault("timeout", COMMAND_TIMEOUT_S)
        with self.in_ns(role):
            return run_mariadb(sql, host=host, port=port, user=user, password=password, **kwargs)

    def can_connect(self, role: str, host: str, port: int, timeout: float = 2.0) -> bool:
        """Whether a TCP connection from ``role`` to host:port completes."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with self.in_ns(role):
            sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
            return True
        except OSError:
            return False
        finally:
            sock.close()

    def close(self) -> None:
        """Stop MariaDB, then delete the namespaces (each step even if another fails)."""
        try:
            self.db.stop()
        finally:
            self.lab.down()


def start_lab(
    workdir: Path, prefix: str | None = None, *, subnet_base: int = 77, db_port: int = DB_PORT
) -> LabEnv:
    """Build the lab and start MariaDB in its db namespace; undone again on failure."""
    lab = Lab(prefix or unique_prefix(), subnet_base)
    workdir.mkdir(parents=True, exist_ok=True)
    lab.up()
    try:
        pki = make_pki(workdir / "pki", [lab.db_v4, lab.db_v6])
        db = MariaDB(
            workdir / "mariadb",
            # Both of the db's own addresses: MariaDB 10.11 makes a "::" listener
            # IPv6-only (IPV6_V6ONLY), so "::" alone would not serve 10.77.2.10.
            bind=f"{lab.db_v4},{lab.db_v6}",
            port=db_port,
            pki=pki,
            command_prefix=ns_argv(lab.db_ns, []),
        )
        db.host = lab.db_v4  # where it listens (from the agent or gateway namespace)
        db.start()
    except BaseException:
        lab.down()
        raise
    return LabEnv(lab, db, workdir, pki)


# --------------------------------------------------------------------------------------
# The gateway in the gateway namespace


def write_gateway_config(
    workdir: Path,
    lab: Lab,
    *,
    backend_user: str,
    backend_password: str,
    pki: Pki | None = None,
    accounts: Sequence[GatewayAccount] = DEFAULT_ACCOUNTS,
    listen: str = GATEWAY_LISTEN,
    db_port: int = DB_PORT,
    manage_rules: bool = True,
    extra_toml: str = "",
) -> Path:
    """Write ``workdir/sqlgate.toml`` (and its key and password files) for the lab."""
    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "ledger.key"
    if not key.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
        key.write_bytes(pem)
        key.chmod(0o600)
    password_file = workdir / "orders.pw"
    password_file.write_text(backend_password + "\n")
    password_file.chmod(0o600)
    account_toml = "".join(
        f'[[accounts]]\nuser = "{a.user}"\n'
        f'password_hash = "{native_password_hash(a.password.encode())}"\n'
        f"groups = {_toml_strings(a.groups)}\n\n"
        for a in accounts
    )
    tls = (
        f'[tls]\ncert_file = "{pki.server_cert}"\nkey_file = "{pki.server_key}"\n'
        if pki is not None
        else ""
    )
    targets = "".join(
        f"""[[targets]]
name = "{name}"
host = "{host}"
port = {db_port}
user = "{backend_user}"
password_file = "orders.pw"
allow_groups = ["agents", "dba"]

"""
        for name, host in (("orders", lab.db_v4), ("orders6", lab.db_v6))
    )
    path = workdir / "sqlgate.toml"
    path.write_text(
        f"""# The gateway of lab '{lab.prefix}': agents dial the database's own addresses.
[appliance]
name = "{lab.prefix}-gw"
listen = "{listen}"
default_target = "orders"
state_dir = "{workdir}"

{tls}
{account_toml}{targets}[ledger]
path = "ledger.db"
signing_key = "ledger.key"

[network]
manage_rules = {"true" if manage_rules else "false"}

{extra_toml}
"""
    )
    return path


def listening_ports() -> set[int]:
    """TCP ports with a listening socket in the CURRENT THREAD's network namespace."""
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            # thread-self: /proc/self/net would show the namespace of the main thread.
            lines = Path(f"/proc/thread-self/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def _toml_strings(values: Sequence[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


@dataclass
class LabGateway:
    """``sqlgate run -c CFG`` in the lab's gateway namespace, logging to ``gateway.log``.

    ``start()`` returns once the gateway listens (checked from inside the namespace) and
    then waits, bounded, for its interception rules: ``rules_ready`` says whether they came.
    """

    workdir: Path
    lab: Lab
    backend_user: str
    backend_password: str
    pki: Pki | None = None
    accounts: Sequence[GatewayAccount] = DEFAULT_ACCOUNTS
    listen: str = GATEWAY_LISTEN
    manage_rules: bool = True
    extra_toml: str = ""
    db_port: int = DB_PORT  # the targets' port (a second server in the db namespace)
    proc: subprocess.Popen[bytes] | None = None
    rules_ready: bool = False
    _log_offset: int = field(default=0, repr=False)

    @property
    def config_path(self) -> Path:
        return self.workdir / "sqlgate.toml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "gateway.pid"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def account(self, user: str = "agent") -> GatewayAccount:
        return next(a for a in self.accounts if a.user == user)

    def write_config(self) -> Path:
        return write_gateway_config(
            self.workdir,
            self.lab,
            backend_user=self.backend_user,
            backend_password=self.backend_password,
            pki=self.pki,
            accounts=self.accounts,
            listen=self.listen,
            db_port=self.db_port,
            manage_rules=self.manage_rules,
            extra_toml=self.extra_toml,
        )

    def command(self) -> list[str]:
        return ns_argv(self.lab.gw_ns, sqlgate_argv("run", "-c", str(self.config_path)))

    def start(self, timeout: float = GATEWAY_START_TIMEOUT_S) -> LabGateway:
        if self.running:
            return self
        self.write_config()
        try:
            log_start = self.log_path.stat().st_size
        except FileNotFoundError:
            log_start = 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=python_env(),
                cwd=REPO_ROOT,
                start_new_session=True,  # a Ctrl-C in the test run does not reach it
            )
        # `ip netns exec` execs the command itself: this pid is the gateway's.
        self.pid_path.write_text(f"{self.proc.pid}\n")
        self._wait_listening(timeout)
        self.rules_ready = self._wait_rules(RULES_TIMEOUT_S if self.manage_rules else 0)
        if self.rules_ready and self.manage_rules:
            self._wait_sentinel(log_start, RULES_TIMEOUT_S)
        return self

    def _wait_sentinel(self, log_start: int, timeout: float) -> None:
        """Until the bypass sentinel watches (it starts just after the rules are in
        place): a test that breaks the rules at once would otherwise race its capture."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as f:
                f.seek(log_start)
                text = f.read().decode(errors="replace")
            if any(
                line in text
                for line in (
                    "bypass sentinel watching",
                    "alert sentinel_error",
                    "cannot install the interception",
                )
            ):
                return
            time.sleep(0.05)

    def _wait_listening(self, timeout: float) -> None:
        """Until a socket listens on our port in the gateway namespace (no connection is
        made: a probe would show up in the gateway's log as a session)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"gateway exited {code} while starting:\n{self.log()}")
            with inside(self.lab.gw_ns):
                if listening_ports() & {self.port}:
                    return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"gateway did not listen on {self.listen} in time:\n{self.log()}")

    def _wait_rules(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if nft.status(self.lab.gw_ns):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait (SIGKILL after ``timeout``); the exit code, None if not running."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.pid_path.unlink(missing_ok=True)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: the gateway gets no chance to remove its rules."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        self.pid_path.unlink(missing_ok=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mark_log(self) -> None:
        """Remember the log's current end: :meth:`new_log` returns what follows."""
        try:
            self._log_offset = self.log_path.stat().st_size
        except FileNotFoundError:
            self._log_offset = 0

    def new_log(self) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(
        self, pattern: str, timeout: float = 5.0, *, since_mark: bool = True
    ) -> re.Match[str] | None:
        """Wait (bounded) until regex ``pattern`` matches the log (after :meth:`mark_log`
        unless ``since_mark`` is false); the match, or None when it never came."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.new_log() if since_mark else self.log())
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)
