"""netconfig.probe: who answers a connection to the target, from the caller's vantage point.

Fake servers on loopback send one scripted first packet (a greeting with or without the
gateway's mark, an ERR); the lab test probes the db's own address from the client
namespace through the gateway's real redirect.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import Lab, MakeConfig, listener

from appliance.mysql.constants import Capability
from appliance.mysql.packets import Greeting, build_err, build_greeting
from appliance.mysql.wire import frame
from netconfig import nft
from netconfig.nft import _inside
from netconfig.plan import plan_rules
from netconfig.probe import ProbeResult, format_result, probe

MARIADB = b"5.5.5-10.11.19-MariaDB-0+deb12u1"


def greeting(version: bytes) -> bytes:
    caps = int(
        Capability.LONG_PASSWORD
        | Capability.PROTOCOL_41
        | Capability.SECURE_CONNECTION
        | Capability.PLUGIN_AUTH
    )
    payload = build_greeting(
        Greeting(
            server_version=version,
            connection_id=42,
            scramble=bytes(range(1, 21)),
            capabilities=caps,
            charset=45,
            status=2,
            auth_plugin="mysql_native_password",
        )
    )
    return frame(0, payload)


class FakeServer:
    """Accepts connections on ``sock`` and writes ``script`` to each (in ``chunks``-byte
    pieces), then waits for the client to close; ``None`` closes at once."""

    def __init__(self, sock: socket.socket, script: bytes | None, chunks: int = 0) -> None:
        self.sock = sock
        self.script = script
        self.chunks = chunks
        self.sock.settimeout(0.1)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                if self.script is None:
                    continue
                step = self.chunks or len(self.script) or 1
                for i in range(0, len(self.script), step):
                    conn.sendall(self.script[i : i + step])
                conn.settimeout(5)
                try:
                    conn.recv(1)  # until the prober closes
                except OSError:
                    pass

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.sock.close()


Serve = Callable[..., FakeServer]  # serve(script, chunks=0, host="127.0.0.1")


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(script, host=...)``-style factory for loopback servers, closed afterwards."""
    servers: list[FakeServer] = []

    class Local(FakeServer):
        def __init__(self, script: bytes | None, chunks: int = 0, host: str = "127.0.0.1") -> None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sock.listen(4)
            super().__init__(sock, script, chunks)
            servers.append(self)

    yield Local
    for server in servers:
        server.close()


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_marked_greeting_is_intercepted(serve: Serve) -> None:
    server = serve(greeting(MARIADB + b"-sqlgate"))
    result = probe("127.0.0.1", server.port)
    assert result.intercepted
    assert result.server_version == "5.5.5-10.11.19-MariaDB-0+deb12u1-sqlgate"
    assert result.detail == (
        "answered by the sqlgate gateway (backend 5.5.5-10.11.19-MariaDB-0+deb12u1)"
    )
    assert result.target == f"127.0.0.1:{server.port}"
    assert 0 < result.elapsed_ms < 3000


def test_plain_greeting_is_not_intercepted(serve: Serve) -> None:
    server = serve(greeting(MARIADB))
    result = probe("127.0.0.1", server.port)
    assert not result.intercepted
    assert result.server_version == MARIADB.decode()
    assert result.detail == (
        f"answered by the database itself: server version {MARIADB.decode()} has no "
        "'-sqlgate' mark — the connection was not intercepted"
    )


def test_nothing_listening_is_no_answer() -> None:
    port = free_port()
    result = probe("127.0.0.1", port)
    assert not result.intercepted and result.server_version == ""
    assert result.detail == (
        f"no answer from 127.0.0.1:{port}: Connection refused — with the gateway's rules in "
        "place and the gateway stopped, connections fail closed"
    )


def test_gateway_err_greeting_is_intercepted(serve: Serve) -> None:
    message = "sqlgate: cannot reach target 'orders' at 10.78.2.10:3306: Connection refused"
    server = serve(frame(0, build_err(1105, message)))
    result = probe("127.0.0.1", server.port)
    assert result.intercepted
    assert result.server_version == ""
    assert result.detail == f"answered by the sqlgate gateway, which refused: {message}"


def test_database_err_greeting_is_not_intercepted(serve: Serve) -> None:
    message = "Host '10.78.1.10' is not allowed to connect to this MariaDB server"
    server = serve(frame(0, build_err(1130, message)))
    result = probe("127.0.0.1", server.port)
    assert not result.intercepted
    assert result.detail == (
        f"answered by the database itself with error 1130: {message} "
        "— the connection was not intercepted"
    )


