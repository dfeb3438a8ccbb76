"""``sqlgate net probe``: is a connection to this target answered by the gateway?

From the caller's vantage point (whatever network namespace the process is in), connect
to the target's address and port the way a client would and read the first MySQL packet.
The gateway marks its greeting by appending ``-sqlgate`` to the backend's server version,
and its own refusals are ERR packets whose message starts with ``sqlgate:``; either one
proves the connection was intercepted. Anything else (the database's own greeting, no
answer, not MySQL at all) means it was not, and the result says why in one line.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from appliance.mysql.errors import RemoteProtocolError
from appliance.mysql.packets import parse_err, parse_greeting
from appliance.mysql.wire import Packet, PacketReader

__all__ = ["GREETING_MARKER", "ProbeResult", "format_result", "probe"]

GREETING_MARKER = "-sqlgate"  # appended by the gateway to the backend's server version
ERR_PREFIX = "sqlgate:"  # how every error the gateway itself writes begins
_MAX_GREETING = 64 * 1024  # real greetings are ~100 bytes; a bound against non-MySQL peers
_ERR = 0xFF


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What the probe saw; ``detail`` is one line that says why."""

    intercepted: bool
    server_version: str  # "" when there was no greeting
    detail: str
    elapsed_ms: float
    target: str = ""  # host:port as probed ([v6]:port)


def _display(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def probe(host: str, port: int = 3306, timeout: float = 3.0) -> ProbeResult:
    """Connect to ``host:port``, read the greeting and decide; never raises for network
    trouble (that is a result too). ``timeout`` bounds the whole probe, in seconds."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not between 1 and 65535")
    target = _display(host, port)
    started = time.monotonic()
    deadline = started + timeout

    def result(intercepted: bool, detail: str, version: str = "") -> ProbeResult:
        elapsed = (time.monotonic() - started) * 1000.0
        return ProbeResult(intercepted, version, detail, round(elapsed, 3), target)

    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        return result(False, _no_answer(target, f"timed out after {timeout:g}s"))
    except socket.gaierror as exc:
        return result(False, f"cannot resolve '{host}': {exc.strerror or exc}")
    except UnicodeError:  # a name the IDNA codec refuses (an empty or 64+ character label)
        return result(False, f"cannot resolve '{host}': not a valid host name")
    except OSError as exc:
        return result(False, _no_answer(target, exc.strerror or str(exc) or type(exc).__name__))
    with sock:
        peer = _display(*sock.getpeername()[:2])
        try:
            packet = _first_packet(sock, deadline)
        except TimeoutError:
            return result(
                False,
                f"{peer} accepted the connection but sent no greeting within {timeout:g}s; "
                "it is not a MySQL server or the gateway",
            )
        except RemoteProtocolError as exc:
            return result(False, f"{peer} answered, but not with a MySQL greeting: {exc}")
        except OSError as exc:
            reason = exc.strerror or str(exc)
            return result(False, f"{peer} accepted the connection, then: {reason}")
        if packet is None:
            return result(
                False,
                f"{peer} closed the connection without a greeting; "
                "it is not a MySQL server or the gateway",
            )
    return result(*_decide(packet, peer))


def _no_answer(target: str, reason: str) -> str:
    return (
        f"no answer from {target}: {reason} — with the gateway's rules in place and the "
        "gateway stopped, connections fail closed"
    )


def _first_packet(sock: socket.socket, deadline: float) -> Packet | None:
    """The first logical packet, or None when the peer closed first."""
    reader = PacketReader(_MAX_GREETING)
    first = b""
    while True:
        try:
            packet = reader.next_packet()
        except RemoteProtocolError:
            problem = f"its first bytes {first[:16]!r} are not a MySQL packet"
            raise RemoteProtocolError(problem) from None
        if packet is not None:
            return packet
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        data = sock.recv(4096)
        if not data:
            return None
        first = first or data
        reader.feed(data)


def _decide(packet: Packet, peer: str) -> tuple[bool, str, str]:
    """Intercepted or not, why, and the server version, from the first packet."""
    payload = packet.payload
    if payload[:1] == bytes((_ERR,)):
        try:
            err = parse_err(payload)
        except RemoteProtocolError as exc:
            return False, f"{peer} answered with a broken ERR packet: {exc}", ""
        if err.message.startswith(ERR_PREFIX):
            return True, f"answered by the sqlgate gateway, which refused: {err.message}", ""
        detail = (
            f"answered by the database itself with error {err.code}: {err.message} "
            "— the connection was not intercepted"
        )
        return False, detail, ""
    try:
        greeting = parse_greeting(payload)
    except RemoteProtocolError as exc:
        return False, f"{peer} answered, but not with a MySQL greeting: {exc}", ""
    version = greeting.server_version.decode("utf-8", errors="replace")
    if version.endswith(GREETING_MARKER):
        backend = version.removesuffix(GREETING_MARKER)
        return True, f"answered by the sqlgate gateway (backend {backend})", version
    detail = (
        f"answered by the database itself: server version {version} has no "
        f"'{GREETING_MARKER}' mark — the connection was not intercepted"
    )
    return False, detail, version


def format_result(r: ProbeResult) -> str:
    """One line for the CLI: verdict, target, why, and how long it took."""
    verdict = "intercepted" if r.intercepted else "NOT intercepted"
    where = f" {r.target}" if r.target else ""
    return f"{verdict}{where}: {r.detail} ({r.elapsed_ms:.1f} ms)"
