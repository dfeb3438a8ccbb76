"""MySQL packet payloads as frozen dataclasses with pure ``parse_*`` and ``build_*`` functions.

Every parser takes one whole logical payload (the bytes after the 4-byte frame header, already
joined across 16 MiB continuations) and raises only ``RemoteProtocolError`` on bytes the
protocol does not allow: a peer must never be able to crash the gateway with an ``IndexError``.
Builders return payloads without a frame header and raise ``LocalProtocolError`` when asked to
write something the layout cannot carry (a NUL inside a NUL-terminated string, a field too wide).

Layouts are checked strictly, trailing bytes included, except where the protocol itself ends a
packet with "the rest": the ERR message, auth switch and auth-more data, and the parameters
after a COM_STMT_EXECUTE header. Optional fields may be absent at the end of a packet only where
servers or clients really omit them (OK info, the plugin name's NUL, a COM_FIELD_LIST default).
Reserved filler bytes are not checked, as servers do not check them either. Only the 4.1
protocol is understood, without MariaDB's extended metadata (the gateway never negotiates it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from appliance.mysql.constants import (
    CLIENT_ED25519,
    PROTOCOL_VERSION,
    SQLSTATE_FOR,
    Capability,
    Command,
    CursorType,
    FieldType,
    ServerStatus,
)
from appliance.mysql.errors import LocalProtocolError, RemoteProtocolError

Buffer: TypeAlias = bytes | bytearray | memoryview
"""Anything a payload may arrive as; parsers copy a non-``bytes`` payload once."""

# Plain ints: flag tests on the hot paths must not build IntFlag objects.
_LONG_PASSWORD = int(Capability.LONG_PASSWORD)  # cleared by MariaDB peers ("CLIENT_MYSQL")
_CONNECT_WITH_DB = int(Capability.CONNECT_WITH_DB)
_PROTOCOL_41 = int(Capability.PROTOCOL_41)
_SSL = int(Capability.SSL)
_SECURE_CONNECTION = int(Capability.SECURE_CONNECTION)
_PLUGIN_AUTH = int(Capability.PLUGIN_AUTH)
_CONNECT_ATTRS = int(Capability.CONNECT_ATTRS)
_LENENC_CLIENT_DATA = int(Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA)
_SESSION_TRACK = int(Capability.SESSION_TRACK)
_SESSION_STATE_CHANGED = int(ServerStatus.SESSION_STATE_CHANGED)

_OK = 0x00
_AUTH_MORE_DATA = 0x01
_NULL = 0xFB  # lenenc NULL marker (text rows)
_EOF = 0xFE  # EOF, OK-as-EOF under DEPRECATE_EOF, auth switch request
_ERR = 0xFF

_SMALL_LENENC = tuple(bytes((i,)) for i in range(251))
"""Single-byte lenenc encodings, shared so the common case allocates nothing."""

_LENENC_WIDTH = bytes([1] * 251 + [0, 3, 4, 9, 0])
"""Encoded width of a lenenc integer by its first byte; 0 where NULL/0xFF are not integers."""

_NULL_BYTE = b"\xfb"


def _as_bytes(payload: Buffer) -> bytes:
    return payload if isinstance(payload, bytes) else bytes(payload)


def _le(value: int, width: int, what: str) -> bytes:
    """Fixed-width little-endian field; a value that does not fit is our bug, not the peer's."""
    try:
        return value.to_bytes(width, "little")
    except OverflowError:
        raise LocalProtocolError(f"{what} {value} does not fit in {width} bytes") from None


def _nul(value: bytes, what: str) -> bytes:
    if b"\0" in value:
        raise LocalProtocolError(f"{what} contains a NUL byte")
    return value + b"\0"


def _decode_plugin(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"auth plugin name {raw!r} is not UTF-8") from None


def _encode_plugin(name: str) -> bytes:
    return _nul(name.encode("utf-8"), "auth plugin name")


# --- length-encoded integers and strings ----------------------------------------------------


def read_lenenc_int(buf: Buffer, pos: int) -> tuple[int | None, int]:
    """Read a length-encoded integer at ``pos``; ``None`` stands for the 0xFB NULL marker."""
    try:
        first = buf[pos]
    except IndexError:
        raise RemoteProtocolError(f"truncated length-encoded integer at {pos}") from None
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFC:
        end = pos + 3
        if end > len(buf):
            raise RemoteProtocolError(f"truncated length-encoded integer at {pos}")
        return buf[pos + 1] | buf[pos + 2] << 8, end
    if first == 0xFD:
        end = pos + 4
        if end > len(buf):
            raise RemoteProtocolError(f"truncated length-encoded integer at {pos}")
        return buf[pos + 1] | buf[pos + 2] << 8 | buf[pos + 3] << 16, end
    if first == 0xFE:
        end = pos + 9
        if end > len(buf):
            raise RemoteProtocolError(f"truncated length-encoded integer at {pos}")
        return int.from_bytes(buf[pos + 1 : end], "little"), end
    if first == _NULL:
        return None, pos + 1
    raise RemoteProtocolError(f"0xFF is not a length-encoded integer (at {pos})")


