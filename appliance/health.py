"""``sqlgate health``: is the gateway of a configuration serving? (SPEC §3, §13)

Three checks, each reported on one line (``ok``, ``FAIL`` or ``skip``, the check, what it
looked at, and why):

- ``listener``: a TCP connection to ``[appliance] listen`` (a wildcard address is reached
  through loopback) is accepted and answered with the gateway's MySQL greeting (the
  backend's server version marked ``-sqlgate``) or with an error the gateway wrote
  itself (``sqlgate: ...``; the gateway runs, its default target does not answer: still
  ``ok``, with the refusal shown). The connection is closed before any login: no ledger
  record is written, the gateway logs a session closed by the client.
- ``ledger``: the ledger file opens read-only, and the records after its last signed
  checkpoint (its tail) read back and verify against the signing key's public half,
  as the gateway itself checks them when it opens the file; the file and its directory
  are writable and its file system not full; and no other process holds its write lock
  (the gateway cannot commit, and refuses statements, while one does).
- ``broker``: with a ``[bus]`` section, an MQTT connection with the configured
  credentials (and TLS for ``mqtts://``) is accepted; ``skip`` without one.

All checks run even when one fails; each is bounded by ``timeout_s`` seconds. Nothing here
writes: the health check can run every few seconds beside a busy gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import socket
import sqlite3
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from appliance.config import BusConfig, Config
from appliance.ledger import store
from appliance.ledger.chain import GENESIS_HASH, LedgerError, Verifier, load_private_key
from appliance.mysql.errors import RemoteProtocolError
from appliance.mysql.packets import parse_err, parse_greeting
from appliance.mysql.wire import Packet, PacketReader

__all__ = ["DEFAULT_TIMEOUT_S", "Check", "check_broker", "check_ledger", "check_listener", "run"]

DEFAULT_TIMEOUT_S = 3.0
GREETING_MARKER = "-sqlgate"  # the gateway appends it to the backend's server version
ERR_PREFIX = "sqlgate:"  # every error the gateway writes itself starts so
_MAX_GREETING = 64 * 1024
_ERR = 0xFF

_quiet_log = logging.getLogger("sqlgate.health.mqtt")
_quiet_log.addHandler(logging.NullHandler())
_quiet_log.propagate = False  # the command's output is its own: no library chatter


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome: ``ok`` is None when it was skipped."""

    name: str  # "listener", "ledger", "broker"
    subject: str  # what was checked: an address, a file, a URL
    ok: bool | None
    detail: str = ""  # why it failed; for a pass, what was seen

    def line(self) -> str:
        """``ok listener 127.0.0.1:3307 (...)``, ``FAIL broker mqtt://...: why``."""
        verdict = "skip" if self.ok is None else "ok" if self.ok else "FAIL"
        text = f"{verdict} {self.name} {self.subject}"
        if not self.detail:
            return text
        return f"{text}: {self.detail}" if self.ok is False else f"{text} ({self.detail})"


def run(config: Config, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Check]:
    """Every check, in order: listener, ledger, broker."""
    return [
        check_listener(config, timeout_s),
        check_ledger(config),
        asyncio.run(check_broker(config.bus, timeout_s)),
    ]


# --------------------------------------------------------------------------------------
# listener


