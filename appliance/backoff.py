"""Backoff after repeated failed logins, per user name from a client address, pure.

A few mistakes are free; after ``free`` failures within ``window_s`` seconds a user name
from an address must wait before each further attempt, a delay that doubles with each
further failure up to ``max_delay_s``. A successful login of that name from that address
forgets its failures. Password and token guessing get slow, while an agent that fumbled
once is not locked out, and neither are the other agents behind the same address (a
host or a NAT that many agents share): one agent with an expired token waits alone.

An address as a whole waits only when its failures look like a scan: failures naming
more than ``scan_free`` different user names (or none: a client that never sent its
login) within the window. Then its logins are refused before their credentials are
checked, except those of a user name that logged in from that address within
``known_s`` (an agent already proven there is not locked out by a neighbour's scan); the
shell also admits a valid token whatever waits, as no token can be guessed.

An IPv6 client counts by its /64 network: one host commonly holds a whole /64 and may
take a new address for every attempt.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["LoginBackoff", "LoginSlots"]

K = TypeVar("K", str, tuple[str, str])
W = TypeVar("W")
_NO_NAME = ""  # the failures of clients that never named a user


@functools.lru_cache(maxsize=4096)
def client_of(address: str) -> str:
    """What failures count against: an IPv4 address (also IPv4-mapped IPv6), an IPv6
    address's /64 network; anything else as given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address


@dataclass(slots=True)
class _Record:
    failures: int
    last: float
    blocked_until: float = 0.0
    reported_until: float = 0.0  # the block whose first refused connection was recorded
    names: set[str] = field(default_factory=set)  # an address's: the user names it failed