def write_lenenc_int(value: int) -> bytes:
    """Shortest length-encoded form of ``value``, as servers and clients write it."""
    if value < 251:
        if value >= 0:
            return _SMALL_LENENC[value]
    elif value < 0x10000:
        return b"\xfc" + value.to_bytes(2, "little")
    elif value < 0x1000000:
        return b"\xfd" + value.to_bytes(3, "little")
    elif value < 0x10000000000000000:
        return b"\xfe" + value.to_bytes(8, "little")
    raise LocalProtocolError(f"{value} cannot be length-encoded")


def read_lenenc_bytes(buf: Buffer, pos: int) -> tuple[bytes | None, int]:
    """Read a length-encoded string at ``pos``; ``None`` for the 0xFB NULL marker."""
    try:
        first = buf[pos]
    except IndexError:
        raise RemoteProtocolError(f"truncated length-encoded string at {pos}") from None
    if first < 0xFB:  # the common case: a length below 251, in one byte
        start = pos + 1
        end = start + first
    else:
        length, start = read_lenenc_int(buf, pos)
        if length is None:
            return None, start
        end = start + length
    if end > len(buf):
        raise RemoteProtocolError(f"length-encoded string at {pos} runs past the end")
    value = buf[start:end]
    return (value if isinstance(value, bytes) else bytes(value)), end


def write_lenenc_bytes(value: bytes) -> bytes:
    """``value`` prefixed with its length-encoded length."""
    n = len(value)
    if n < 251:
        return _SMALL_LENENC[n] + value
    return write_lenenc_int(n) + value


def read_nul_bytes(buf: Buffer, pos: int) -> tuple[bytes, int]:
    """Read a NUL-terminated string at ``pos``; returns it without the NUL and the pos after."""
    if isinstance(buf, memoryview):
        rest = bytes(buf[pos:])
        end = rest.find(0)
        if end < 0:
            raise RemoteProtocolError(f"string at {pos} lacks its NUL terminator")
        return rest[:end], pos + end + 1
    end = buf.find(0, pos)
    if end < 0:
        raise RemoteProtocolError(f"string at {pos} lacks its NUL terminator")
    return bytes(buf[pos:end]), end + 1