def _display(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _dial_addresses(host: str) -> list[str]:
    """Where to connect for a listener on ``host``: a wildcard is reached on loopback
    (``[::]`` usually accepts IPv4 too, and some containers have no ``::1``)."""
    address = ipaddress.ip_address(host)
    if not address.is_unspecified:
        return [host]
    return ["::1", "127.0.0.1"] if address.version == 6 else ["127.0.0.1"]


def _reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def check_listener(config: Config, timeout_s: float = DEFAULT_TIMEOUT_S) -> Check:
    app = config.appliance
    subject = app.listen
    if app.listen_port == 0:
        return Check("listener", subject, False, "port 0: the system picks one, nothing to check")
    deadline = time.monotonic() + timeout_s
    dial = _dial_addresses(app.listen_host)
    failures: list[str] = []
    for host in dial:
        where = _display(host, app.listen_port)
        try:
            sock = socket.create_connection(
                (host, app.listen_port), timeout=max(0.05, deadline - time.monotonic())
            )
        except OSError as exc:
            failures.append(f"{where} {_reason(exc)}" if len(dial) > 1 else _reason(exc))
            continue
        with sock:
            return _greeting_check(sock, where, deadline)
    if len(dial) == 1:
        subject = _display(dial[0], app.listen_port)
    return Check("listener", subject, False, "; ".join(failures))


def _greeting_check(sock: socket.socket, where: str, deadline: float) -> Check:
    try:
        packet = _first_packet(sock, deadline)
    except TimeoutError:
        return Check("listener", where, False, "accepted, but sent no greeting in time")
    except RemoteProtocolError as exc:
        return Check("listener", where, False, f"accepted, but answered with no MySQL: {exc}")
    except OSError as exc:
        return Check("listener", where, False, f"accepted, then: {_reason(exc)}")
    if packet is None:
        return Check("listener", where, False, "accepted, then closed without a greeting")
    payload = packet.payload
    try:
        if payload[:1] == bytes((_ERR,)):
            err = parse_err(payload)
            if err.message.startswith(ERR_PREFIX):
                return Check("listener", where, True, f"answered, refusing: {err.message}")
            return Check("listener", where, False, f"not the gateway: error {err.code}")
        greeting = parse_greeting(payload)
    except RemoteProtocolError as exc:
        return Check("listener", where, False, f"answered with no MySQL greeting: {exc}")
    version = greeting.server_version.decode("utf-8", errors="replace")
    if not version.endswith(GREETING_MARKER):
        return Check("listener", where, False, f"not the gateway: server version {version}")
    return Check("listener", where, True, f"backend {version.removesuffix(GREETING_MARKER)}")


def _first_packet(sock: socket.socket, deadline: float) -> Packet | None:
    """The first logical packet, or None when the peer closed first."""
    reader = PacketReader(_MAX_GREETING)
    while (packet := reader.next_packet()) is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        data = sock.recv(4096)
        if not data:
            return None
        reader.feed(data)
    return packet


# --------------------------------------------------------------------------------------
# ledger


def check_ledger(config: Config) -> Check:
    """Open read-only and verify the records after the last checkpoint."""
    path = config.ledger.path
    subject = str(path)

    def fail(problem: str) -> Check:
        prefix = f"{path}: "
        return Check("ledger", subject, False, problem.removeprefix(prefix))

    try:
        public_key = load_private_key(config.ledger.signing_key).public_key()
        conn = store.open_ledger(path)
    except LedgerError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(_reason(exc))
    try:
        conn.execute("BEGIN")  # one snapshot while the gateway keeps writing
        row = conn.execute(store.LAST_CHECKPOINT).fetchone()
        start = int(row[0]) if row else 1
        verifier = Verifier(
            public_key, after_seq=start - 1, after_hash=None if row else GENESIS_HASH
        )
        last_body = ""
        for seq, body in conn.execute(
            "SELECT seq, body FROM records NOT INDEXED WHERE seq >= ? ORDER BY seq", (start,)
        ):
            if not isinstance(body, str):
                verifier.fail("the stored record is not text", seq)
                break
            if not verifier.feed_body(body, seq):
                break
            last_body = body
    except sqlite3.Error as exc:
        return fail(f"cannot read: {exc}")
    finally:
        conn.close()
    result = verifier.result()
    if not result.ok:
        return fail(f"record {result.first_bad_seq}: {result.reason}")
    unwritable = _unwritable(path)
    if unwritable is not None:
        return fail(f"{unwritable}: the gateway refuses every statement (1105) until it is")
    holder = _write_lock_holder(path, LOCK_WINDOW_S)
    if holder is not None:
        return fail(
            f"its write lock has been held by {holder} for {LOCK_WINDOW_S:g} s and more: "
            "the gateway cannot commit, and refuses statements (1105), until it is released"
        )
    if result.last_seq == 0:
        return Check("ledger", subject, True, "no records yet")
    signed = f"last checkpoint at seq {start}" if row else "no checkpoint yet"
    return Check(
        "ledger",
        subject,
        True,
        f"seq {result.last_seq} at {_ts(last_body)}, {signed}, {result.unsigned} unsigned",
    )


_MIN_FREE_BYTES = 1 << 20  # less room than this and a commit of a large statement fails


def _unwritable(path: Path) -> str | None:
    """Why the gateway could not append to the ledger now, without writing to it: the
    file or its directory (the WAL and its index go there) not writable by this user,
    or its file system (nearly) full."""
    for target, what in ((path, "the file"), (path.parent, "its directory")):
        if not os.access(target, os.W_OK):
            return f"{what} is not writable"
    try:
        fs = os.statvfs(path)
    except OSError:
        return None
    free = fs.f_bavail * fs.f_frsize
    if free < _MIN_FREE_BYTES:
        return f"its file system is full ({free // 1024} KiB free)"
    return None


LOCK_WINDOW_S = 0.5  # a lock held this long is not one of the gateway's commits (µs to ms)
_LOCK_LOOK_S = 0.02
# SQLite's unix VFS takes a write transaction's lock on this byte of the WAL index file
# (``-shm``): UNIX_SHM_BASE (120) + WAL_WRITE_LOCK (0).
_WAL_WRITE_LOCK_BYTE = 120
_FLOCK = "hhqqi4x"  # struct flock on 64-bit Linux: type, whence, start, len, pid


def _write_lock_holder(path: Path, window_s: float) -> str | None:
    """Who has held the ledger's write lock at every look over ``window_s`` seconds
    (``process 4242 (sqlite3)``), or None: nobody, or not throughout. It only asks the
    kernel (``F_GETLK``): the lock is not taken, the gateway's commits are not delayed."""
    shm = path.with_name(path.name + "-shm")
    try:
        fd = os.open(shm, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no WAL index: nobody has the file open in WAL mode
    try:
        ends = time.monotonic() + window_s
        holders: set[int] = set()
        while True:
            ask = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _WAL_WRITE_LOCK_BYTE, 1, 0)
            try:
                kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, ask))
            except OSError:
                return None
            if kind == fcntl.F_UNLCK:
                return None
            holders.add(pid)
            if time.monotonic() >= ends:
                break
            time.sleep(_LOCK_LOOK_S)
    finally:
        os.close(fd)  # this process held no lock on the file: closing releases none
    if len(holders) != 1 or 0 in holders:
        return "another process"  # (its pid not visible from here, or several in turn)
    pid = holders.pop()
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return f"process {pid}"
    return f"process {pid} ({name})"


