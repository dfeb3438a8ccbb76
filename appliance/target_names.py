"""The addresses of the targets named by host name, looked up again while the gateway runs.

A redirected connection is routed by the address the client dialled, and the interception
rules match addresses, not names. A target whose name moves to another address (a
failover that updates DNS) would otherwise keep its old address in both: clients that
resolve the new one would be refused by the gateway's routing, or with the gateway's own
rules in place, reach the database without passing the gateway at all.

So the names are looked up at start and again every ``[network] resolve_interval_s``. An
address a name stops returning is still owned by its target for ``KEEP_S``: clients and
resolvers cache answers, and a client that dialled the old address is still carried to
the target (the gateway connects to the name, which reaches the new address). Round-robin
answers that return a subset each time keep every address they return in turn.
Literal addresses are never looked up.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.config import Config

KEEP_S = 600.0
"""How long an address a name no longer returns stays its target's (resolver caches)."""

Lookup = Callable[[str], Sequence[str]]


def lookup(host: str) -> list[str]:
    """The addresses a host name resolves to now; ``LookupError`` with the resolver's
    words (``Name or service not known``) when it does not."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise LookupError(exc.strerror or str(exc)) from None
    return sorted({str(info[4][0]) for info in infos})


def is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Move:
    """What one look-up changed for one target: ``added`` addresses its name now returns,
    ``dropped`` ones it stopped returning ``KEEP_S`` ago, ``now`` what it returns."""

    target: str
    host: str
    now: tuple[str, ...]
    added: tuple[str, ...]
    dropped: tuple[str, ...]


class TargetNames:
    """The addresses each named target is known by: those its name returns now, and
    those it returned within ``keep_s``. Synchronous (the look-ups block): the gateway
    calls ``refresh`` in a thread and reads the answers on its loop."""

    def __init__(
        self,
        config: Config,
        lookup: Lookup = lookup,
        keep_s: float = KEEP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._targets = [(t.name, t.host, t.port) for t in config.targets]
        self._lookup = lookup
        self._keep_s = keep_s
        self._clock = clock
        # host name -> address -> when the name last returned it
        self._seen: dict[str, dict[str, float]] = {
            host: {} for _, host, _ in self._targets if not is_literal(host)
        }
        self.failures: dict[str, str] = {}  # host -> why its last look-up failed
        self.refresh()

    @property
    def named(self) -> bool:
        """Whether any target is given by host name (else there is nothing to follow)."""
        return bool(self._seen)

    def refresh(self) -> list[Move]:
        """Look every name up again; what changed, per target. A name that does not
        resolve now keeps the addresses it had (until ``keep_s``): a DNS outage must not
        take a target's rules away, and it is said in ``failures``."""
        now = self._clock()
        changed: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {}
        for host, seen in self._seen.items():
            try:
                found = [str(a) for a in self._lookup(host)]
            except (OSError, LookupError, UnicodeError) as exc:
                self.failures[host] = str(exc) or type(exc).__name__
                found = []
            else:
                self.failures.pop(host, None)
            added = tuple(a for a in found if a not in seen)
            for address in found:
                seen[address] = now
            dropped = tuple(a for a, at in seen.items() if now - at > self._keep_s)
            for address in dropped:
                del seen[address]
            if added or dropped:
                changed[host] = (tuple(found), added, tuple(sorted(dropped)))
        return [
            Move(name, host, *changed[host]) for name, host, _ in self._targets if host in changed
        ]

    def addresses(self, host: str) -> list[str]:
        """The addresses ``host`` is known by (a literal is its own): the resolver of the
        interception plan. Raises ``LookupError`` when a name has none (yet)."""
        if is_literal(host):
            return [host]
        known = sorted(self._seen.get(host, {}))
        if not known:
            why = self.failures.get(host, "it resolved to no address")
            raise LookupError(why)
        return known

    def pairs(self) -> list[tuple[tuple[str, int], str]]:
        """((address, port), target name) for every target: what routing indexes."""
        pairs: list[tuple[tuple[str, int], str]] = []
        for name, host, port in self._targets:
            if is_literal(host):
                pairs.append(((host, port), name))
            else:
                pairs.extend(((address, port), name) for address in sorted(self._seen[host]))
        return pairs
