"""A private, real MariaDB server for integration tests.

:class:`MariaDB` initialises a fresh data directory with ``mariadb-install-db``, starts
``mariadbd`` in the background (its own socket, port, TLS certificates and error log, no
option files read), waits until it answers, and creates what the tests expect:

- database ``shop`` with tables ``customers`` and ``orders`` (see :data:`SHOP_SQL`);
- ``sqlgate_native``@'%' (mysql_native_password), ``sqlgate_ed25519``@'%' (ed25519) and
  ``root``@'%', each with a random password and all privileges on all databases.

``root``@'localhost' gets the same password as ``root``@'%'; the lab administers the
server over the Unix socket as that user.

To run the server inside a network namespace later, pass ``bind`` (the address to listen
on), ``port`` and ``command_prefix`` (for example ``["ip", "netns", "exec", "db"]``). The
socket lives in the file system, so readiness checks and :meth:`MariaDB.admin_sql` work
from the host whatever the namespace.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pymysql

from .certs import Pki, make_pki

STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 30.0
# Small redo log: the data directory stays near 50 MB and initialises faster.
INNODB_LOG_FILE_SIZE = "32M"

SHOP_DATABASE = "shop"

# Rows are small and fixed so tests can assert on exact values.
SHOP_SQL: tuple[str, ...] = (
    "CREATE DATABASE shop",
    """CREATE TABLE shop.customers (
        id INT PRIMARY KEY,
        name VARCHAR(64) NOT NULL,
        email VARCHAR(128) NOT NULL,
        card_number VARCHAR(19) NOT NULL
    ) ENGINE=InnoDB""",
    """INSERT INTO shop.customers VALUES
        (1, 'Ada Lovelace', 'ada@example.com', '4111111111111111'),
        (2, 'Grace Hopper', 'grace@example.com', '5500000000000004'),
        (3, 'Alan Turing', 'alan@example.com', '340000000000009')""",
    """CREATE TABLE shop.orders (
        id INT PRIMARY KEY,
        customer_id INT NOT NULL,
        total DECIMAL(10, 2) NOT NULL,
        created DATETIME NOT NULL
    ) ENGINE=InnoDB""",
    """INSERT INTO shop.orders VALUES
        (1, 1, 12.50, '2024-01-02 10:00:00'),
        (2, 1, 99.99, '2024-02-03 11:30:00'),
        (3, 2, 5.00, '2024-03-04 12:45:00')""",
)

SHOP_CUSTOMERS: tuple[tuple[int, str, str, str], ...] = (
    (1, "Ada Lovelace", "ada@example.com", "4111111111111111"),
    (2, "Grace Hopper", "grace@example.com", "5500000000000004"),
    (3, "Alan Turing", "alan@example.com", "340000000000009"),
)

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/libexec")


class MariaDBError(RuntimeError):
    """The lab server could not be found, initialised, started or stopped."""


def find_program(name: str) -> str:
    """Absolute path of ``name`` from PATH or the sbin directories, or MariaDBError."""
    path = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN_DIRS))
    if path is None:
        raise MariaDBError(
            f"{name} not found on PATH or in {', '.join(_SBIN_DIRS)}: install the Debian "
            "packages mariadb-server and mariadb-client (scripts/test does this)"
        )
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _password() -> str:
    # Hex only: safe on a command line, in SQL literals and in JSON without quoting rules.
    return secrets.token_hex(12)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class MariaDB:
    """One private MariaDB server; use :meth:`start` and :meth:`stop` or ``with``.

    Attributes for tests: ``host``, ``port``, ``socket``, ``bind``, ``pki``,
    ``root_user``/``root_password``, ``native_user``/``native_password``,
    ``ed25519_user``/``ed25519_password``, ``database``, ``workdir``, ``datadir``,
    ``tmpdir``, ``error_log``, ``users`` (name -> password), and after start ``version``,
    ``startup_seconds`` and ``running``. Methods: ``start()``, ``stop()``, ``restart()``
    (other server options), ``connect()`` (PyMySQL, root, Unix socket),
    ``admin_sql(*statements)``.
    """

    root_user = "root"
    native_user = "sqlgate_native"
    ed25519_user = "sqlgate_ed25519"
    database = SHOP_DATABASE

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        bind: str = "127.0.0.1",
        port: int | None = None,
        pki: Pki | None = None,
        command_prefix: Sequence[str] = (),
        extra_args: Sequence[str] = (),
    ) -> None:
        # A work directory we made ourselves is removed again by stop().
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="sqlgate-db-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bind = bind
        # Wildcard binds are reached through loopback; otherwise connect where we listen.
        self.host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)
        self._port_given = port is not None
        self.port = port if port is not None else free_port()
        self.pki = pki if pki is not None else make_pki(self.workdir / "pki", [self.host])
        self.command_prefix = tuple(command_prefix)
        self.extra_args = tuple(extra_args)
        self.datadir = self.workdir / "data"
        self.socket = self.workdir / "mysqld.sock"
        self.pid_file = self.workdir / "mysqld.pid"
        self.error_log = self.workdir / "error.log"
        # Its own tmpdir: a starting server deletes every #sql file in its tmpdir, and in a
        # shared /tmp those are the internal temporary tables of the other servers' running
        # statements ("Error on delete of '/tmp/#sql-temptable-...MAI'", error 6).
        self.tmpdir = self.workdir / "tmp"
        self.root_password = _password()
        self.native_password = _password()
        self.ed25519_password = _password()
        self.version = ""
        self.startup_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> MariaDB:
        """Initialise, start and provision the server; raises MariaDBError on failure."""
        started = time.monotonic()
        mariadbd = find_program("mariadbd")
        install_db = find_program("mariadb-install-db")
        self._install(install_db)
        for attempt in range(3):
            try:
                self._launch(mariadbd)
                break
            except MariaDBError:
                # A port picked by us may have been taken meanwhile: pick another one.
                port_taken = "already in use" in _tail(self.error_log, 50)
                if self._port_given or not port_taken or attempt == 2:
                    raise
                self.port = free_port()
        self._provision()
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM), killing the server if it does not exit in time.

        A work directory that the constructor created itself is removed afterwards.
        """
        self._terminate()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, *extra_args: str) -> None:
        """Stop the server (if it runs) and start it again on the same data, with
        ``extra_args`` in place of the constructor's (``--sql-mode=...``)."""
        self._terminate()
        self.extra_args = tuple(extra_args)
        self._launch(find_program("mariadbd"), self.root_password)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> MariaDB:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- access ------------------------------------------------------------------------

    @property
    def users(self) -> dict[str, str]:
        """User name -> password for every account the lab created."""
        return {
            self.root_user: self.root_password,
            self.native_user: self.native_password,
            self.ed25519_user: self.ed25519_password,
        }

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        """A PyMySQL connection as root over the Unix socket (administration, setup)."""
        args: dict[str, Any] = {
            "unix_socket": str(self.socket),
            "user": self.root_user,
            "password": self.root_password,
            "autocommit": True,
            "connect_timeout": 10,
        }
        args.update(kwargs)
        return pymysql.connect(**args)

    def admin_sql(self, *statements: str) -> list[tuple[Any, ...]]:
        """Run statements as root over the socket; the rows of the last one."""
        rows: list[tuple[Any, ...]] = []
        with self.connect() as conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                rows = list(cur.fetchall())
        return rows

    # -- internals ---------------------------------------------------------------------

    def _install(self, install_db: str) -> None:
        if self.datadir.exists():
            shutil.rmtree(self.datadir)
        cmd = [
            install_db,
            "--no-defaults",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            f"--innodb-log-file-size={INNODB_LOG_FILE_SIZE}",
            f"--datadir={self.datadir}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise MariaDBError(
                f"mariadb-install-db failed (exit {result.returncode}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )

    def _command(self, mariadbd: str) -> list[str]:
        return [
            *self.command_prefix,
            mariadbd,
            "--no-defaults",  # must come first: read no my.cnf
            "--user=root",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--pid-file={self.pid_file}",
            f"--tmpdir={self.tmpdir}",
            f"--log-error={self.error_log}",
            f"--port={self.port}",
            f"--bind-address={self.bind}",
            "--skip-name-resolve",
            f"--ssl-ca={self.pki.ca_cert}",
            f"--ssl-cert={self.pki.server_cert}",
            f"--ssl-key={self.pki.server_key}",
            "--plugin-load-add=auth_ed25519",
            "--innodb-buffer-pool-size=128M",
            f"--innodb-log-file-size={INNODB_LOG_FILE_SIZE}",
            "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=2000",
            "--max-allowed-packet=1G",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            "--skip-log-bin",
            *self.extra_args,
        ]

    def _launch(self, mariadbd: str, root_password: str = "") -> None:
        self.tmpdir.mkdir(exist_ok=True)
        self.error_log.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            self._command(mariadbd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the test run does not reach the server
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise MariaDBError(
                    f"mariadbd exited with {code} while starting; {self.error_log}:\n"
                    f"{_tail(self.error_log)}"
                )
            if self.socket.exists():
                try:
                    # Before provisioning, root@localhost has no password.
                    with self.connect(password=root_password) as conn, conn.cursor() as cur:
                        cur.execute("SELECT VERSION()")
                        row = cur.fetchone()
                        self.version = str(row[0]) if row else ""
                    return
                except pymysql.err.MySQLError as exc:
                    last_error = exc
            time.sleep(0.05)
        self._terminate()  # keep the work directory: its error log explains the failure
        raise MariaDBError(
            f"mariadbd did not answer on {self.socket} within {STARTUP_TIMEOUT_S:.0f}s "
            f"(last error: {last_error}); {self.error_log}:\n{_tail(self.error_log)}"
        )

    def _provision(self) -> None:
        root_pw, native_pw, ed_pw = self.root_password, self.native_password, self.ed25519_password
        statements = [
            # Only the accounts below may log in: no anonymous or host-specific extras.
            "DELETE FROM mysql.global_priv "
            "WHERE User NOT IN ('root', 'mariadb.sys') OR Host <> 'localhost'",
            "DELETE FROM mysql.proxies_priv WHERE Host <> 'localhost'",
            "FLUSH PRIVILEGES",
            f"ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password "
            f"USING PASSWORD('{root_pw}')",
            f"CREATE USER 'root'@'%' IDENTIFIED VIA mysql_native_password "
            f"USING PASSWORD('{root_pw}')",
            "GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION",
            f"CREATE USER '{self.native_user}'@'%' IDENTIFIED VIA mysql_native_password "
            f"USING PASSWORD('{native_pw}')",
            f"GRANT ALL PRIVILEGES ON *.* TO '{self.native_user}'@'%'",
            f"CREATE USER '{self.ed25519_user}'@'%' IDENTIFIED VIA ed25519 "
            f"USING PASSWORD('{ed_pw}')",
            f"GRANT ALL PRIVILEGES ON *.* TO '{self.ed25519_user}'@'%'",
            *SHOP_SQL,
        ]
        try:
            with self.connect(password="") as conn, conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        except pymysql.err.MySQLError as exc:
            self._terminate()
            raise MariaDBError(f"provisioning the lab server failed: {exc}") from exc
