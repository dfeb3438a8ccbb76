"""What the benchmark measures: a private MariaDB, sqlgate gateways and a socat relay.

Every endpoint reaches the same MariaDB server on loopback:

- ``direct``: the server itself, as ``sqlgate_native`` (mysql_native_password);
- ``socat``: ``socat TCP-LISTEN:...,fork,nodelay TCP:127.0.0.1:<db>,nodelay``, same user;
- ``gateway``: ``sqlgate run`` with ``tls = "disabled"`` toward the backend, so it does
  the same work as socat plus its own; clients log in as the gateway account ``agent``;
- ``gateway-tls``: a second gateway with ``tls = "required"`` toward the backend (clients
  still speak plain TCP to it), for one figure of what backend TLS costs.

Every gateway writes its audit ledger (``[ledger]``, ``fsync = false``, the default): each
statement waits for its record's group commit before it is forwarded.

The module also reads a process's RSS and CPU time from ``/proc``.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB, MariaDBError, free_port

from .errors import BenchError

SBTEST_DATABASE = "sbtest"
GATEWAY_USER = "agent"
START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Endpoint:
    """One way to reach the server, and the relay process to watch (None for direct)."""

    name: str
    port: int
    user: str
    password: str
    pid: int | None = None
    host: str = "127.0.0.1"


# ---------------------------------------------------------------------- /proc readings

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and of its children it has reaped.

    socat forks one child per connection; their time reaches the parent's ``cutime`` and
    ``cstime`` once the children have exited and been waited for.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 of proc(5) (state): utime is field 14, cstime field 17
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / _CLK_TCK


class RssSampler:
    """Samples a process's RSS every ``interval_s`` in a thread while in a ``with`` block."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self.samples.append(rss_kib(self.pid))
            except (OSError, BenchError):
                return
            if self._stop.wait(self.interval_s):
                return

    @property
    def max_kib(self) -> int:
        return max(self.samples, default=0)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.samples.append(rss_kib(self.pid))
        except (OSError, BenchError):
            pass


def raise_nofile(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE (children inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(
            f"the open-files hard limit is {hard}, the benchmark needs {needed}: "
            f"run it with a higher limit (ulimit -Hn {needed})"
        )
    target = max(soft, needed) if hard == resource.RLIM_INFINITY else hard
    target = min(target, 1 << 20)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{what} did not listen on 127.0.0.1:{port} within {START_TIMEOUT_S:.0f}s")


# --------------------------------------------------------------------------------- rig


class StartStop:
    """``with rig:`` starts it (stopping what did start when that fails) and stops it."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class Rig(StartStop):
    """The servers of one benchmark run; ``with Rig(...) as rig`` starts and stops them."""

    workdir: Path
    buffer_pool: str = "256M"
    with_tls: bool = True
    db: MariaDB | None = None
    gateways: list[GatewayProcess] = field(default_factory=list)
    socat: subprocess.Popen[bytes] | None = None
    endpoints: dict[str, Endpoint] = field(default_factory=dict)

    def start(self) -> Rig:
        try:
            db = MariaDB(
                self.workdir / "db",
                extra_args=[f"--innodb-buffer-pool-size={self.buffer_pool}"],
            )
            self.db = db.start()
        except MariaDBError as exc:
            first = str(exc).splitlines()[0]
            raise BenchError(f"cannot start the private MariaDB: {first}") from exc
        db.admin_sql(f"CREATE DATABASE {SBTEST_DATABASE}")
        self.endpoints["direct"] = Endpoint("direct", db.port, db.native_user, db.native_password)
        self._start_socat(db)
        self.add_gateway("gateway", backend_tls="disabled")
        if self.with_tls:
            self.add_gateway("gateway-tls", backend_tls="required")
        return self

    def add_gateway(self, name: str, *, backend_tls: str) -> Endpoint:
        """Start one more gateway in front of the server and register it as ``name``."""
        assert self.db is not None
        gw = GatewayProcess(self.workdir / name, self.db, self.db.pki, backend_tls=backend_tls)
        self.gateways.append(gw)
        try:
            gw.start()
        except RuntimeError as exc:
            raise BenchError(f"{name}: {str(exc).splitlines()[0]} (log: {gw.log_path})") from exc
        assert gw.proc is not None
        account = gw.account(GATEWAY_USER)
        ep = Endpoint(name, gw.port, account.user, account.password, gw.proc.pid)
        self.endpoints[name] = ep
        return ep

    def stop_gateway(self, name: str) -> None:
        ep = self.endpoints.pop(name)
        for gw in self.gateways:
            if gw.proc is not None and gw.proc.pid == ep.pid:
                gw.stop()

    def ledger_path(self, name: str) -> Path:
        """The audit ledger file of the gateway registered as ``name``."""
        ep = self.endpoints[name]
        for gw in self.gateways:
            if gw.proc is not None and gw.proc.pid == ep.pid:
                return gw.ledger
        raise BenchError(f"{name} is not a gateway")

    def _start_socat(self, db: MariaDB) -> None:
        port = free_port()
        log = (self.workdir / "socat.log").open("ab")
        self.socat = subprocess.Popen(
            [
                "socat",
                f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,nodelay",
                f"TCP:{db.host}:{db.port},nodelay",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        _wait_listening(port, self.socat, "socat")
        self.endpoints["socat"] = Endpoint(
            "socat", port, db.native_user, db.native_password, self.socat.pid
        )

    def stop(self) -> None:
        for gw in self.gateways:
            gw.stop()
        if self.socat is not None and self.socat.poll() is None:
            self.socat.send_signal(signal.SIGTERM)
            try:
                self.socat.wait(5)
            except subprocess.TimeoutExpired:
                self.socat.kill()
                self.socat.wait(5)
        if self.db is not None:
            self.db.stop()
