"""Errors of the protocol core.

``ProtocolError`` is the only exception the sans-io core raises on bad input: a peer sent
bytes that break the protocol. The shell answers it with an ERR packet where the protocol
still allows one, then closes that one connection.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A peer broke the MySQL protocol; the message says how, for logs and ERR packets."""


class RemoteProtocolError(ProtocolError):
    """The peer (client or server) sent something the protocol does not allow."""


class LocalProtocolError(ProtocolError):
    """The gateway was asked to send something the protocol does not allow."""


class PacketTooLarge(RemoteProtocolError):
    """A packet longer than the reader takes; ``seq`` is its sequence id, so that the
    answer can follow it (the packet itself is never read), and ``unread`` how many of
    its bytes have not arrived yet (-1: unknown, more frames follow)."""

    def __init__(self, message: str, seq: int, unread: int = -1) -> None:
        super().__init__(message)
        self.seq = seq
        self.unread = unread