def _read_lenenc_str(buf: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """A length-encoded string where NULL is not allowed (names, auth data, OK info)."""
    value, pos = read_lenenc_bytes(buf, pos)
    if value is None:
        raise RemoteProtocolError(f"{what} is NULL")
    return value, pos


def _expect_end(data: bytes, pos: int, what: str) -> None:
    if pos != len(data):
        raise RemoteProtocolError(f"{len(data) - pos} unexpected trailing bytes after {what}")


# --- connection phase -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Greeting:
    """Protocol::HandshakeV10, the first packet a server sends."""

    server_version: bytes
    connection_id: int
    scramble: bytes
    """Both parts of auth-plugin-data joined, without the trailing NUL."""
    capabilities: int
    """32 bits: the lower and upper halves joined."""
    charset: int
    status: int
    auth_plugin: str
    """'' when CLIENT_PLUGIN_AUTH is absent."""
    mariadb_capabilities: int = 0
    """MariaDB extended capabilities (bits 32..63 shifted down); only when CLIENT_MYSQL is clear."""


def parse_greeting(payload: Buffer) -> Greeting:
    """Parse HandshakeV10; an ERR packet in its place is an error here (callers check 0xFF)."""
    data = _as_bytes(payload)
    if not data:
        raise RemoteProtocolError("empty greeting")
    if data[0] != PROTOCOL_VERSION:
        if data[0] == _ERR:
            raise RemoteProtocolError("server sent an ERR packet instead of a greeting")
        raise RemoteProtocolError(f"unsupported protocol version {data[0]}")
    server_version, pos = read_nul_bytes(data, 1)
    # id(4) scramble-1(8) filler(1) caps-lo(2) charset(1) status(2) caps-hi(2) len(1) reserved(10)
    if pos + 31 > len(data):
        raise RemoteProtocolError("truncated greeting")
    connection_id = int.from_bytes(data[pos : pos + 4], "little")
    scramble = data[pos + 4 : pos + 12]
    capabilities = data[pos + 13] | data[pos + 14] << 8
    charset = data[pos + 15]
    status = data[pos + 16] | data[pos + 17] << 8
    capabilities |= (data[pos + 18] | data[pos + 19] << 8) << 16
    auth_data_len = data[pos + 20]
    mariadb = 0
    if not capabilities & _LONG_PASSWORD:
        # MariaDB (since 10.2) reuses the last 4 reserved bytes when it clears CLIENT_MYSQL.
        mariadb = int.from_bytes(data[pos + 27 : pos + 31], "little")
    pos += 31
    if capabilities & _SECURE_CONNECTION:
        end = pos + max(13, auth_data_len - 8)
        if end > len(data):
            raise RemoteProtocolError("truncated greeting scramble")
        part2 = data[pos:end]
        # Servers end auth-plugin-data with a NUL that is not part of the scramble.
        scramble += part2[:-1] if part2[-1] == 0 else part2
        pos = end
    auth_plugin = ""
    if capabilities & _PLUGIN_AUTH:
        raw, pos = read_nul_bytes(data, pos)
        auth_plugin = _decode_plugin(raw)
    _expect_end(data, pos, "greeting")
    return Greeting(
        server_version=server_version,
        connection_id=connection_id,
        scramble=scramble,
        capabilities=capabilities,
        charset=charset,
        status=status,
        auth_plugin=auth_plugin,
        mariadb_capabilities=mariadb,
    )


def build_greeting(g: Greeting) -> bytes:
    """HandshakeV10 laid out byte for byte as MariaDB 10.11 and MySQL 8 servers write it."""
    caps = g.capabilities
    scramble = g.scramble
    if len(scramble) < 8:
        raise LocalProtocolError("greeting scramble shorter than 8 bytes")
    if caps & _SECURE_CONNECTION:
        if len(scramble) < 20:
            raise LocalProtocolError("greeting scramble shorter than 20 bytes")
        if len(scramble) > 20 and not caps & _PLUGIN_AUTH:
            raise LocalProtocolError("a scramble longer than 20 bytes needs CLIENT_PLUGIN_AUTH")
    elif len(scramble) != 8:
        raise LocalProtocolError("without SECURE_CONNECTION the scramble is exactly 8 bytes")
    if g.mariadb_capabilities and caps & _LONG_PASSWORD:
        raise LocalProtocolError("MariaDB capabilities need CLIENT_MYSQL (bit 0) clear")
    if g.auth_plugin and not caps & _PLUGIN_AUTH:
        raise LocalProtocolError("an auth plugin name needs CLIENT_PLUGIN_AUTH")
    parts = [
        _SMALL_LENENC[PROTOCOL_VERSION],
        _nul(g.server_version, "server version"),
        _le(g.connection_id, 4, "connection id"),
        scramble[:8],
        b"\0",
        _le(caps & 0xFFFF, 2, "capabilities"),
        _le(g.charset, 1, "charset"),
        _le(g.status, 2, "status"),
        _le(caps >> 16, 2, "capabilities"),
        _le(len(scramble) + 1 if caps & _PLUGIN_AUTH else 0, 1, "auth-plugin-data length"),
        bytes(6),
        _le(g.mariadb_capabilities, 4, "MariaDB capabilities"),
    ]
    if caps & _SECURE_CONNECTION:
        parts.append(scramble[8:] + b"\0")
    if caps & _PLUGIN_AUTH:
        parts.append(_encode_plugin(g.auth_plugin))
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """Protocol::SSLRequest: the first 32 bytes of a handshake response, sent before TLS."""

    capabilities: int
    max_packet: int
    charset: int
    mariadb_capabilities: int = 0
    """Extended capabilities at offset 28, kept as for HandshakeResponse (MariaDB clients)."""


def is_ssl_request(payload: Buffer) -> bool:
    """True for a 32-byte payload with CLIENT_SSL: the client wants TLS before it logs in."""
    return len(payload) == 32 and bool(payload[1] & (_SSL >> 8))


def parse_ssl_request(payload: Buffer) -> SSLRequest:
    """Parse an SSLRequest; it must be exactly 32 bytes with PROTOCOL_41 and SSL."""
    data = _as_bytes(payload)
    if len(data) != 32:
        raise RemoteProtocolError(f"SSLRequest of {len(data)} bytes, expected 32")
    capabilities = int.from_bytes(data[0:4], "little")
    if not capabilities & _SSL:
        raise RemoteProtocolError("SSLRequest without CLIENT_SSL")
    if not capabilities & _PROTOCOL_41:
        raise RemoteProtocolError("SSLRequest without CLIENT_PROTOCOL_41")
    mariadb = 0 if capabilities & _LONG_PASSWORD else int.from_bytes(data[28:32], "little")
    return SSLRequest(
        capabilities=capabilities,
        max_packet=int.from_bytes(data[4:8], "little"),
        charset=data[8],
        mariadb_capabilities=mariadb,
    )


def _client_prefix(caps: int, max_packet: int, charset: int, mariadb: int) -> bytes:
    """The 32 bytes SSLRequest and HandshakeResponse41 share."""
    if mariadb and caps & _LONG_PASSWORD:
        raise LocalProtocolError("MariaDB capabilities need CLIENT_MYSQL (bit 0) clear")
    return b"".join(
        (
            _le(caps, 4, "capabilities"),
            _le(max_packet, 4, "max packet"),
            _le(charset, 1, "charset"),
            bytes(19),
            _le(mariadb, 4, "MariaDB capabilities"),
        )
    )


def build_ssl_request(r: SSLRequest) -> bytes:
    """SSLRequest payload; CLIENT_SSL and PROTOCOL_41 must be among the capabilities."""
    if not r.capabilities & _SSL or not r.capabilities & _PROTOCOL_41:
        raise LocalProtocolError("an SSLRequest needs CLIENT_SSL and CLIENT_PROTOCOL_41")
    return _client_prefix(r.capabilities, r.max_packet, r.charset, r.mariadb_capabilities)


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    """Protocol::HandshakeResponse41, the client's login."""

    capabilities: int
    max_packet: int
    charset: int
    user: bytes
    auth_response: bytes
    database: bytes | None
    """Present iff CLIENT_CONNECT_WITH_DB."""
    auth_plugin: str | None
    """Present iff CLIENT_PLUGIN_AUTH."""
    attributes: tuple[tuple[bytes, bytes], ...] = ()
    """Connection attributes in wire order; present iff CLIENT_CONNECT_ATTRS."""
    mariadb_capabilities: int = 0
    """The 4 bytes at offset 28 when CLIENT_MYSQL (bit 0) is clear, as MariaDB reads them."""


def parse_handshake_response(payload: Buffer) -> HandshakeResponse:
    """Parse HandshakeResponse41; the plugin name may lack its NUL at the end of the packet."""
    data = _as_bytes(payload)
    if len(data) < 32:
        raise RemoteProtocolError("truncated handshake response")
    caps = int.from_bytes(data[0:4], "little")
    if not caps & _PROTOCOL_41:
        raise RemoteProtocolError("handshake response without CLIENT_PROTOCOL_41")
    mariadb = 0 if caps & _LONG_PASSWORD else int.from_bytes(data[28:32], "little")
    user, pos = read_nul_bytes(data, 32)
    if caps & _LENENC_CLIENT_DATA:
        auth_response, pos = _read_lenenc_str(data, pos, "auth response")
    elif caps & _SECURE_CONNECTION:
        if pos >= len(data):
            raise RemoteProtocolError("truncated handshake response: no auth response length")
        end = pos + 1 + data[pos]
        if end > len(data):
            raise RemoteProtocolError("auth response runs past the end of the packet")
        auth_response, pos = data[pos + 1 : end], end
    else:
        auth_response, pos = read_nul_bytes(data, pos)
    database = None
    if caps & _CONNECT_WITH_DB:
        database, pos = read_nul_bytes(data, pos)
    auth_plugin = None
    if caps & _PLUGIN_AUTH:
        end = data.find(0, pos)
        if end >= 0:
            auth_plugin, pos = _decode_plugin(data[pos:end]), end + 1
        elif caps & _CONNECT_ATTRS:
            raise RemoteProtocolError("auth plugin name lacks its NUL terminator")
        else:
            # Bug#59453-era clients end the packet with the name and no NUL.
            auth_plugin, pos = _decode_plugin(data[pos:]), len(data)
    attributes: tuple[tuple[bytes, bytes], ...] = ()
    if caps & _CONNECT_ATTRS:
        attributes, pos = _read_attributes(data, pos)
    _expect_end(data, pos, "handshake response")
    return HandshakeResponse(
        capabilities=caps,
        max_packet=int.from_bytes(data[4:8], "little"),
        charset=data[8],
        user=user,
        auth_response=auth_response,
        database=database,
        auth_plugin=auth_plugin,
        attributes=attributes,
        mariadb_capabilities=mariadb,
    )


def _read_attributes(data: bytes, pos: int) -> tuple[tuple[tuple[bytes, bytes], ...], int]:
    """Connection attributes: a lenenc total, then key/value lenenc pairs filling it exactly."""
    block, pos = _read_lenenc_str(data, pos, "connection attributes")
    attributes = []
    at = 0
    while at < len(block):
        key, at = _read_lenenc_str(block, at, "attribute name")
        value, at = _read_lenenc_str(block, at, "attribute value")
        attributes.append((key, value))
    return tuple(attributes), pos


def build_handshake_response(r: HandshakeResponse) -> bytes:
    """HandshakeResponse41 with each optional field written iff its capability is set."""
    caps = r.capabilities
    if not caps & _PROTOCOL_41:
        raise LocalProtocolError("a handshake response needs CLIENT_PROTOCOL_41")
    parts = [
        _client_prefix(caps, r.max_packet, r.charset, r.mariadb_capabilities),
        _nul(r.user, "user"),
    ]
    if caps & _LENENC_CLIENT_DATA:
        parts.append(write_lenenc_bytes(r.auth_response))
    elif caps & _SECURE_CONNECTION:
        parts.append(_le(len(r.auth_response), 1, "auth response length") + r.auth_response)
    else:
        parts.append(_nul(r.auth_response, "auth response"))
    if (r.database is not None) != bool(caps & _CONNECT_WITH_DB):
        raise LocalProtocolError("database must be given iff CLIENT_CONNECT_WITH_DB")
    if r.database is not None:
        parts.append(_nul(r.database, "database"))
    if (r.auth_plugin is not None) != bool(caps & _PLUGIN_AUTH):
        raise LocalProtocolError("auth plugin must be given iff CLIENT_PLUGIN_AUTH")
    if r.auth_plugin is not None:
        parts.append(_encode_plugin(r.auth_plugin))
    if caps & _CONNECT_ATTRS:
        block = b"".join(write_lenenc_bytes(k) + write_lenenc_bytes(v) for k, v in r.attributes)
        parts.append(write_lenenc_bytes(block))
    elif r.attributes:
        raise LocalProtocolError("connection attributes need CLIENT_CONNECT_ATTRS")
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class AuthSwitchRequest:
    """0xFE, plugin name, plugin data: the server asks for another auth method."""

    plugin: str
    data: bytes
    """Without the NUL that servers append to scramble-style data."""


_RAW_SWITCH_DATA = frozenset({CLIENT_ED25519})
"""Plugins whose switch data is sent as is, with no trailing NUL (MariaDB's 32-byte nonce)."""


def parse_auth_switch_request(payload: Buffer) -> AuthSwitchRequest:
    """Parse an auth switch; the pre-4.1 one-byte form (old passwords) is refused."""
    data = _as_bytes(payload)
    if not data or data[0] != _EOF:
        raise RemoteProtocolError("not an auth switch request")
    if len(data) == 1:
        raise RemoteProtocolError("old-style auth switch (mysql_old_password) is not supported")
    raw, pos = read_nul_bytes(data, 1)
    plugin = _decode_plugin(raw)
    rest = data[pos:]
    if rest and rest[-1] == 0 and plugin not in _RAW_SWITCH_DATA:
        rest = rest[:-1]
    return AuthSwitchRequest(plugin=plugin, data=rest)


def build_auth_switch_request(r: AuthSwitchRequest) -> bytes:
    """Auth switch with the trailing NUL servers send (except for client_ed25519)."""
    tail = b"" if r.plugin in _RAW_SWITCH_DATA else b"\0"
    return b"\xfe" + _encode_plugin(r.plugin) + r.data + tail


def build_auth_more_data(data: bytes) -> bytes:
    """AuthMoreData: 0x01 and the plugin's bytes."""
    return b"\x01" + data


def parse_auth_more_data(payload: Buffer) -> bytes:
    """The plugin bytes of an AuthMoreData packet."""
    data = _as_bytes(payload)
    if not data or data[0] != _AUTH_MORE_DATA:
        raise RemoteProtocolError("not an AuthMoreData packet")
    return data[1:]


# --- generic responses ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OkPacket:
    """OK_Packet, also the result-set terminator (header 0xFE) under DEPRECATE_EOF."""

    affected_rows: int = 0
    last_insert_id: int = 0
    status: int = 0
    warnings: int = 0
    info: bytes = b""
    session_state: bytes = b""
    """Contents of the session-state-change block (without its length prefix)."""
    header: int = _OK


def parse_ok(payload: Buffer, capabilities: int) -> OkPacket:
    """Parse an OK packet; the session state is read only with CLIENT_SESSION_TRACK.

    Info is a length-encoded string, absent at the end of the packet when empty. The protocol
    docs call it string<EOF> without SESSION_TRACK, but MariaDB and MySQL servers write it
    length-encoded either way and libmysqlclient reads it so (see the captured UPDATE reply
    in the tests), so the length prefix is never part of ``info``.
    """
    data = _as_bytes(payload)
    if not data or (data[0] != _OK and data[0] != _EOF):
        raise RemoteProtocolError("not an OK packet")
    affected_rows, pos = read_lenenc_int(data, 1)
    last_insert_id, pos = read_lenenc_int(data, pos)
    if affected_rows is None or last_insert_id is None:
        raise RemoteProtocolError("NULL marker in an OK packet")
    if pos + 4 > len(data):
        raise RemoteProtocolError("truncated OK packet")
    status = data[pos] | data[pos + 1] << 8
    warnings = data[pos + 2] | data[pos + 3] << 8
    pos += 4
    info = session_state = b""
    if capabilities & _SESSION_TRACK and status & _SESSION_STATE_CHANGED:
        # Servers always write info (maybe empty) before the session state block.
        info, pos = _read_lenenc_str(data, pos, "OK info")
        session_state, pos = _read_lenenc_str(data, pos, "session state")
    elif pos < len(data):
        info, pos = _read_lenenc_str(data, pos, "OK info")
    _expect_end(data, pos, "OK packet")
    return OkPacket(
        affected_rows=affected_rows,
        last_insert_id=last_insert_id,
        status=status,
        warnings=warnings,
        info=info,
        session_state=session_state,
        header=data[0],
    )


def build_ok(ok: OkPacket, capabilities: int) -> bytes:
    """OK packet as MariaDB and MySQL servers write it (net_send_ok) for these capabilities."""
    if ok.header != _OK and ok.header != _EOF:
        raise LocalProtocolError(f"OK header must be 0x00 or 0xFE, not {ok.header:#x}")
    parts = [
        b"\x00" if ok.header == _OK else b"\xfe",
        write_lenenc_int(ok.affected_rows),
        write_lenenc_int(ok.last_insert_id),
        _le(ok.status, 2, "status"),
        _le(ok.warnings, 2, "warnings"),
    ]
    if capabilities & _SESSION_TRACK and ok.status & _SESSION_STATE_CHANGED:
        parts.append(write_lenenc_bytes(ok.info))
        parts.append(write_lenenc_bytes(ok.session_state))
    elif ok.session_state:
        raise LocalProtocolError("session state needs SESSION_TRACK and SESSION_STATE_CHANGED")
    elif ok.info:
        parts.append(write_lenenc_bytes(ok.info))
    return b"".join(parts)


def ok_status(payload: Buffer, capabilities: int) -> int:
    """Status flags of an OK packet (header 0x00 or 0xFE) without building an OkPacket.

    Checks the header and that the fixed part is present; info and session state are not read.
    ``capabilities`` is accepted for symmetry with ``parse_ok``: the status sits at the same
    place with or without SESSION_TRACK.
    """
    try:
        header = payload[0]
        first = _LENENC_WIDTH[payload[1]]
        pos = 1 + first
        second = _LENENC_WIDTH[payload[pos]]
        pos += second
        status: int = payload[pos] | payload[pos + 1] << 8
    except IndexError:
        raise RemoteProtocolError("truncated OK packet") from None
    if (header != _OK and header != _EOF) or not first or not second or pos + 4 > len(payload):
        raise RemoteProtocolError("not an OK packet")
    return status


@dataclass(frozen=True, slots=True)
class ErrPacket:
    """ERR_Packet."""

    code: int
    message: str
    sqlstate: str = "HY000"


def parse_err(payload: Buffer) -> ErrPacket:
    """Parse an ERR; the '#' SQLSTATE marker is optional (handshake and pre-4.1 errors)."""
    data = _as_bytes(payload)
    if len(data) < 3 or data[0] != _ERR:
        raise RemoteProtocolError("not an ERR packet")
    code = data[1] | data[2] << 8
    if len(data) > 3 and data[3] == 0x23:  # '#'
        if len(data) < 9:
            raise RemoteProtocolError("truncated SQLSTATE in ERR packet")
        sqlstate = data[4:9].decode("ascii", errors="replace")
        message = data[9:]
    else:
        sqlstate = "HY000"
        message = data[3:]
    return ErrPacket(
        code=code, message=message.decode("utf-8", errors="replace"), sqlstate=sqlstate
    )


def build_err(code: int, message: str, sqlstate: str | None = None, codec: str = "utf-8") -> bytes:
    """ERR packet, always with the '#' marker; SQLSTATE defaults from the code. The
    message goes in ``codec`` (the server sends its messages in the session's
    ``character_set_results``), a character it cannot hold as ``?``, as the server's."""
    if sqlstate is None:
        state = SQLSTATE_FOR.get(code, b"HY000")
    else:
        try:
            state = sqlstate.encode("ascii")
        except UnicodeEncodeError:
            raise LocalProtocolError(f"SQLSTATE {sqlstate!r} is not ASCII") from None
    if len(state) != 5:
        raise LocalProtocolError(f"SQLSTATE {state!r} is not 5 characters")
    text = message.encode(codec, "replace")
    return b"\xff" + _le(code, 2, "error code") + b"#" + state + text


@dataclass(frozen=True, slots=True)
class EofPacket:
    """EOF_Packet (4.1): ends column definitions and rows unless DEPRECATE_EOF."""

    warnings: int = 0
    status: int = 0


def parse_eof(payload: Buffer) -> EofPacket:
    """Parse an EOF: 0xFE, warnings(2), status(2), exactly 5 bytes."""
    data = _as_bytes(payload)
    if len(data) != 5 or data[0] != _EOF:
        raise RemoteProtocolError("not a 5-byte EOF packet")
    return EofPacket(warnings=data[1] | data[2] << 8, status=data[3] | data[4] << 8)


def build_eof(e: EofPacket) -> bytes:
    """EOF packet payload."""
    return b"\xfe" + _le(e.warnings, 2, "warnings") + _le(e.status, 2, "status")


def is_eof_packet(payload_first_byte: int, payload_length: int) -> bool:
    """0xFE and shorter than 9 bytes: a text row starting 0xFE (8-byte length) is longer."""
    return payload_first_byte == _EOF and payload_length < 9


def is_result_terminator(first_byte: int, length: int, deprecate_eof: bool) -> bool:
    """Whether a packet ends a row stream: EOF, or under DEPRECATE_EOF an OK with header 0xFE.

    Under DEPRECATE_EOF a row can only start with 0xFE when its first value is at least 16 MiB
    long, so its first packet is a full 0xFFFFFF one; a shorter 0xFE packet is the OK.
    """
    if deprecate_eof:
        return first_byte == _EOF and length < 0xFFFFFF
    return first_byte == _EOF and length < 9


# --- result sets ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColumnDefinition:
    """Protocol::ColumnDefinition41."""

    catalog: bytes
    schema: bytes
    table: bytes
    org_table: bytes
    name: bytes
    org_name: bytes
    charset: int
    length: int
    type: int
    """A FieldType value."""
    flags: int
    decimals: int


def parse_column_definition(payload: Buffer) -> ColumnDefinition:
    """Parse ColumnDefinition41; a trailing lenenc default value (COM_FIELD_LIST) is ignored."""
    data = _as_bytes(payload)
    catalog, pos = _read_lenenc_str(data, 0, "catalog")
    schema, pos = _read_lenenc_str(data, pos, "schema")
    table, pos = _read_lenenc_str(data, pos, "table")
    org_table, pos = _read_lenenc_str(data, pos, "org_table")
    name, pos = _read_lenenc_str(data, pos, "name")
    org_name, pos = _read_lenenc_str(data, pos, "org_name")
    if pos + 13 > len(data):
        raise RemoteProtocolError("truncated column definition")
    if data[pos] != 0x0C:
        raise RemoteProtocolError(f"column definition fixed block of {data[pos]} bytes, not 12")
    column = ColumnDefinition(
        catalog=catalog,
        schema=schema,
        table=table,
        org_table=org_table,
        name=name,
        org_name=org_name,
        charset=data[pos + 1] | data[pos + 2] << 8,
        length=int.from_bytes(data[pos + 3 : pos + 7], "little"),
        type=data[pos + 7],
        flags=data[pos + 8] | data[pos + 9] << 8,
        decimals=data[pos + 10],
    )
    pos += 13
    if pos < len(data):
        _, pos = read_lenenc_bytes(data, pos)  # COM_FIELD_LIST default value, NULL allowed
        _expect_end(data, pos, "column definition")
    return column


def build_column_definition(c: ColumnDefinition) -> bytes:
    """ColumnDefinition41 payload (no COM_FIELD_LIST default value)."""
    return b"".join(
        (
            write_lenenc_bytes(c.catalog),
            write_lenenc_bytes(c.schema),
            write_lenenc_bytes(c.table),
            write_lenenc_bytes(c.org_table),
            write_lenenc_bytes(c.name),
            write_lenenc_bytes(c.org_name),
            b"\x0c",
            _le(c.charset, 2, "charset"),
            _le(c.length, 4, "column length"),
            _le(c.type, 1, "column type"),
            _le(c.flags, 2, "column flags"),
            _le(c.decimals, 1, "decimals"),
            b"\0\0",
        )
    )


def parse_text_row(payload: Buffer, column_count: int) -> list[bytes | None]:
    """Parse a text-protocol row of exactly ``column_count`` values; 0xFB is NULL."""
    data = _as_bytes(payload)
    n = len(data)
    values: list[bytes | None] = []
    append = values.append
    pos = 0
    for _ in range(column_count):
        if pos >= n:
            raise RemoteProtocolError(f"text row has {len(values)} of {column_count} values")
        first = data[pos]
        if first < 0xFB:
            end = pos + 1 + first
            if end > n:
                raise RemoteProtocolError("text row value runs past the end of the packet")
            append(data[pos + 1 : end])
            pos = end
        elif first == _NULL:
            append(None)
            pos += 1
        else:
            value, pos = read_lenenc_bytes(data, pos)
            append(value)
    if pos != n:
        raise RemoteProtocolError(f"text row has more than {column_count} values")
    return values


def build_text_row(values: Sequence[bytes | None]) -> bytes:
    """Text-protocol row; ``None`` becomes the 0xFB NULL marker."""
    return b"".join([_NULL_BYTE if v is None else write_lenenc_bytes(v) for v in values])


_TEMPORAL = -1  # 1 length byte, then that many bytes
_LENENC = -2  # length-encoded string
_BINARY_WIDTH = [_LENENC] * 256
"""How a binary-protocol value of each column type is encoded: fixed width, or -1/-2."""
for _type, _width in (
    (FieldType.TINY, 1),
    (FieldType.SHORT, 2),
    (FieldType.YEAR, 2),
    (FieldType.LONG, 4),
    (FieldType.INT24, 4),
    (FieldType.FLOAT, 4),
    (FieldType.LONGLONG, 8),
    (FieldType.DOUBLE, 8),
    (FieldType.NULL, 0),
    (FieldType.DATE, _TEMPORAL),
    (FieldType.DATETIME, _TEMPORAL),
    (FieldType.TIMESTAMP, _TEMPORAL),
    (FieldType.TIME, _TEMPORAL),
):
    _BINARY_WIDTH[_type] = _width
del _type, _width


def parse_binary_row(payload: Buffer, columns: Sequence[ColumnDefinition]) -> list[bytes | None]:
    """Split a binary-protocol row into each value's raw encoding (length prefixes included)."""
    data = _as_bytes(payload)
    n = len(data)
    pos = 1 + (len(columns) + 9) // 8  # header, then the NULL bitmap (offset 2)
    if n < pos:
        raise RemoteProtocolError("truncated binary row")
    if data[0] != _OK:
        raise RemoteProtocolError(f"binary row header {data[0]:#x}, expected 0x00")
    values: list[bytes | None] = []
    append = values.append
    for i, column in enumerate(columns):
        bit = i + 2
        if data[1 + (bit >> 3)] & (1 << (bit & 7)):
            append(None)
            continue
        width = _BINARY_WIDTH[column.type]
        if width >= 0:
            end = pos + width
        elif width == _TEMPORAL:
            if pos >= n:
                raise RemoteProtocolError("truncated binary row")
            end = pos + 1 + data[pos]
        else:
            length, start = read_lenenc_int(data, pos)
            if length is None:
                raise RemoteProtocolError("NULL marker inside a binary row")
            end = start + length
        if end > n:
            raise RemoteProtocolError("binary row value runs past the end of the packet")
        append(data[pos:end])
        pos = end
    _expect_end(data, pos, "binary row")
    return values


def build_binary_row(values: Sequence[bytes | None]) -> bytes:
    """Binary-protocol row from raw value encodings as ``parse_binary_row`` returns them."""
    bitmap = bytearray((len(values) + 9) // 8)
    parts = [b"\x00", b""]
    for i, value in enumerate(values):
        if value is None:
            bit = i + 2
            bitmap[bit >> 3] |= 1 << (bit & 7)
        else:
            parts.append(value)
    parts[1] = bytes(bitmap)
    return b"".join(parts)


# --- prepared statements --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StmtPrepareOk:
    """COM_STMT_PREPARE_OK."""

    statement_id: int
    column_count: int
    param_count: int
    warnings: int


def parse_stmt_prepare_ok(payload: Buffer) -> StmtPrepareOk:
    """0x00, id(4), columns(2), params(2), filler(1), warnings(2): exactly 12 bytes."""
    data = _as_bytes(payload)
    if len(data) != 12 or data[0] != _OK:
        raise RemoteProtocolError("not a 12-byte COM_STMT_PREPARE OK")
    return StmtPrepareOk(
        statement_id=int.from_bytes(data[1:5], "little"),
        column_count=data[5] | data[6] << 8,
        param_count=data[7] | data[8] << 8,
        warnings=data[10] | data[11] << 8,
    )


def build_stmt_prepare_ok(p: StmtPrepareOk) -> bytes:
    """COM_STMT_PREPARE OK payload."""
    return b"".join(
        (
            b"\x00",
            _le(p.statement_id, 4, "statement id"),
            _le(p.column_count, 2, "column count"),
            _le(p.param_count, 2, "param count"),
            b"\x00",
            _le(p.warnings, 2, "warnings"),
        )
    )


_STATEMENT_COMMANDS = frozenset(
    {
        Command.STMT_EXECUTE,
        Command.STMT_SEND_LONG_DATA,
        Command.STMT_CLOSE,
        Command.STMT_RESET,
        Command.STMT_FETCH,
        Command.STMT_BULK_EXECUTE,
    }
)


def parse_statement_id(payload: Buffer) -> int:
    """Statement id of a command that names one: the 4 bytes after the command byte."""
    if len(payload) < 5:
        raise RemoteProtocolError("truncated statement command")
    if payload[0] not in _STATEMENT_COMMANDS:
        raise RemoteProtocolError(f"command {payload[0]:#x} carries no statement id")
    return payload[1] | payload[2] << 8 | payload[3] << 16 | payload[4] << 24


@dataclass(frozen=True, slots=True)
class StmtExecuteHeader:
    """The fixed head of COM_STMT_EXECUTE; the parameters after it are left to the caller."""

    statement_id: int
    flags: int
    """CursorType."""
    iteration_count: int


def parse_stmt_execute_header(payload: Buffer) -> StmtExecuteHeader:
    """0x17, id(4), flags(1), iterations(4); anything after is the parameter block."""
    if len(payload) < 10:
        raise RemoteProtocolError("truncated COM_STMT_EXECUTE")
    if payload[0] != Command.STMT_EXECUTE:
        raise RemoteProtocolError("not a COM_STMT_EXECUTE")
    return StmtExecuteHeader(
        statement_id=payload[1] | payload[2] << 8 | payload[3] << 16 | payload[4] << 24,
        flags=payload[5],
        iteration_count=payload[6] | payload[7] << 8 | payload[8] << 16 | payload[9] << 24,
    )


_CURSOR_FLAGS = int(CursorType.READ_ONLY | CursorType.FOR_UPDATE | CursorType.SCROLLABLE)


def opens_cursor(payload: Buffer) -> bool:
    """Whether a command is a COM_STMT_EXECUTE that asks for a cursor (its flags byte)."""
    return (
        len(payload) >= 6
        and payload[0] == Command.STMT_EXECUTE
        and bool(payload[5] & _CURSOR_FLAGS)
    )


@dataclass(frozen=True, slots=True)
class StmtFetch:
    """COM_STMT_FETCH: rows to read from an open cursor."""

    statement_id: int
    rows: int


def parse_stmt_fetch(payload: Buffer) -> StmtFetch:
    """0x1C, id(4), rows(4): exactly 9 bytes."""
    if len(payload) != 9 or payload[0] != Command.STMT_FETCH:
        raise RemoteProtocolError("not a 9-byte COM_STMT_FETCH")
    return StmtFetch(
        statement_id=payload[1] | payload[2] << 8 | payload[3] << 16 | payload[4] << 24,
        rows=payload[5] | payload[6] << 8 | payload[7] << 16 | payload[8] << 24,
    )
