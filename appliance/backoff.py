"""Per-client-address backoff after repeated failed logins, pure.

A few mistakes are free; after ``free`` failures within ``window_s`` seconds an address
is refused for a delay that doubles with each further failure, up to ``max_delay_s``.
A successful login forgets the address. Password and token guessing get slow while an
agent that fumbled once is not locked out.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LoginBackoff"]


@dataclass(slots=True)
class _Record:
    failures: int
    last: float
    blocked_until: float = 0.0
    reported_until: float = 0.0  # the block whose first refused connection was recorded


class LoginBackoff:
    """Failed logins per client address, and how long each must wait."""

    def __init__(
        self,
        free: int = 5,
        window_s: float = 300.0,
        first_delay_s: float = 1.0,
        max_delay_s: float = 300.0,
        max_addresses: int = 100_000,
    ) -> None:
        self.free = free
        self.window_s = window_s
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.max_addresses = max_addresses
        self._by_address: dict[str, _Record] = {}

    def failed(self, address: str, now: float) -> None:
        record = self._by_address.get(address)
        if record is None or now - record.last > self.window_s:
            if len(self._by_address) >= self.max_addresses:
                self._forget_old(now)
            record = self._by_address[address] = _Record(0, now)
        record.failures += 1
        record.last = now
        over = record.failures - self.free
        if over > 0:
            delay = min(self.max_delay_s, self.first_delay_s * 2 ** (over - 1))
            record.blocked_until = now + delay

    def succeeded(self, address: str) -> None:
        self._by_address.pop(address, None)

    def wait(self, address: str, now: float) -> float:
        """Seconds ``address`` must still wait before it may try again (0: it may)."""
        record = self._by_address.get(address)
        if record is None:
            return 0.0
        return max(0.0, record.blocked_until - now)

    def first_refusal(self, address: str) -> bool:
        """Whether a connection refused now is the first of the address's current block:
        that one is recorded; the others of the same block are only counted out (one
        record per connection would let a blocked client fill the ledger)."""
        record = self._by_address.get(address)
        if record is None or record.reported_until == record.blocked_until:
            return False
        record.reported_until = record.blocked_until
        return True

    def _forget_old(self, now: float) -> None:
        stale = [a for a, r in self._by_address.items() if now - r.last > self.window_s]
        for address in stale or list(self._by_address)[: len(self._by_address) // 2]:
            del self._by_address[address]
