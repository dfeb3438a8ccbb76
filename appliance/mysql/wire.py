"""Framing: the only code that turns a byte stream into MySQL packets and back.

A frame is a 3-byte little-endian length, a 1-byte sequence id and that many payload
bytes. A payload of exactly 0xFFFFFF bytes is continued by the next frame (the 16 MiB
rule), so one logical packet may span many frames; a logical packet whose length is an
exact multiple of 0xFFFFFF ends with an empty frame. Sequence ids wrap at 256.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.mysql.constants import MAX_PAYLOAD
from appliance.mysql.errors import PacketTooLarge, RemoteProtocolError


@dataclass(slots=True)
class Packet:
    """One logical packet: the sequence id of its first frame, the joined payload, and the
    exact frame bytes it arrived in (what the gateway forwards, byte for byte)."""

    seq: int
    payload: bytes
    raw: bytes

    @property
    def last_seq(self) -> int:
        """Sequence id of the last frame: the next packet in the exchange uses this + 1."""
        frames = len(self.payload) // MAX_PAYLOAD + 1
        return (self.seq + frames - 1) & 0xFF


class PacketReader:
    """A receive buffer: feed bytes, take whole logical packets.

    ``max_payload`` bounds how much an incomplete packet may hold, so a peer cannot make
    the gateway buffer without limit by announcing huge lengths.
    """

    __slots__ = ("_buf", "_max_payload")

    def __init__(self, max_payload: int) -> None:
        self._buf = bytearray()
        self._max_payload = max_payload

    @property
    def max_payload(self) -> int:
        return self._max_payload

    @max_payload.setter
    def max_payload(self, value: int) -> None:
        self._max_payload = value

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def __len__(self) -> int:
        return len(self._buf)

    def clear(self) -> None:
        self._buf = bytearray()

    def take_remaining(self) -> bytes:
        """Hand over whatever is buffered (used when the stream changes hands, e.g. to TLS)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def next_packet(self) -> Packet | None:
        """The next complete logical packet, or None until more bytes arrive."""
        buf = self._buf
        pos = 0
        n = len(buf)
        total = 0
        seq = -1
        expected = -1
        while True:
            if n - pos < 4:
                return None
            length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
            frame_seq = buf[pos + 3]
            if seq < 0:
                seq = frame_seq
            elif frame_seq != expected:
                raise RemoteProtocolError(
                    f"continuation frame has sequence id {frame_seq}, expected {expected}"
                )
            expected = (frame_seq + 1) & 0xFF
            total += length
            if total > self._max_payload:
                whole = length < MAX_PAYLOAD and total == length  # one frame, this one
                raise PacketTooLarge(
                    f"packet of more than {self._max_payload} bytes exceeds the gateway's limit",
                    seq,
                    max(0, pos + 4 + length - n) if whole else -1,
                )
            if n - pos - 4 < length:
                return None
            pos += 4 + length
            if length < MAX_PAYLOAD:
                break
        raw = bytes(buf[:pos])
        del buf[:pos]
        if pos == total + 4:
            payload = raw[4:]
        else:
            payload = join_frames(raw)
        return Packet(seq, payload, raw)


def join_frames(raw: bytes) -> bytes:
    """The payload of one logical packet from its whole frames (headers dropped)."""
    parts = []
    pos = 0
    n = len(raw)
    while pos < n:
        length = raw[pos] | (raw[pos + 1] << 8) | (raw[pos + 2] << 16)
        parts.append(raw[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return b"".join(parts)


def frame(seq: int, payload: bytes | bytearray | memoryview) -> bytes:
    """Frame a payload starting at ``seq``, splitting it at 0xFFFFFF bytes as needed."""
    n = len(payload)
    if n < MAX_PAYLOAD:
        return bytes((n & 0xFF, (n >> 8) & 0xFF, n >> 16, seq & 0xFF)) + bytes(payload)
    parts = []
    pos = 0
    while True:
        chunk = payload[pos : pos + MAX_PAYLOAD]
        size = len(chunk)
        parts.append(bytes((size & 0xFF, (size >> 8) & 0xFF, size >> 16, seq & 0xFF)))
        parts.append(bytes(chunk))
        seq += 1
        pos += size
        if size < MAX_PAYLOAD:
            return b"".join(parts)


def frames_needed(payload_length: int) -> int:
    """How many frames (and so sequence ids) a payload of this length takes."""
    return payload_length // MAX_PAYLOAD + 1
