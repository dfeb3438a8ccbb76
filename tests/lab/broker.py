"""A private, real Mosquitto broker for integration tests.

:class:`Broker` writes a configuration into its work directory and runs ``mosquitto`` on
127.0.0.1 and a free port, as the appliance image does: no anonymous clients, one
password per client (``mosquitto_passwd``) and an ACL file:

- ``sqlgate`` (the gateway): read and write ``<prefix>/#``;
- ``operator`` (the console, ``sqlgate approvals``): write only
  ``<prefix>/+/approvals/+/decision`` and ``<prefix>/+/kill/+``; read every topic of
  docs/events.md except those decisions and kills, which carry operators' tokens: an
  operator must not collect another operator's token (Mosquitto cannot deny reading one
  topic of a ``read <prefix>/#`` grant without denying writing it too, so reads are
  listed one by one).

With a ``pki`` it also listens with TLS (``tls_port``) using that server certificate.
``stop``/``start``/``restart`` keep the ports, so clients can be seen reconnecting. The
broker's own log is ``mosquitto.log`` in the work directory.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from appliance.config import BusConfig

from .certs import Pki

if TYPE_CHECKING:
    import aiomqtt
from .mariadb import free_port

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class BrokerError(RuntimeError):
    """Mosquitto could not be found, configured, started or stopped."""


def _program(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN_DIRS))
    if path is None:
        raise BrokerError(
            f"{name} not found on PATH or in {', '.join(_SBIN_DIRS)}: install the Debian "
            "packages mosquitto and mosquitto-clients (scripts/test does this)"
        )
    return path


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Broker:
    """One private Mosquitto; use :meth:`start` and :meth:`stop` or ``with``.

    Attributes: ``host``, ``port``, ``tls_port`` (None without a pki), ``prefix``,
    ``users`` (name -> password), ``workdir``, ``log_file``, ``running``.
    """

    gateway_user = "sqlgate"
    operator_user = "operator"

    def __init__(self, workdir: Path, *, prefix: str = "sqlgate", pki: Pki | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.pki = pki
        self.tls_port = free_port() if pki is not None else None
        self.prefix = prefix
        self.users = {
            self.gateway_user: secrets.token_hex(12),
            self.operator_user: secrets.token_hex(12),
        }
        self.config_file = self.workdir / "mosquitto.conf"
        self.password_file = self.workdir / "passwords"
        self.acl_file = self.workdir / "acl"
        self.log_file = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._configured = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Broker:
        """Start (configuring on first use) and wait until it accepts connections."""
        if self.running:
            return self
        if not self._configured:
            self._configure()
        self._proc = subprocess.Popen(
            [_program("mosquitto"), "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the test run does not reach the broker
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        ports = [p for p in (self.port, self.tls_port) if p is not None]
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise BrokerError(
                    f"mosquitto exited with {code} while starting; {self.log_file}:\n"
                    f"{_tail(self.log_file)}"
                )
            if all(self._accepts(port) for port in ports):
                return self
            time.sleep(0.02)
        self.stop()
        raise BrokerError(
            f"mosquitto did not accept connections on {ports} within {START_TIMEOUT_S:.0f}s; "
            f"{self.log_file}:\n{_tail(self.log_file)}"
        )

    def stop(self) -> None:
        """SIGTERM (mosquitto closes every client connection), SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)

    def restart(self) -> Broker:
        """Stop and start again on the same ports (retained messages are not kept)."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- access ------------------------------------------------------------------------

    def client(self, user: str = operator_user, **options: Any) -> aiomqtt.Client:
        """A plain MQTT client logged in as ``user`` (the console's or another tool's
        login; ``options``: aiomqtt's, a 5 s timeout unless given)."""
        import aiomqtt

        options.setdefault("timeout", 5)
        return aiomqtt.Client(
            self.host, self.port, username=user, password=self.users[user], **options
        )

    def bus_config(self, user: str = gateway_user, *, tls: bool = False) -> BusConfig:
        """The ``[bus]`` section a gateway (or operator) would use for this broker."""
        port = self.port
        if tls:
            if self.tls_port is None:
                raise BrokerError("this broker has no TLS listener: pass a pki")
            port = self.tls_port
        scheme = "mqtts" if tls else "mqtt"
        return BusConfig(
            url=f"{scheme}://{self.host}:{port}",
            host=self.host,
            port=port,
            tls=tls,
            topic_prefix=self.prefix,
            username=user,
            password=self.users[user].encode(),
        )

    def bus_toml(self, work: Path) -> str:
        """``[bus]`` as a gateway's TOML with the gateway user (its password file written
        into ``work``)."""
        work.mkdir(parents=True, exist_ok=True)
        (work / "bus.pw").write_text(self.users[self.gateway_user] + "\n")
        return f"""
[bus]
url = "mqtt://{self.host}:{self.port}"
topic_prefix = "{self.prefix}"
username = "{self.gateway_user}"
password_file = "bus.pw"
"""

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    # -- internals ---------------------------------------------------------------------

    def _accepts(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=0.2):
                return True
        except OSError:
            return False

    def _configure(self) -> None:
        passwd = _program("mosquitto_passwd")
        self.password_file.unlink(missing_ok=True)
        for index, (user, password) in enumerate(self.users.items()):
            create = ["-c"] if index == 0 else []
            cmd = [passwd, *create, "-b", str(self.password_file), user, password]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
            if result.returncode != 0:
                raise BrokerError(
                    f"mosquitto_passwd failed (exit {result.returncode}): {result.stderr.strip()}"
                )
        self.password_file.chmod(0o600)
        p = self.prefix
        self.acl_file.write_text(
            f"user {self.gateway_user}\n"
            f"topic readwrite {p}/#\n"
            "\n"
            f"user {self.operator_user}\n"
            f"topic read {p}/+/status\n"
            f"topic read {p}/+/sessions/#\n"
            f"topic read {p}/+/alerts\n"
            f"topic read {p}/+/checkpoints\n"
            f"topic read {p}/+/approvals/+\n"
            f"topic write {p}/+/approvals/+/decision\n"
            f"topic write {p}/+/kill/+\n"
        )
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            "set_tcp_nodelay true",  # no 40 ms Nagle waits between small messages
            "message_size_limit 1048576",  # as the image's: what consumers read at most
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
            "persistence false",
            f"log_dest file {self.log_file}",
            "log_type all",  # includes "Denied PUBLISH" lines from the ACL
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            # Run as the test user: dropping to 'mosquitto' could not read the work dir.
            "user root" if os.geteuid() == 0 else "",
            f"listener {self.port} {self.host}",
        ]
        if self.pki is not None and self.tls_port is not None:
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {self.pki.ca_cert}",
                f"certfile {self.pki.server_cert}",
                f"keyfile {self.pki.server_key}",
            ]
        self.config_file.write_text("\n".join(line for line in lines if line) + "\n")
        self._configured = True
