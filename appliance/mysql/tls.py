"""TLS as more bytes: an ``ssl.SSLObject`` over two memory BIOs.

MySQL upgrades to TLS in the middle of its handshake (after an SSLRequest), so the
session core keeps reading and writing bytes and this wrapper turns ciphertext into
plaintext and back. No sockets, no event loop: the shell only moves bytes.
"""

from __future__ import annotations

import ssl

from appliance.mysql.errors import RemoteProtocolError

_READ_SIZE = 256 * 1024


class TlsEndpoint:
    """One side of a TLS connection kept entirely in memory."""

    __slots__ = ("_in", "_out", "_obj", "handshake_done", "closed", "failed")

    def __init__(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        self.handshake_done = False
        self.closed = False
        self.failed = False  # a TLS error: nothing more can be said over this connection

    def start(self) -> None:
        """Begin the handshake (the client side sends its ClientHello now)."""
        self._handshake()

    def _handshake(self) -> None:
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLError as exc:
            self.failed = True
            raise RemoteProtocolError(f"TLS handshake failed: {exc.reason or exc}") from exc
        self.handshake_done = True

    def receive(self, data: bytes | bytearray | memoryview) -> bytes:
        """Feed ciphertext from the peer; return whatever plaintext it yields."""
        self._in.write(data)
        if not self.handshake_done:
            self._handshake()
            if not self.handshake_done:
                return b""
        chunks = []
        while True:
            try:
                chunk = self._obj.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed = True
                break
            except ssl.SSLError as exc:
                self.failed = True
                raise RemoteProtocolError(f"TLS error: {exc.reason or exc}") from exc
            if not chunk:
                self.closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, plaintext: bytes | bytearray | memoryview) -> None:
        """Encrypt plaintext for the peer (collect it with ``take_outgoing``)."""
        if self.failed:
            return
        view = memoryview(plaintext)
        try:
            while view:
                written = self._obj.write(view)
                view = view[written:]
        except ssl.SSLError:
            self.failed = True  # the peer broke TLS; what it would have read is moot

    def take_outgoing(self) -> bytes:
        """Ciphertext waiting to go to the peer."""
        return self._out.read() if self._out.pending else b""

    @property
    def version(self) -> str | None:
        return self._obj.version()

    @property
    def cipher(self) -> str | None:
        c = self._obj.cipher()
        return c[0] if c else None
