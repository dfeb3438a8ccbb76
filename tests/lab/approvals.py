"""What tests and the bench need around approvals: the gateway's sections for a lab
broker, a statement held in a thread, and the Mosquitto command-line clients."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any
from unittest import mock

import pymysql
import pymysql.charset
import pymysql.connections
from cryptography.hazmat.primitives import serialization
from lab.broker import Broker
from lab.gateway import GatewayProcess
from lab.tokens import Provider, identity_toml


def approvals_toml(
    work: Path,
    broker: Broker,
    provider: Provider,
    *,
    timeout_s: float,
    approver_groups: tuple[str, ...] = ("dba",),
) -> str:
    """``[identity]``, ``[bus]`` (the broker's gateway user; its password file is written
    into ``work``) and ``[approvals]``, for a gateway config's ``extra_toml``."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "bus.pw").write_text(broker.users[broker.gateway_user] + "\n")
    groups = ", ".join(f'"{g}"' for g in approver_groups)
    return (
        identity_toml(provider)
        + f"""
[bus]
url = "mqtt://{broker.host}:{broker.port}"
topic_prefix = "{broker.prefix}"
username = "{broker.gateway_user}"
password_file = "bus.pw"

[approvals]
timeout_s = {timeout_s:g}
approver_groups = [{groups}]
"""
    )


class Held:
    """A statement sent from a thread: it waits in the gateway until decided."""

    def __init__(
        self,
        gw: GatewayProcess,
        sql: str,
        user: str = "agent",
        before: tuple[str, ...] = (),
        login_collation: int | None = None,
    ) -> None:
        """``before``: statements the session runs first (each must be allowed);
        ``login_collation``: the id of the one its login names, with no SET NAMES."""
        self.sql = sql
        if login_collation is None:
            self.conn = gw.connect(user=user, database="shop", read_timeout=60)
        else:
            self.conn = _login_in(gw, user, login_collation)
        with self.conn.cursor() as cur:
            for statement in before:
                cur.execute(statement)
        self.error: tuple[Any, ...] | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with self.conn.cursor() as cur:
                cur.execute(self.sql)
        except pymysql.err.MySQLError as exc:
            self.error = exc.args
        finally:
            self.done.set()

    def result(self, timeout: float = 30) -> tuple[Any, ...] | None:
        """None when it ran, else the error's ``(code, message)``."""
        assert self.done.wait(timeout), "the held statement never got an answer"
        return self.error

    def close(self) -> None:
        self.conn.close()


def _login_in(gw: GatewayProcess, user: str, collation_id: int) -> Any:
    """A PyMySQL session whose login names collation ``collation_id`` and that sends no
    SET NAMES after it (as mysql2 and raw clients do): PyMySQL itself logs in with its
    character set's default collation and names another with a SET NAMES."""
    conn = gw.connect(user=user, database="shop", read_timeout=60, defer_connect=True)
    conn.set_character_set = lambda *args, **kwargs: None
    named = pymysql.charset.charset_by_id(collation_id)
    with mock.patch.object(pymysql.connections, "charset_by_name", lambda _: named):
        conn.connect()
    return conn


def mosquitto(program: str, broker: Broker, user: str, *args: str) -> list[str]:
    """The command line of ``mosquitto_sub``/``mosquitto_pub`` as ``user`` of the broker."""
    return [
        program,
        "-h",
        broker.host,
        "-p",
        str(broker.port),
        "-u",
        user,
        "-P",
        broker.users[user],
        *args,
    ]


def publish(broker: Broker, user: str, topic: str, message: str, *, retain: bool = False) -> None:
    """One message with QoS 1, as ``user``."""
    args = ["-q", "1", "-t", topic, "-m", message] + (["-r"] if retain else [])
    subprocess.run(mosquitto("mosquitto_pub", broker, user, *args), check=True, timeout=30)


def operator_config(
    directory: Path, broker: Broker, *, bus: bool = True, gateway: GatewayProcess | None = None
) -> Path:
    """An operator's configuration: the sections every file needs, and ``[bus]`` with
    the broker's operator user; with ``gateway``, its ledger (and ``ledger.pub`` beside
    its key), as on a gateway's own machine."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "orders.pw").write_text("unused\n")
    (directory / "ledger.key").write_bytes(b"\x00" * 32)
    (directory / "bus.pw").write_text(broker.users[broker.operator_user] + "\n")
    ledger, key = Path("ledger.db"), Path("ledger.key")
    if gateway is not None:
        ledger, key = gateway.ledger, gateway.workdir / "ledger.key"
        private = serialization.load_pem_private_key(key.read_bytes(), None)
        key.with_name("ledger.pub").write_bytes(
            private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    text = f"""
[appliance]
name = "operator-desk"
listen = "127.0.0.1:3307"
default_target = "orders"
state_dir = "state"

[[targets]]
name = "orders"
host = "127.0.0.1"
user = "unused"
password_file = "orders.pw"

[ledger]
path = "{ledger}"
signing_key = "{key}"
"""
    if bus:
        text += f"""
[bus]
url = "mqtt://{broker.host}:{broker.port}"
topic_prefix = "{broker.prefix}"
username = "{broker.operator_user}"
password_file = "bus.pw"
"""
    path = directory / "operator.toml"
    path.write_text(text)
    return path


class BrokerGate:
    """A TCP relay to the broker that holds every connection until ``open()``: a gateway
    behind it starts while its first connection attempt is still under way."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.opened = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def open(self) -> None:
        self.opened.set()

    def close(self) -> None:
        self.opened.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        self.opened.wait()
        try:
            upstream = socket.create_connection((self.broker.host, self.broker.port))
        except OSError:
            client.close()
            return
        self._sockets.append(upstream)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until either side closes."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
