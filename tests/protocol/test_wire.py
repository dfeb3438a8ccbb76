"""Framing: 3-byte lengths, sequence ids, the 16 MiB continuation rule, limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.mysql.constants import MAX_PAYLOAD
from appliance.mysql.errors import RemoteProtocolError
from appliance.mysql.wire import PacketReader, frame, frames_needed

# COM_QUERY "SELECT 1" as PyMySQL sends it
SELECT_1 = bytes.fromhex("090000000353454c4543542031")


def test_frame_small_packet_is_byte_exact() -> None:
    assert frame(0, b"\x03SELECT 1") == SELECT_1
    assert frame(255, b"") == b"\x00\x00\x00\xff"


def test_reader_whole_packet() -> None:
    r = PacketReader(1 << 20)
    r.feed(SELECT_1)
    pkt = r.next_packet()
    assert pkt is not None
    assert (pkt.seq, pkt.payload, pkt.raw) == (0, b"\x03SELECT 1", SELECT_1)
    assert r.next_packet() is None
    assert len(r) == 0


def test_reader_byte_by_byte() -> None:
    r = PacketReader(1 << 20)
    for i, b in enumerate(SELECT_1):
        assert r.next_packet() is None, i
        r.feed(bytes([b]))
    pkt = r.next_packet()
    assert pkt is not None and pkt.payload == b"\x03SELECT 1"


def test_reader_leaves_trailing_bytes_for_the_next_packet() -> None:
    r = PacketReader(1 << 20)
    r.feed(SELECT_1 + b"\x01\x00\x00\x00\x0e" + b"\x05\x00")
    first = r.next_packet()
    second = r.next_packet()
    assert first is not None and first.payload == b"\x03SELECT 1"
    assert second is not None and second.payload == b"\x0e"
    assert r.next_packet() is None
    assert len(r) == 2


def test_continuation_exactly_16mib_ends_with_empty_frame() -> None:
    payload = b"\x03" + b"x" * (MAX_PAYLOAD - 1)
    raw = frame(0, payload)
    assert len(raw) == 4 + MAX_PAYLOAD + 4
    assert raw[:4] == b"\xff\xff\xff\x00"
    assert raw[-4:] == b"\x00\x00\x00\x01"
    r = PacketReader(64 << 20)
    r.feed(raw)
    pkt = r.next_packet()
    assert pkt is not None
    assert pkt.payload == payload and pkt.raw == raw
    assert pkt.last_seq == 1


def test_continuation_over_16mib_joins_frames() -> None:
    payload = bytes(range(256)) * ((MAX_PAYLOAD * 2 + 1000) // 256)
    raw = frame(3, payload)
    assert frames_needed(len(payload)) == 3
    r = PacketReader(64 << 20)
    # feed in awkward chunks across frame borders
    for i in range(0, len(raw), 1 << 20 | 7):
        r.feed(raw[i : i + (1 << 20 | 7)])
    pkt = r.next_packet()
    assert pkt is not None
    assert pkt.seq == 3 and pkt.last_seq == 5
    assert pkt.payload == payload


def test_continuation_with_wrong_sequence_is_refused() -> None:
    bad = b"\xff\xff\xff\x00" + b"a" * MAX_PAYLOAD + b"\x01\x00\x00\x07b"
    r = PacketReader(64 << 20)
    r.feed(bad)
    with pytest.raises(RemoteProtocolError, match="sequence id 7, expected 1"):
        r.next_packet()


def test_sequence_ids_wrap() -> None:
    payload = b"y" * (MAX_PAYLOAD + 1)
    raw = frame(255, payload)
    assert raw[3] == 255
    assert raw[4 + MAX_PAYLOAD + 3] == 0
    r = PacketReader(64 << 20)
    r.feed(raw)
    pkt = r.next_packet()
    assert pkt is not None and pkt.last_seq == 0


def test_announced_length_over_the_limit_is_refused_before_buffering() -> None:
    r = PacketReader(1000)
    r.feed(b"\xe9\x03\x00\x00")  # announces 1001 bytes
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        r.next_packet()


def test_take_remaining_hands_over_buffered_bytes() -> None:
    r = PacketReader(100)
    r.feed(b"\x16\x03\x01")  # the start of a TLS ClientHello
    assert r.next_packet() is None
    assert r.take_remaining() == b"\x16\x03\x01"
    assert len(r) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), min_size=1, max_size=8),
    st.integers(1, 50),
)
def test_any_chunking_yields_the_same_packets(packets: list[tuple[int, bytes]], chunk: int) -> None:
    stream = b"".join(frame(seq, payload) for seq, payload in packets)
    r = PacketReader(1 << 20)
    got = []
    for i in range(0, len(stream), chunk):
        r.feed(stream[i : i + chunk])
        while (pkt := r.next_packet()) is not None:
            got.append((pkt.seq, pkt.payload))
    assert got == packets


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_only_raises_protocol_error(data: bytes) -> None:
    r = PacketReader(1 << 10)
    r.feed(data)
    try:
        while r.next_packet() is not None:
            pass
    except RemoteProtocolError:
        pass
