"""Which target a client connection is for.

A redirected connection still carries the address the client dialled (the kernel keeps
it as the original destination); a connection made straight to the listen port has its
original destination equal to the listener itself and goes to the default target.
Pure functions: the shell reads the socket options and passes the addresses in (but
``is_local``, which asks the kernel).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable, Mapping

SO_ORIGINAL_DST = 80  # netfilter: linux/netfilter_ipv4.h
IP6T_SO_ORIGINAL_DST = 80  # netfilter: linux/netfilter_ipv6/ip6_tables.h
SOL_IPV6 = 41

Address = tuple[str, int]


def parse_sockaddr_in(raw: bytes) -> Address:
    """Decode a ``struct sockaddr_in`` (16 bytes) as returned by SO_ORIGINAL_DST."""
    if len(raw) < 8:
        raise ValueError("short sockaddr_in")
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


def parse_sockaddr_in6(raw: bytes) -> Address:
    """Decode a ``struct sockaddr_in6`` (28 bytes) as returned by IP6T_SO_ORIGINAL_DST."""
    if len(raw) < 24:
        raise ValueError("short sockaddr_in6")
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port


def normalize(address: Address) -> Address:
    """One spelling per address: IPv4-mapped IPv6 becomes IPv4, scope ids are dropped."""
    host, port = address[0], address[1]
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host, port
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), port


def is_local(address: str) -> bool:
    """Whether ``address`` is one of this host's own (a socket can be bound to it)."""
    if address.startswith("::ffff:") and "." in address:
        address = address[7:]
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


def own_listener(listening: Iterable[Address], host: str, port: int) -> bool:
    """Whether ``host``:``port`` reaches one of the gateway's own listening sockets: a
    target there would make every connection open another to the gateway, without end."""
    dialled = normalize((host, port))
    for address, listen_port in listening:
        if listen_port != port:
            continue
        if address in ("0.0.0.0", "::"):  # every address of this host
            if is_local(dialled[0]):
                return True
        elif normalize((address, port)) == dialled or _unspecified(dialled[0]):
            return True
    return False


def _unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def target_index(pairs: Iterable[tuple[Address, str]]) -> dict[Address, str]:
    """Map each (address, port) a target answers on to the target's name.

    An address two targets answer on (``sqlgate check`` refuses two that are spelled
    alike, but two host names may resolve to one address) belongs to neither: a
    connection to it is refused rather than given one target's credential by chance.
    """
    index: dict[Address, str] = {}
    shared: set[Address] = set()
    for addr, name in pairs:
        key = normalize(addr)
        owner = index.setdefault(key, name)
        if owner != name or key in shared:
            shared.add(key)
            index.pop(key, None)
    return index


def pick_target(
    original_dst: Address | None,
    local: Address,
    targets: Mapping[Address, str],
    default: str,
) -> str | None:
    """The target's name, or None when the client dialled an address no target owns."""
    if original_dst is None:
        return default
    dst = normalize(original_dst)
    if dst == normalize(local):
        return default
    return targets.get(dst)