class LoginBackoff:
    """Failed logins per (client address, user name) and per address, and the waits."""

    def __init__(
        self,
        free: int = 5,
        window_s: float = 300.0,
        first_delay_s: float = 1.0,
        max_delay_s: float = 300.0,
        max_addresses: int = 100_000,
        scan_free: int | None = None,
        known_s: float = 86_400.0,
    ) -> None:
        self.free = free
        self.scan_free = max(10, 2 * free) if scan_free is None else scan_free
        self.window_s = window_s
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.max_addresses = max_addresses
        self.known_s = known_s
        self._by_user: dict[tuple[str, str], _Record] = {}
        self._known: dict[tuple[str, str], float] = {}  # (address, name): its last login
        self._by_address: dict[str, _Record] = {}

    def failed(self, address: str, user: str | None, now: float) -> None:
        """A failed login from ``address``; ``user`` is None when no name was given."""
        address = client_of(address)
        name = user or _NO_NAME
        if user:
            self._count(self._by_user, (address, name), self.free, now)
        spread = self._by_address.get(address)
        if spread is not None and now - spread.last > self.window_s:
            spread = None
        if spread is None or name == _NO_NAME or name not in spread.names:
            spread = self._count(self._by_address, address, self.scan_free, now)
            if name != _NO_NAME and len(spread.names) <= self.scan_free:
                spread.names.add(name)  # bounded: past the limit every name counts anyway
        else:
            spread.last = now  # a name failing again keeps the scan's evidence fresh

    def succeeded(self, address: str, user: str, now: float) -> None:
        """``user`` logged in from ``address``: its own failures are forgotten (those
        that count against the address as a whole age out with the window), and it is
        known there (see ``known``)."""
        key = (client_of(address), user)
        self._by_user.pop(key, None)
        known = self._known
        known.pop(key, None)  # re-inserted last: the dict stays in order of last login
        if len(known) >= self.max_addresses:
            for old in list(known)[: len(known) // 2]:
                del known[old]
        known[key] = now

    def known(self, address: str, user: str, now: float) -> bool:
        """Whether ``user`` logged in from ``address`` within ``known_s``: then the
        address's wait (a scan) does not hold it up, only its own name's."""
        last = self._known.get((client_of(address), user))
        return last is not None and now - last <= self.known_s

    def wait(self, address: str, user: str, now: float) -> float:
        """Seconds ``user`` must still wait before it may try again from ``address``."""
        record = self._by_user.get((client_of(address), user))
        return 0.0 if record is None else max(0.0, record.blocked_until - now)

    def address_wait(self, address: str, now: float) -> float:
        """Seconds every connection from ``address`` must still wait (0: it may try)."""
        record = self._by_address.get(client_of(address))
        return 0.0 if record is None else max(0.0, record.blocked_until - now)

    def first_refusal(self, address: str, user: str | None = None) -> bool:
        """Whether a login refused now is the first of the current block of ``address``
        (``user`` None) or of ``user`` from it: that one is recorded; the others of the
        same block are only counted out (one record per connection would let a blocked
        client fill the ledger)."""
        address = client_of(address)
        record = (
            self._by_address.get(address) if user is None else self._by_user.get((address, user))
        )
        if record is None or record.reported_until == record.blocked_until:
            return False
        record.reported_until = record.blocked_until
        return True

    def _count(self, table: dict[K, _Record], key: K, free: int, now: float) -> _Record:
        record = table.get(key)
        if record is None or now - record.last > self.window_s:
            if len(table) >= self.max_addresses:
                self._forget_old(table, now)
            record = table[key] = _Record(0, now)
        record.failures += 1
        record.last = now
        over = record.failures - free
        if over > 0:
            delay = min(self.max_delay_s, self.first_delay_s * 2 ** (over - 1))
            record.blocked_until = now + delay
        return record

    def _forget_old(self, table: dict[K, _Record], now: float) -> None:
        stale = [k for k, r in table.items() if now - r.last > self.window_s]
        for key in stale or list(table)[: len(table) // 2]:
            del table[key]


WAITING_PER_SLOT = 16
"""Connections of one address that may wait for a login slot, per slot (see
``LoginSlots.crowded``): 256 with the default ``max_pending_logins``."""


class LoginSlots(Generic[W]):
    """At most ``per_address`` logins in progress per client address (as ``client_of``
    counts it); the connections beyond wait in turn for one to end.

    Each login in progress holds a connection to the target from the moment the client
    connects (the target's greeting is the client's), so without a bound one address
    that never finishes its logins holds as many of the target's connections as it
    opens, up to the target's ``max_connections``, and every other client is turned
    away by the target. A waiting connection holds none.
    """

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address
        self._held: dict[str, int] = {}
        self._waiting: dict[str, OrderedDict[W, None]] = {}  # in order of arrival

    def crowded(self, address: str) -> bool:
        """Whether ``address`` has ``WAITING_PER_SLOT`` times its slots waiting already:
        a further connection is turned away at once. Each waiting one keeps its socket
        for up to the login timeout, and one client opening 20,000 connections in 7 s
        took every file descriptor the gateway had (other addresses' logins failed)."""
        waiting = self._waiting.get(client_of(address))
        return waiting is not None and len(waiting) >= self.per_address * WAITING_PER_SLOT

    def take(self, address: str, who: W) -> bool:
        """True: ``who`` has a slot now; False: it waits until ``release`` hands it one
        (or it ``leave``s)."""
        key = client_of(address)
        held = self._held.get(key, 0)
        if held < self.per_address:
            self._held[key] = held + 1
            return True
        self._waiting.setdefault(key, OrderedDict())[who] = None
        return False

    def release(self, address: str) -> W | None:
        """A slot of ``address`` is free: the next waiting connection, which now holds
        it, or None."""
        key = client_of(address)
        waiting = self._waiting.get(key)
        if waiting:
            nxt, _ = waiting.popitem(last=False)
            if not waiting:
                del self._waiting[key]
            return nxt  # the slot passes on: the count stays
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)
        return None

    def leave(self, address: str, who: W) -> None:
        """``who`` stops waiting (its connection ended or its time ran out)."""
        key = client_of(address)
        waiting = self._waiting.get(key)
        if waiting is None:
            return
        waiting.pop(who, None)
        if not waiting:
            del self._waiting[key]

    def waiting(self, address: str) -> int:
        """How many connections from ``address`` wait for a slot."""
        return len(self._waiting.get(client_of(address), ()))

    def in_progress(self, address: str) -> int:
        """How many logins from ``address`` hold a slot."""
        return self._held.get(client_of(address), 0)
