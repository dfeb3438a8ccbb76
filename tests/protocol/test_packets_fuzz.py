"""Hypothesis against the packet parsers: only RemoteProtocolError may come out of bad bytes.

Every real sample of ``test_packets`` is truncated and mutated (byte flips, insertions,
deletions) and fed to every parser, not only its own: a server packet arriving where a client
packet was expected is exactly the kind of input a gateway sees. Round-trip properties check
that build then parse is the identity for generated OK, ERR, column definitions and rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pymysql.connections import _lenenc_int

from appliance.mysql.constants import Capability, FieldType, ServerStatus
from appliance.mysql.errors import RemoteProtocolError
from appliance.mysql.packets import (
    ColumnDefinition,
    ErrPacket,
    Greeting,
    HandshakeResponse,
    OkPacket,
    build_binary_row,
    build_column_definition,
    build_err,
    build_greeting,
    build_handshake_response,
    build_ok,
    build_text_row,
    is_ssl_request,
    ok_status,
    parse_auth_more_data,
    parse_auth_switch_request,
    parse_binary_row,
    parse_column_definition,
    parse_eof,
    parse_err,
    parse_greeting,
    parse_handshake_response,
    parse_ok,
    parse_ssl_request,
    parse_statement_id,
    parse_stmt_execute_header,
    parse_stmt_fetch,
    parse_stmt_prepare_ok,
    parse_text_row,
    read_lenenc_bytes,
    read_lenenc_int,
    read_nul_bytes,
    write_lenenc_int,
)
from tests.protocol.test_packets import (
    CASES,
    CLI_CAPS,
    CUSTOMERS_COLUMNS,
    MIXED_COLUMNS,
    PYMYSQL_CAPS,
)

FUZZ = settings(max_examples=200, deadline=None)

SAMPLES = sorted({case.payload for case in CASES})

PARSERS: list[tuple[str, Callable[[Any], object]]] = [
    ("greeting", parse_greeting),
    ("is_ssl_request", is_ssl_request),
    ("ssl_request", parse_ssl_request),
    ("handshake_response", parse_handshake_response),
    ("auth_switch", parse_auth_switch_request),
    ("auth_more_data", parse_auth_more_data),
    ("ok_41", lambda p: parse_ok(p, PYMYSQL_CAPS)),
    ("ok_session_track", lambda p: parse_ok(p, CLI_CAPS)),
    ("ok_status", lambda p: ok_status(p, CLI_CAPS)),
    ("err", parse_err),
    ("eof", parse_eof),
    ("column_definition", parse_column_definition),
    ("text_row_1", lambda p: parse_text_row(p, 1)),
    ("text_row_7", lambda p: parse_text_row(p, 7)),
    ("binary_row_customers", lambda p: parse_binary_row(p, CUSTOMERS_COLUMNS)),
    ("binary_row_mixed", lambda p: parse_binary_row(p, MIXED_COLUMNS)),
    ("stmt_prepare_ok", parse_stmt_prepare_ok),
    ("statement_id", parse_statement_id),
    ("stmt_execute_header", parse_stmt_execute_header),
    ("stmt_fetch", parse_stmt_fetch),
    ("lenenc_int", lambda p: read_lenenc_int(p, 0)),
    ("lenenc_int_at_1", lambda p: read_lenenc_int(p, 1)),
    ("lenenc_bytes", lambda p: read_lenenc_bytes(p, 0)),
    ("nul_bytes", lambda p: read_nul_bytes(p, 1)),
]


def feed_everywhere(payload: bytes) -> None:
    """Run every parser on the payload (as bytes and as a memoryview): a clean error at most."""
    for view in (payload, memoryview(payload)):
        for _name, parse in PARSERS:
            try:
                parse(view)
            except RemoteProtocolError:
                pass


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real sample with up to four flips, insertions, deletions, or a cut."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and at < len(data):
            del data[at : at + draw(st.integers(1, 4))]
        elif op == "truncate":
            del data[at:]
    return bytes(data)


def test_every_prefix_of_every_sample_everywhere() -> None:
    for sample in SAMPLES:
        for n in range(len(sample) + 1):
            feed_everywhere(sample[:n])


@FUZZ
@given(mutated())
def test_mutated_samples_raise_only_protocol_errors(payload: bytes) -> None:
    feed_everywhere(payload)


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_protocol_errors(payload: bytes) -> None:
    feed_everywhere(payload)


# --- round trips ----------------------------------------------------------------------------

U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
U64 = st.integers(0, (1 << 64) - 1)
# Lengths that cross the 1-byte/0xFC boundary of length-encoded strings now and then.
BLOBS = st.one_of(st.binary(max_size=20), st.binary(min_size=250, max_size=300))


@FUZZ
@given(U64)
def test_lenenc_int_round_trip(value: int) -> None:
    encoded = write_lenenc_int(value)
    assert encoded == _lenenc_int(value)
    assert read_lenenc_int(encoded, 0) == (value, len(encoded))


@st.composite
def ok_packets(draw: st.DrawFn) -> tuple[OkPacket, int]:
    caps = draw(st.sampled_from([PYMYSQL_CAPS, CLI_CAPS]))
    status = draw(U16)
    track_state = bool(
        caps & Capability.SESSION_TRACK and status & ServerStatus.SESSION_STATE_CHANGED
    )
    ok = OkPacket(
        affected_rows=draw(U64),
        last_insert_id=draw(U64),
        status=status,
        warnings=draw(U16),
        info=draw(BLOBS),
        session_state=draw(BLOBS) if track_state else b"",
        header=draw(st.sampled_from([0x00, 0xFE])),
    )
    return ok, caps


@FUZZ
@given(ok_packets())
def test_ok_round_trip(sample: tuple[OkPacket, int]) -> None:
    ok, caps = sample
    payload = build_ok(ok, caps)
    assert parse_ok(payload, caps) == ok
    assert ok_status(payload, caps) == ok.status


SQLSTATES = st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=5, max_size=5)


@FUZZ
@given(U16, st.text(max_size=200), SQLSTATES)
def test_err_round_trip(code: int, message: str, sqlstate: str) -> None:
    assert parse_err(build_err(code, message, sqlstate)) == ErrPacket(code, message, sqlstate)


COLUMNS = st.builds(
    ColumnDefinition,
    catalog=BLOBS,
    schema=BLOBS,
    table=BLOBS,
    org_table=BLOBS,
    name=BLOBS,
    org_name=BLOBS,
    charset=U16,
    length=U32,
    type=st.integers(0, 255),
    flags=U16,
    decimals=st.integers(0, 255),
)


@FUZZ
@given(COLUMNS)
def test_column_definition_round_trip(column: ColumnDefinition) -> None:
    assert parse_column_definition(build_column_definition(column)) == column


@FUZZ
@given(st.lists(st.one_of(st.none(), BLOBS), max_size=12))
def test_text_row_round_trip(values: list[bytes | None]) -> None:
    assert parse_text_row(build_text_row(values), len(values)) == values


_FIXED = {
    FieldType.TINY: 1,
    FieldType.SHORT: 2,
    FieldType.YEAR: 2,
    FieldType.LONG: 4,
    FieldType.INT24: 4,
    FieldType.FLOAT: 4,
    FieldType.LONGLONG: 8,
    FieldType.DOUBLE: 8,
    FieldType.NULL: 0,
}
_TEMPORAL_LENGTHS = {
    FieldType.DATE: [0, 4],
    FieldType.DATETIME: [0, 4, 7, 11],
    FieldType.TIMESTAMP: [0, 4, 7, 11],
    FieldType.TIME: [0, 8, 12],
}
_STRINGS = [
    FieldType.DECIMAL,
    FieldType.NEWDECIMAL,
    FieldType.VARCHAR,
    FieldType.VAR_STRING,
    FieldType.STRING,
    FieldType.BLOB,
    FieldType.TINY_BLOB,
    FieldType.MEDIUM_BLOB,
    FieldType.LONG_BLOB,
    FieldType.JSON,
    FieldType.ENUM,
    FieldType.SET,
    FieldType.BIT,
    FieldType.GEOMETRY,
    FieldType.VECTOR,
]


@st.composite
def binary_values(draw: st.DrawFn) -> tuple[FieldType, bytes | None]:
    """A column type and a raw binary-protocol encoding of one value of it (or NULL)."""
    field_type = draw(st.sampled_from([*_FIXED, *_TEMPORAL_LENGTHS, *_STRINGS]))
    if draw(st.booleans()) and draw(st.booleans()):
        return field_type, None
    if field_type in _FIXED:
        width = _FIXED[field_type]
        return field_type, draw(st.binary(min_size=width, max_size=width))
    if field_type in _TEMPORAL_LENGTHS:
        n = draw(st.sampled_from(_TEMPORAL_LENGTHS[field_type]))
        return field_type, bytes([n]) + draw(st.binary(min_size=n, max_size=n))
    body = draw(BLOBS)
    return field_type, write_lenenc_int(len(body)) + body


@FUZZ
@given(st.lists(binary_values(), max_size=20))
def test_binary_row_round_trip(cells: list[tuple[FieldType, bytes | None]]) -> None:
    columns = [ColumnDefinition(b"def", b"", b"", b"", b"c", b"", 63, 0, t, 0, 0) for t, _ in cells]
    values = [v for _, v in cells]
    assert parse_binary_row(build_binary_row(values), columns) == values


NAMES = st.binary(max_size=40).map(lambda b: b.replace(b"\0", b""))
PLUGINS = st.sampled_from(["mysql_native_password", "caching_sha2_password", "client_ed25519", ""])


@st.composite
def greetings(draw: st.DrawFn) -> Greeting:
    caps = draw(U32) | Capability.SECURE_CONNECTION
    plugin = draw(PLUGINS) if caps & Capability.PLUGIN_AUTH else ""
    mariadb = 0 if caps & Capability.LONG_PASSWORD else draw(U32)
    # Without PLUGIN_AUTH no length is sent, and readers take exactly 20 bytes.
    longest = 40 if caps & Capability.PLUGIN_AUTH else 20
    return Greeting(
        server_version=draw(NAMES),
        connection_id=draw(U32),
        scramble=draw(st.binary(min_size=20, max_size=longest)),
        capabilities=caps,
        charset=draw(st.integers(0, 255)),
        status=draw(U16),
        auth_plugin=plugin,
        mariadb_capabilities=mariadb,
    )


@FUZZ
@given(greetings())
def test_greeting_round_trip(greeting: Greeting) -> None:
    assert parse_greeting(build_greeting(greeting)) == greeting


@st.composite
def handshake_responses(draw: st.DrawFn) -> HandshakeResponse:
    caps = draw(U32) | Capability.PROTOCOL_41
    if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth = draw(BLOBS)
    elif caps & Capability.SECURE_CONNECTION:
        auth = draw(st.binary(max_size=255))
    else:
        auth = draw(NAMES)
    attributes = ()
    if caps & Capability.CONNECT_ATTRS:
        attributes = tuple(draw(st.lists(st.tuples(NAMES, BLOBS), max_size=4)))
    return HandshakeResponse(
        capabilities=caps,
        max_packet=draw(U32),
        charset=draw(st.integers(0, 255)),
        user=draw(NAMES),
        auth_response=auth,
        database=draw(NAMES) if caps & Capability.CONNECT_WITH_DB else None,
        auth_plugin=draw(PLUGINS) if caps & Capability.PLUGIN_AUTH else None,
        attributes=attributes,
        mariadb_capabilities=0 if caps & Capability.LONG_PASSWORD else draw(U32),
    )


@FUZZ
@given(handshake_responses())
def test_handshake_response_round_trip(response: HandshakeResponse) -> None:
    assert parse_handshake_response(build_handshake_response(response)) == response