def test_greeting_in_pieces_and_over_ipv6(serve: Serve) -> None:
    server = serve(greeting(MARIADB + b"-sqlgate"), chunks=3, host="::1")
    result = probe("::1", server.port)
    assert result.intercepted, result.detail
    assert result.target == f"[::1]:{server.port}"


def test_not_mysql(serve: Serve) -> None:
    server = serve(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    result = probe("127.0.0.1", server.port, timeout=1.0)
    assert not result.intercepted
    assert result.detail == (
        f"127.0.0.1:{server.port} answered, but not with a MySQL greeting: its first bytes "
        "b'HTTP/1.1 400 Bad' are not a MySQL packet"
    )

    closer = serve(None)
    result = probe("127.0.0.1", closer.port)
    assert not result.intercepted
    assert result.detail == (
        f"127.0.0.1:{closer.port} closed the connection without a greeting; "
        "it is not a MySQL server or the gateway"
    )


def test_silence_is_bounded_by_the_timeout(serve: Serve) -> None:
    server = serve(b"")  # accepts, says nothing
    began = time.monotonic()
    result = probe("127.0.0.1", server.port, timeout=0.3)
    assert time.monotonic() - began < 1.5
    assert not result.intercepted
    assert result.detail == (
        f"127.0.0.1:{server.port} accepted the connection but sent no greeting within 0.3s; "
        "it is not a MySQL server or the gateway"
    )


def test_bad_port_and_bad_name() -> None:
    with pytest.raises(ValueError, match="port 0"):
        probe("127.0.0.1", 0)
    result = probe("no-such-host.invalid", 3306, timeout=1.0)
    assert not result.intercepted
    assert result.detail.startswith("cannot resolve 'no-such-host.invalid': ")


@pytest.mark.parametrize("name", ["db..example", "a" * 64 + ".example"])
def test_a_name_the_resolver_cannot_encode_is_a_result(name: str) -> None:
    """An empty or over-long label fails in the IDNA codec, before any lookup."""
    result = probe(name, 3306, timeout=1.0)
    assert not result.intercepted
    assert result.detail == f"cannot resolve '{name}': not a valid host name"


def test_format_result() -> None:
    yes = ProbeResult(
        True,
        "10.11-sqlgate",
        "answered by the sqlgate gateway (backend 10.11)",
        1.234,
        "10.78.2.10:3306",
    )
    assert format_result(yes) == (
        "intercepted 10.78.2.10:3306: answered by the sqlgate gateway (backend 10.11) (1.2 ms)"
    )
    no = ProbeResult(
        False, "", "no answer from [fd78::2:10]:3306: timed out", 3000.0, "[fd78::2:10]:3306"
    )
    assert format_result(no) == (
        "NOT intercepted [fd78::2:10]:3306: no answer from [fd78::2:10]:3306: timed out (3000.0 ms)"
    )
    assert "\n" not in format_result(no)


# --- through the lab: the client probes the db's own address -------------------------------


def test_probe_from_the_client_namespace(lab: Lab, make_config: MakeConfig) -> None:
    plan = plan_rules(make_config([("orders", lab.db_v4), ("orders6", lab.db_v6)]))
    nft.apply(plan, netns=lab.gateway)
    gateway = [
        FakeServer(listener(lab.gateway, "0.0.0.0", 3307), greeting(MARIADB + b"-sqlgate")),
        FakeServer(listener(lab.gateway, "::", 3307), greeting(MARIADB + b"-sqlgate")),
    ]
    database = [
        FakeServer(listener(lab.db, lab.db_v4, 3306), greeting(MARIADB)),
        FakeServer(listener(lab.db, lab.db_v6, 3306), greeting(MARIADB)),
    ]

    def from_client(host: str) -> ProbeResult:
        with _inside(lab.client):  # this thread's sockets are the client's
            return probe(host, 3306, timeout=2.0)

    try:
        for host in (lab.db_v4, lab.db_v6):
            assert from_client(host).intercepted  # redirected to the gateway's listener
        for server in gateway:
            server.close()
        stopped = from_client(lab.db_v4)  # rules in place, gateway stopped: fail closed
        assert not stopped.intercepted
        assert stopped.detail.startswith(f"no answer from {lab.db_v4}:3306: Connection refused")
        nft.remove(netns=lab.gateway)  # plain routing again: the database answers itself
        for host in (lab.db_v4, lab.db_v6):
            direct = from_client(host)
            assert not direct.intercepted
            assert direct.detail.startswith("answered by the database itself")
    finally:
        for server in gateway + database:
            if not server.stopping.is_set():
                server.close()
