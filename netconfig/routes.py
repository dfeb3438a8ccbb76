"""What the routing table and the interfaces of a namespace say (pyroute2, read only).

The sentinel needs to know which interfaces face the databases (the ones the kernel
would send a target's packets out of) and which addresses are the gateway's own (the
proxy connects upstream from one of them). Both are asked of the kernel over netlink in
the namespace given by name, so the answers are the gateway's, not the caller's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netconfig.nft import NftError, _inside

__all__ = ["Link", "RouteError", "interfaces_toward", "links", "local_addresses"]


class RouteError(Exception):
    """A route or an interface could not be found; ``str()`` is one line for the operator."""


@dataclass(frozen=True, slots=True)
class Link:
    """One interface as the kernel knows it: what a packet socket needs to bind and decode."""

    name: str
    index: int
    type: int  # ARPHRD_* (1 is Ethernet)
    mac: str
    up: bool


class _Session:
    """``with _Session(netns, what) as ipr``: this thread sits in ``netns`` while the socket
    is opened (a netlink socket keeps the namespace it was created in), then comes back."""

    def __init__(self, netns: str | None, what: str) -> None:
        self._netns = netns
        self._what = what
        self._ipr: Any = None

    def __enter__(self) -> Any:
        try:
            with _inside(self._netns):
                self._ipr = IPRoute()
        except NftError as exc:
            raise RouteError(str(exc)) from None
        except OSError as exc:
            raise RouteError(f"{self._what}: netlink: {exc.strerror or exc}") from None
        return self._ipr

    def __exit__(self, *exc_info: object) -> None:
        self._ipr.close()


def _where(netns: str | None) -> str:
    return f" in network namespace '{netns}'" if netns else ""


def interfaces_toward(hosts: Iterable[str], netns: str | None = None) -> list[str]:
    """The interface the kernel sends each host's packets out of, deduplicated, in order.

    ``hosts`` are address literals (the plan's targets). A host without a route is a
    ``RouteError`` naming it: a sentinel watching the wrong interface would watch nothing.
    """
    names: list[str] = []
    with _Session(netns, "route lookup") as ipr:
        for host in hosts:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                raise RouteError(f"'{host}' is not an IP address") from None
            try:
                found = ipr.route("get", dst=str(address))
                index = int(found[0].get_attr("RTA_OIF"))
                name = str(ipr.link("get", index=index)[0].get_attr("IFLA_IFNAME"))
            except NetlinkError as exc:
                reason = exc.args[1] if len(exc.args) > 1 else str(exc)
                raise RouteError(f"no route to {address}{_where(netns)}: {reason}") from None
            except (IndexError, TypeError):
                raise RouteError(f"no route to {address}{_where(netns)}") from None
            if name not in names:
                names.append(name)
    return names


def local_addresses(netns: str | None = None) -> set[str]:
    """Every address configured in the namespace (IPv6 without zone), as text."""
    with _Session(netns, "address dump") as ipr:
        try:
            messages = list(ipr.addr("dump"))
        except NetlinkError as exc:
            raise RouteError(f"cannot list addresses{_where(netns)}: {exc}") from None
    found: set[str] = set()
    for msg in messages:
        # IFA_LOCAL is our end of a point-to-point link, where IFA_ADDRESS is the peer's.
        value = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if value:
            found.add(str(ipaddress.ip_address(str(value).split("%")[0])))
    return found


def links(names: Sequence[str], netns: str | None = None) -> list[Link]:
    """The named interfaces of the namespace; an unknown name is a ``RouteError``."""
    result: list[Link] = []
    with _Session(netns, "interface lookup") as ipr:
        for name in names:
            try:
                found = ipr.link("get", ifname=name)
            except NetlinkError:
                found = []
            if not found:
                raise RouteError(f"interface '{name}' does not exist{_where(netns)}")
            msg = found[0]
            result.append(
                Link(
                    name=name,
                    index=int(msg["index"]),
                    type=int(msg["ifi_type"]),
                    mac=str(msg.get_attr("IFLA_ADDRESS") or ""),
                    up=bool(int(msg["flags"]) & 1),  # IFF_UP
                )
            )
    return result
