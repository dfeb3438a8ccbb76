"""Scripted transcripts for the sans-io ``Session``, in the manner of mitmproxy's Playbook.

A transcript feeds one ``Session`` bytes from either peer (``>>``) and states, byte for
byte, what the session must answer on each leg and which events it must report (``<<``)::

    assert (
        Playbook(session)
        >> server(greeting)
        << expect_client(our_greeting)
        >> client(hello)
        << expect_event(ClientAuthenticated)
        << expect_server(login)
    )

Steps run as soon as they are written, left to right, so a failure points at its own
line; the message then repeats the transcript up to the failing step. The rules:

* ``>> client(data)`` / ``>> server(data)`` feed bytes; once a leg speaks TLS they are
  plaintext that the playbook's own TLS peer encrypts first.
* ``<< expect_client(x)`` / ``<< expect_server(x)`` consume what the session sent on that
  leg (plaintext again, decrypted by the peer once TLS is up): ``bytes`` must be the exact
  next bytes; a callable receives the next whole packet (``wire.Packet``) and may assert on
  it (returning ``False`` fails the step).
* ``<< expect_event(Kind, **fields)`` consumes the next event, which must be a ``Kind``
  whose attributes equal ``fields`` (a callable predicate works in place of ``Kind``).
* Before every ``>>`` step, and when the playbook is asserted at the end, everything the
  session has said must have been expected: nothing unexpected may pass unnoticed.
* ``>> allow(n)`` / ``>> refuse(n, code, message)`` answer the ``CommandReceived`` of the
  command with id ``n`` (ids count from 1 per session); ``allow()`` takes the oldest
  unanswered one.
* ``>> client_tls(ctx)`` / ``>> server_tls(ctx)`` run a real TLS handshake over
  ``ssl.MemoryBIO`` between the session and a peer the playbook plays; bytes the session
  already sent on that leg and that no expectation consumed are the start of its TLS.

No sockets, no threads, no clock: the same transcript gives the same bytes every time.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lab.certs import rsa_key_pem

from appliance.mysql import packets
from appliance.mysql.constants import (
    NATIVE_PASSWORD,
    UTF8MB4_GENERAL_CI,
    Capability,
    FieldType,
    ServerStatus,
)
from appliance.mysql.relay import (
    ClientCommand,
    CommandReceived,
    Phase,
    Session,
    SessionClosed,
)
from appliance.mysql.wire import Packet, PacketReader, frame, frames_needed

__all__ = [
    "Playbook",
    "Reply",
    "Step",
    "TlsFiles",
    "allow",
    "client",
    "client_closes",
    "client_hello",
    "client_tls",
    "column",
    "command",
    "describe",
    "expect_client",
    "expect_closed",
    "expect_event",
    "expect_phase",
    "expect_server",
    "make_rsa_key",
    "make_tls_files",
    "query",
    "refuse",
    "server",
    "server_closes",
    "server_greeting",
    "server_tls",
    "ssl_request",
]


# ------------------------------------------------------------------------------ TLS peer


class _TlsPeer:
    """The far end of one leg's TLS, played by the test: an SSLObject over memory BIOs."""

    def __init__(self, ctx: ssl.SSLContext, *, server_side: bool, hostname: str | None) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=hostname
        )
        self.done = False

    def handshake(self) -> None:
        if self.done:
            return
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            return
        self.done = True

    def take(self) -> bytes:
        return self.outgoing.read() if self.outgoing.pending else b""

    def decrypt(self, ciphertext: bytes) -> bytes:
        self.incoming.write(ciphertext)
        if not self.done:
            self.handshake()
            if not self.done:
                return b""
        out = []
        while True:
            try:
                chunk = self.obj.read(1 << 20)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                break
            if not chunk:
                break
            out.append(chunk)
        return b"".join(out)

    def encrypt(self, plaintext: bytes) -> bytes:
        self.obj.write(plaintext)
        return self.take()


# ------------------------------------------------------------------------------ playbook