def _ts(body: str) -> str:
    try:
        return str(json.loads(body).get("ts", "?"))
    except (ValueError, AttributeError):
        return "?"


# --------------------------------------------------------------------------------------
# broker


async def check_broker(bus: BusConfig, timeout_s: float = DEFAULT_TIMEOUT_S) -> Check:
    """Connect with the configured credentials (clean session, no will), then leave."""
    if not bus.enabled:
        return Check("broker", "-", None, "no [bus] section")
    try:
        password = None if bus.password is None else bus.password.decode("utf-8")
    except UnicodeDecodeError:
        return Check("broker", bus.url, False, f"{bus.password_file}: the password is not UTF-8")
    try:
        tls = bus.tls_context()
    except (OSError, ValueError) as exc:
        return Check("broker", bus.url, False, f"TLS settings: {exc}")
    client = aiomqtt.Client(
        bus.host,
        bus.port,
        username=bus.username,
        password=password,
        identifier=f"sqlgate-health-{os.urandom(4).hex()}",
        logger=_quiet_log,
        timeout=timeout_s,
        keepalive=max(5, int(timeout_s * 2)),
        tls_context=tls,
        clean_session=True,
    )
    # the TCP and TLS handshakes run in a thread with paho's own limit (5 s), which the
    # timeout below cannot cut short: a TLS listener that never answers held it past it
    with contextlib.suppress(AttributeError, ValueError):
        client._client.connect_timeout = timeout_s
    try:
        async with asyncio.timeout(timeout_s + 1.0):
            async with client:
                pass
    except aiomqtt.MqttCodeError as exc:  # a CONNACK that says no
        who = f"as '{bus.username}'" if bus.username else "without credentials"
        return Check("broker", bus.url, False, f"refused the connection {who}: {exc}")
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        return Check("broker", bus.url, False, _mqtt_reason(exc, timeout_s))
    except Exception as exc:  # a health check reports, it never crashes
        return Check("broker", bus.url, False, f"{type(exc).__name__}: {exc}")
    who = f"as '{bus.username}'" if bus.username else "anonymously"
    return Check("broker", bus.url, True, f"connected {who}")


def _mqtt_reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g}s"
    text = str(exc) or type(exc).__name__
    if text.startswith("[Errno ") and "] " in text:  # "[Errno 111] Connection refused"
        text = text.partition("] ")[2]
    return text[:1].lower() + text[1:]
