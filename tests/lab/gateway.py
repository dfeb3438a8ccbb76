"""A real ``sqlgate run`` process for integration tests.

Writes a complete configuration next to its secrets (a gateway account per test role, one
target per backend login, the lab's certificate for client TLS), starts the gateway as a
subprocess, waits until it listens, and on ``stop`` sends SIGTERM and returns the exit code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from appliance.mysql.auth import native_password_hash

from .certs import Pki
from .mariadb import MariaDB, free_port

START_TIMEOUT_S = 20.0


@dataclass
class GatewayAccount:
    user: str
    password: str
    groups: tuple[str, ...] = ("agents",)


@dataclass
class GatewayProcess:
    workdir: Path
    db: MariaDB
    pki: Pki
    host: str = "127.0.0.1"
    port: int = 0
    accounts: list[GatewayAccount] = field(
        default_factory=lambda: [
            GatewayAccount("agent", "agent-secret-1"),
            GatewayAccount("dba", "dba-secret-2", ("dba",)),
            GatewayAccount("outsider", "outsider-secret-3", ("visitors",)),
        ]
    )
    backend_user: str = ""
    backend_password: str = ""
    backend_tls: str = "preferred"
    extra_toml: str = ""
    appliance_extra: str = ""  # more [appliance] keys
    name: str = "test-gw"  # the appliance name (unique per broker, like in production)
    extra_targets: str = ""
    ledger_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # more environment for the process
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "sqlgate.toml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    def account(self, user: str = "agent") -> GatewayAccount:
        return next(a for a in self.accounts if a.user == user)

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        key = self.workdir / "ledger.key"
        if not key.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
            )
            key.write_bytes(pem)
            key.chmod(0o600)
        (self.workdir / "orders.pw").write_text(
            (self.backend_password or self.db.native_password) + "\n"
        )
        accounts = "".join(
            f'[[accounts]]\nuser = "{a.user}"\n'
            f'password_hash = "{native_password_hash(a.password.encode())}"\n'
            f"groups = {list(a.groups)!r}\n\n".replace("'", '"')
            for a in self.accounts
        )
        self.config_path.write_text(
            f"""[appliance]
name = "{self.name}"
listen = "{self.host}:{self.port}"
default_target = "orders"
state_dir = "{self.workdir}"
{self.appliance_extra}

[tls]
cert_file = "{self.pki.server_cert}"
key_file = "{self.pki.server_key}"

{accounts}
[[targets]]
name = "orders"
host = "{self.db.host}"
port = {self.db.port}
user = "{self.backend_user or self.db.native_user}"
password_file = "orders.pw"
allow_groups = ["agents", "dba"]
tls = "{self.backend_tls}"

{self.extra_targets}

[ledger]
path = "{self.ledger_path or self.workdir / "ledger.db"}"
signing_key = "ledger.key"

{self.extra_toml}
"""
        )
        return self.config_path

    def start(self) -> GatewayProcess:
        self.write_config()
        log = self.log_path.open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "run", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway did not listen in time:\n{self.log()}")

    def stop(self, timeout: float = 45.0) -> int:
        """SIGTERM, wait, and return the exit code (killing it if it hangs)."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None
        return proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def connect(self, user: str = "agent", **kw: Any) -> Any:
        """A PyMySQL connection through the gateway as a gateway account; plain unless
        ``ssl`` is given (PyMySQL would otherwise try TLS unverified)."""
        acct = self.account(user)
        args: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": acct.user,
            "password": acct.password,
            "database": "shop",
            "autocommit": True,
            "connect_timeout": 10,
            "read_timeout": 30,
        }
        args.update(kw)
        if not args.get("ssl"):
            args.pop("ssl", None)
            args["ssl_disabled"] = True
        return pymysql.connect(**args)

    def wait_ledger(self, timeout: float = 30.0) -> None:
        """Wait until the gateway records statements again after its ledger could not be
        written: it tries the file again only once a back-off is over (a second or less),
        refusing with 1105 meanwhile (logins too). A login and a ``SELECT 1`` of its own,
        until they are answered."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.connect() as conn, conn.cursor() as cur:
                    cur.execute("SELECT 1")
                return
            except pymysql.err.OperationalError as exc:
                if exc.args[0] != 1105 or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def connector(self, user: str = "agent", **kw: Any) -> Any:
        """A plain mysql-connector-python connection (pure Python) as a gateway account."""
        import mysql.connector

        acct = self.account(user)
        args: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": acct.user,
            "password": acct.password,
            "database": "shop",
            "use_pure": True,
            "ssl_disabled": True,
        }
        args.update(kw)
        return mysql.connector.connect(**args)

    @property
    def ledger(self) -> Path:
        return self.ledger_path or self.workdir / "ledger.db"

    def public_key(self) -> Path:
        """ledger.pub for ``sqlgate ledger verify`` (derived from the signing key)."""
        from cryptography.hazmat.primitives.serialization import (
            PublicFormat,
            load_pem_private_key,
        )

        key = load_pem_private_key((self.workdir / "ledger.key").read_bytes(), None)
        pub = self.workdir / "ledger.pub"
        pub.write_bytes(
            key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )
        return pub

    def rss_kib(self) -> int:
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")