class _Leg:
    """What the session sent one peer and no expectation has consumed yet."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.buf = bytearray()
        self.peer: _TlsPeer | None = None
        self.received = 0

    def receive(self, data: bytes) -> None:
        self.received += len(data)
        if self.peer is not None:
            data = self.peer.decrypt(data)
        self.buf += data


class Step:
    """One line of a transcript."""

    def apply(self, pb: Playbook) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class Playbook:
    """Drives one ``Session`` through a transcript; see the module docstring for the rules."""

    def __init__(self, session: Session, *, ignore: Iterable[type] = ()) -> None:
        self.session = session
        self.ignore = tuple(ignore)
        self.client_leg = _Leg("client")
        self.server_leg = _Leg("server")
        self.events: deque[Any] = deque()
        self.commands: dict[int, ClientCommand] = {}
        self.answered: set[int] = set()
        self.log: list[str] = []

    # -- the transcript operators

    def __rshift__(self, step: Step) -> Playbook:
        self._check_settled(before=step)
        self._run(step)
        return self

    def __lshift__(self, step: Step) -> Playbook:
        self._run(step)
        return self

    def __bool__(self) -> bool:
        self._check_settled(before=None)
        return True

    # -- machinery

    def _run(self, step: Step) -> None:
        self.log.append(repr(step))
        try:
            step.apply(self)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n\n{self._transcript()}") from None
        except Exception as exc:
            raise AssertionError(
                f"{type(exc).__name__} escaped the session: {exc}\n\n{self._transcript()}"
            ) from exc

    def _transcript(self) -> str:
        lines = ["transcript:"]
        for i, entry in enumerate(self.log):
            mark = "!!" if i == len(self.log) - 1 else "  "
            lines.append(f"{mark} {entry}")
        return "\n".join(lines)

    def collect(self) -> None:
        """Take everything the session produced into the legs and the event queue."""
        s = self.session
        for leg, chunks in (
            (self.client_leg, s.take_client_output()),
            (self.server_leg, s.take_server_output()),
        ):
            data = b"".join(chunks)
            if data:
                leg.receive(data)
        for ev in s.take_events():
            if isinstance(ev, CommandReceived):
                self.commands[ev.cmd.id] = ev.cmd
            if self.ignore and isinstance(ev, self.ignore):
                continue
            self.events.append(ev)

    def _check_settled(self, before: Step | None) -> None:
        problems = []
        for leg in (self.client_leg, self.server_leg):
            if isinstance(before, _TlsHandshake) and before.leg == leg.name:
                continue  # those bytes are the start of the handshake
            if leg.buf:
                problems.append(f"unexpected bytes to the {leg.name}:\n{describe(bytes(leg.buf))}")
        if self.events:
            problems.append("unexpected events:\n" + "\n".join(f"    {e!r}" for e in self.events))
        if problems:
            where = f"before {before!r}" if before is not None else "at the end"
            raise AssertionError(
                f"{where}: " + "\n".join(problems) + "\n\n" + self._transcript() + "\n"
            )

    def leg(self, name: str) -> _Leg:
        return self.client_leg if name == "client" else self.server_leg


# -------------------------------------------------------------------------------- inputs


@dataclass
class _Data(Step):
    leg: str
    data: bytes
    chunk: int | None

    def apply(self, pb: Playbook) -> None:
        leg = pb.leg(self.leg)
        feed = pb.session.client_data if self.leg == "client" else pb.session.server_data
        size = self.chunk or max(len(self.data), 1)
        for i in range(0, max(len(self.data), 1), size):
            piece = self.data[i : i + size]
            if leg.peer is not None:
                piece = leg.peer.encrypt(piece)
            feed(piece)
            pb.collect()

    def __repr__(self) -> str:
        how = f", in {self.chunk}-byte chunks" if self.chunk else ""
        return f">> {self.leg}({_short(self.data)}{how})"


def client(data: bytes, *, chunk: int | None = None) -> Step:
    """The client sends ``data`` (plaintext; encrypted by the playbook once TLS is up)."""
    return _Data("client", data, chunk)


def server(data: bytes, *, chunk: int | None = None) -> Step:
    """The backend sends ``data``."""
    return _Data("server", data, chunk)


@dataclass
class _Closed(Step):
    leg: str

    def apply(self, pb: Playbook) -> None:
        if self.leg == "client":
            pb.session.client_closed()
        else:
            pb.session.server_closed()
        pb.collect()

    def __repr__(self) -> str:
        return f">> {self.leg}_closes()"


def client_closes() -> Step:
    return _Closed("client")


def server_closes() -> Step:
    return _Closed("server")


@dataclass
class _Decision(Step):
    cmd_id: int | None
    refusal: tuple[int, str] | None
    why: str | None = None

    def apply(self, pb: Playbook) -> None:
        cmd_id = self.cmd_id
        if cmd_id is None:
            pending = sorted(set(pb.commands) - pb.answered)
            assert pending, "no CommandReceived is waiting for an answer"
            cmd_id = pending[0]
        assert cmd_id in pb.commands, f"no CommandReceived for command {cmd_id} yet"
        pb.answered.add(cmd_id)
        cmd = pb.commands[cmd_id]
        if self.refusal is None:
            pb.session.allow(cmd)
        else:
            pb.session.refuse(cmd, *self.refusal, self.why)
        pb.collect()

    def __repr__(self) -> str:
        which = "" if self.cmd_id is None else str(self.cmd_id)
        if self.refusal is None:
            return f">> allow({which})"
        why = "" if self.why is None else f", why={self.why!r}"
        return f">> refuse({which}, {self.refusal[0]}, {self.refusal[1]!r}{why})"


def allow(cmd_id: int | None = None) -> Step:
    """The shell lets command ``cmd_id`` (default: the oldest unanswered) go to the backend."""
    return _Decision(cmd_id, None)


def refuse(cmd_id: int | None, code: int, message: str, why: str | None = None) -> Step:
    """The shell answers command ``cmd_id`` with an ERR of its own (``why``: for the
    ledger, on its completion)."""
    return _Decision(cmd_id, (code, message), why)


@dataclass
class _ShellCall(Step):
    """The shell answers something other than a command (a token it verified, ...)."""

    name: str
    call: Callable[[Session], None]

    def apply(self, pb: Playbook) -> None:
        self.call(pb.session)
        pb.collect()

    def __repr__(self) -> str:
        return f">> shell: {self.name}"


def shell(name: str, call: Callable[[Session], None]) -> Step:
    """The shell calls the session (``call(session)``), as after an awaited check."""
    return _ShellCall(name, call)


@dataclass
class _TlsHandshake(Step):
    leg: str
    ctx: ssl.SSLContext
    hostname: str | None

    def apply(self, pb: Playbook) -> None:
        leg = pb.leg(self.leg)
        assert leg.peer is None, f"the {self.leg} leg already speaks TLS"
        peer = _TlsPeer(self.ctx, server_side=self.leg == "server", hostname=self.hostname)
        pending = bytes(leg.buf)
        leg.buf.clear()
        leg.peer = peer
        feed = pb.session.client_data if self.leg == "client" else pb.session.server_data
        if pending:
            leg.buf += peer.decrypt(pending)
        for _ in range(50):
            peer.handshake()
            out = peer.take()
            if out:
                feed(out)
            before = leg.received
            pb.collect()  # the session's answer goes through peer.decrypt
            if pb.session.phase is Phase.CLOSED:
                break
            if peer.done and not out and leg.received == before:
                return
        assert peer.done, f"the TLS handshake on the {self.leg} leg did not complete"

    def __repr__(self) -> str:
        return f">> {self.leg}_tls()"


def client_tls(ctx: ssl.SSLContext, hostname: str | None = "localhost") -> Step:
    """The client upgrades to TLS: the playbook plays a TLS client with ``ctx``."""
    return _TlsHandshake("client", ctx, hostname)


def server_tls(ctx: ssl.SSLContext) -> Step:
    """The backend accepts the gateway's TLS: the playbook plays a TLS server with ``ctx``."""
    return _TlsHandshake("server", ctx, None)


# -------------------------------------------------------------------------- expectations

Expected = bytes | Callable[[Packet], object]


@dataclass
class _ExpectBytes(Step):
    leg: str
    expected: Expected

    def apply(self, pb: Playbook) -> None:
        leg = pb.leg(self.leg)
        got = bytes(leg.buf)
        if callable(self.expected):
            reader = PacketReader(1 << 30)
            reader.feed(got)
            pkt = reader.next_packet()
            assert pkt is not None, (
                f"expected a whole packet to the {self.leg}, got:\n{describe(got)}"
            )
            del leg.buf[: len(pkt.raw)]
            result = self.expected(pkt)
            assert result is not False, f"the packet to the {self.leg} failed its check:\n" + (
                describe(pkt.raw)
            )
            return
        want = self.expected
        if got[: len(want)] != want:
            at = next(
                (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                min(len(got), len(want)),
            )
            raise AssertionError(
                f"bytes to the {self.leg} differ at offset {at}\n"
                f"expected:\n{describe(want)}\ngot:\n{describe(got)}"
            )
        del leg.buf[: len(want)]

    def __repr__(self) -> str:
        what = (
            getattr(self.expected, "__name__", "check")
            if callable(self.expected)
            else _short(self.expected)
        )
        return f"<< expect_{self.leg}({what})"


def expect_client(expected: Expected) -> Step:
    """The session sent the client exactly these bytes next (or a packet passing a check)."""
    return _ExpectBytes("client", expected)


def expect_server(expected: Expected) -> Step:
    """The session sent the backend exactly these bytes next (or a packet passing a check)."""
    return _ExpectBytes("server", expected)


@dataclass
class _ExpectEvent(Step):
    kind: type | Callable[[Any], bool]
    fields: dict[str, Any]

    def apply(self, pb: Playbook) -> None:
        assert pb.events, f"expected an event {self!r}, the session reported none"
        ev = pb.events.popleft()
        if isinstance(self.kind, type):
            assert isinstance(ev, self.kind), f"expected a {self.kind.__name__}, got {ev!r}"
        else:
            assert self.kind(ev), f"event {ev!r} does not satisfy {self!r}"
        for name, want in self.fields.items():
            got = getattr(ev, name)
            if callable(want) and not isinstance(want, type):
                assert want(got), f"{type(ev).__name__}.{name} = {got!r} fails its check"
            else:
                assert got == want, f"{type(ev).__name__}.{name} = {got!r}, expected {want!r}"

    def __repr__(self) -> str:
        name = getattr(self.kind, "__name__", "predicate")
        args = "".join(f", {k}={_show(v)}" for k, v in self.fields.items())
        return f"<< expect_event({name}{args})"


def expect_event(kind: type | Callable[[Any], bool], **fields: Any) -> Step:
    """The next event is a ``kind`` (or satisfies it) whose attributes equal ``fields``.

    A field value that is a (non-type) callable is a check on that attribute instead.
    """
    return _ExpectEvent(kind, fields)


@dataclass
class _ExpectPhase(Step):
    phase: Phase

    def apply(self, pb: Playbook) -> None:
        assert pb.session.phase is self.phase, (
            f"session is in {pb.session.phase}, expected {self.phase}"
        )

    def __repr__(self) -> str:
        return f"<< expect_phase({self.phase.name})"


def expect_phase(phase: Phase) -> Step:
    return _ExpectPhase(phase)


@dataclass
class _ExpectClosed(Step):
    reason: str | None

    def apply(self, pb: Playbook) -> None:
        assert pb.events, "expected SessionClosed, the session reported no event"
        ev = pb.events.popleft()
        assert isinstance(ev, SessionClosed), f"expected SessionClosed, got {ev!r}"
        if self.reason is not None:
            assert self.reason in ev.reason, f"close reason {ev.reason!r} lacks {self.reason!r}"
        assert pb.session.phase is Phase.CLOSED, f"session is in {pb.session.phase}"
        assert pb.session.close_requested, "the session did not ask the shell to close"

    def __repr__(self) -> str:
        return f"<< expect_closed({self.reason!r})" if self.reason else "<< expect_closed()"


def expect_closed(reason: str | None = None) -> Step:
    """The next event is SessionClosed (its reason containing ``reason``); phase is CLOSED."""
    return _ExpectClosed(reason)


# ------------------------------------------------------------------------- presentation


def describe(data: bytes, limit: int = 12) -> str:
    """Frames of ``data``, one per line: sequence id, length and the start of the payload."""
    lines = []
    pos = 0
    while pos < len(data) and len(lines) < limit:
        if len(data) - pos < 4:
            lines.append(f"    (partial header) {data[pos:].hex(' ')}")
            return "\n".join(lines)
        length = int.from_bytes(data[pos : pos + 3], "little")
        seq = data[pos + 3]
        payload = data[pos + 4 : pos + 4 + length]
        partial = "" if len(payload) == length else f" (only {len(payload)} bytes present)"
        lines.append(f"    seq={seq} len={length}{partial} {_short(payload, 48)}")
        pos += 4 + length
    if pos < len(data):
        lines.append(f"    ... {len(data) - pos} more bytes")
    return "\n".join(lines) if lines else "    (nothing)"


def _show(value: Any) -> str:
    if callable(value) and not isinstance(value, type):
        return f"<{getattr(value, '__name__', 'check')}>"
    return repr(value)


def _short(data: bytes, limit: int = 32) -> str:
    if len(data) <= limit:
        return repr(data)
    return f"{data[:limit]!r}...({len(data)} bytes)"


# ------------------------------------------------------------------------------ packets

SERVER_CAPABILITIES = int(
    Capability.LONG_PASSWORD
    | Capability.FOUND_ROWS
    | Capability.LONG_FLAG
    | Capability.CONNECT_WITH_DB
    | Capability.NO_SCHEMA
    | Capability.COMPRESS
    | Capability.ODBC
    | Capability.LOCAL_FILES
    | Capability.IGNORE_SPACE
    | Capability.PROTOCOL_41
    | Capability.INTERACTIVE
    | Capability.SSL
    | Capability.IGNORE_SIGPIPE
    | Capability.TRANSACTIONS
    | Capability.RESERVED
    | Capability.SECURE_CONNECTION
    | Capability.MULTI_STATEMENTS
    | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS
    | Capability.PLUGIN_AUTH
    | Capability.CONNECT_ATTRS
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.CAN_HANDLE_EXPIRED_PASSWORDS
    | Capability.SESSION_TRACK
    | Capability.DEPRECATE_EOF
    | Capability.OPTIONAL_RESULTSET_METADATA
    | Capability.ZSTD_COMPRESSION
    | Capability.QUERY_ATTRIBUTES
    | Capability.MULTI_FACTOR_AUTH
)
"""What a MySQL 8 server offers: everything, including what the gateway must filter out."""

AUTOCOMMIT = int(ServerStatus.AUTOCOMMIT)


def server_greeting(
    nonce: bytes,
    *,
    version: bytes = b"8.0.36",
    connection_id: int = 4242,
    capabilities: int = SERVER_CAPABILITIES,
    plugin: str = NATIVE_PASSWORD,
    charset: int = UTF8MB4_GENERAL_CI,
    status: int = AUTOCOMMIT,
) -> bytes:
    """The backend's HandshakeV10, framed with sequence id 0."""
    return frame(
        0,
        packets.build_greeting(
            packets.Greeting(
                server_version=version,
                connection_id=connection_id,
                scramble=nonce,
                capabilities=capabilities,
                charset=charset,
                status=status,
                auth_plugin=plugin,
            )
        ),
    )


def client_hello(
    user: bytes,
    auth_response: bytes,
    *,
    capabilities: int,
    plugin: str | None = NATIVE_PASSWORD,
    database: bytes | None = None,
    attributes: Sequence[tuple[bytes, bytes]] = (),
    charset: int = UTF8MB4_GENERAL_CI,
    max_packet: int = 1 << 24,
    seq: int = 1,
) -> bytes:
    """A HandshakeResponse41 (the database and plugin flags follow the arguments)."""
    caps = capabilities & ~int(Capability.CONNECT_WITH_DB)
    if database is not None:
        caps |= int(Capability.CONNECT_WITH_DB)
    if plugin is None:
        caps &= ~int(Capability.PLUGIN_AUTH)
    return frame(
        seq,
        packets.build_handshake_response(
            packets.HandshakeResponse(
                capabilities=caps,
                max_packet=max_packet,
                charset=charset,
                user=user,
                auth_response=auth_response,
                database=database,
                auth_plugin=plugin,
                attributes=tuple(attributes) if caps & Capability.CONNECT_ATTRS else (),
            )
        ),
    )


def ssl_request(capabilities: int, *, seq: int = 1, max_packet: int = 1 << 24) -> bytes:
    return frame(
        seq,
        packets.build_ssl_request(
            packets.SSLRequest(capabilities | int(Capability.SSL), max_packet, UTF8MB4_GENERAL_CI)
        ),
    )


def command(code: int, body: bytes = b"") -> bytes:
    """A command packet as a client sends it: sequence id 0, the command byte, its body."""
    return frame(0, bytes([code]) + body)


def query(sql: bytes) -> bytes:
    return command(0x03, sql)


def column(
    name: bytes, type: int = FieldType.VAR_STRING, *, table: bytes = b"t", length: int = 255
) -> bytes:
    """A ColumnDefinition41 payload."""
    return packets.build_column_definition(
        packets.ColumnDefinition(
            catalog=b"def",
            schema=b"app",
            table=table,
            org_table=table,
            name=name,
            org_name=name,
            charset=UTF8MB4_GENERAL_CI if type == FieldType.VAR_STRING else 63,
            length=length,
            type=int(type),
            flags=0,
            decimals=0,
        )
    )


class Reply:
    """One response as a server writes it: frames with consecutive sequence ids.

    ``Reply(seq=1).columns(...).rows(...).end(...)`` and so on; ``bytes(reply)`` is the wire.
    """

    def __init__(self, seq: int = 1, *, caps: int = SERVER_CAPABILITIES) -> None:
        self.seq = seq
        self.caps = caps
        self.parts: list[bytes] = []

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)

    @property
    def data(self) -> bytes:
        return bytes(self)

    def packet(self, payload: bytes) -> Reply:
        self.parts.append(frame(self.seq, payload))
        self.seq = (self.seq + frames_needed(len(payload))) & 0xFF
        return self

    def ok(
        self, *, status: int = AUTOCOMMIT, affected: int = 0, insert_id: int = 0, header: int = 0
    ) -> Reply:
        return self.packet(
            packets.build_ok(
                packets.OkPacket(
                    affected_rows=affected, last_insert_id=insert_id, status=status, header=header
                ),
                self.caps,
            )
        )

    def err(self, code: int, message: str, sqlstate: str | None = "HY000") -> Reply:
        return self.packet(packets.build_err(code, message, sqlstate))

    def eof(self, *, status: int = AUTOCOMMIT, warnings: int = 0) -> Reply:
        return self.packet(packets.build_eof(packets.EofPacket(warnings=warnings, status=status)))

    def columns(
        self, defs: Sequence[bytes], *, deprecate_eof: bool, status: int = AUTOCOMMIT
    ) -> Reply:
        """Column count, definitions and, without DEPRECATE_EOF, their EOF."""
        self.packet(packets.write_lenenc_int(len(defs)))
        for d in defs:
            self.packet(d)
        if not deprecate_eof:
            self.eof(status=status)
        return self

    def text_rows(self, rows: Sequence[Sequence[bytes | None]]) -> Reply:
        for row in rows:
            self.packet(packets.build_text_row(row))
        return self

    def binary_rows(self, rows: Sequence[Sequence[bytes | None]]) -> Reply:
        for row in rows:
            self.packet(packets.build_binary_row(row))
        return self

    def end(self, *, deprecate_eof: bool, status: int = AUTOCOMMIT) -> Reply:
        """The end of a row stream: EOF, or the OK with header 0xFE under DEPRECATE_EOF."""
        if deprecate_eof:
            return self.ok(status=status, header=0xFE)
        return self.eof(status=status)

    def text_result(
        self,
        defs: Sequence[bytes],
        rows: Sequence[Sequence[bytes | None]],
        *,
        deprecate_eof: bool,
        status: int = AUTOCOMMIT,
    ) -> Reply:
        return (
            self.columns(defs, deprecate_eof=deprecate_eof)
            .text_rows(rows)
            .end(deprecate_eof=deprecate_eof, status=status)
        )


# --------------------------------------------------------------------------- key material


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed EC certificate for localhost/127.0.0.1 and contexts built on it."""

    cert: Path
    key: Path
    cert_pem: bytes

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=self.cert_pem.decode("ascii"))
        return ctx


def make_tls_files(directory: Path) -> TlsFiles:
    """Write a fresh self-signed certificate and key into ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsFiles(directory / "cert.pem", directory / "key.pem", cert_pem)


def make_rsa_key() -> tuple[bytes, bytes]:
    """A 2048-bit RSA key pair as (private PKCS8 PEM, public SubjectPublicKeyInfo PEM)."""
    return rsa_key_pem(2048)
