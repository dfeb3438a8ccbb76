"""The gateway's own connections to its targets carry its firewall mark.

The interception rules redirect every connection to a target's address and port that is
made on the gateway's host (the output chain) back into the gateway, except those with
``[network] mark``: the proxy's upstream connections and its side connections (the view
catalog, row estimates) must carry it, or they land in the gateway itself. Setting a
mark needs CAP_NET_ADMIN; without it a connection goes unmarked, which is fine wherever
no rules are installed on the gateway's host, and caught by the proxy where they are
(``ClientLeg`` refuses a connection that comes from one of its own unmarked sockets).
"""

from __future__ import annotations

import logging
import socket

__all__ = ["connect", "mark"]

log = logging.getLogger("sqlgate.server")

_warned = False


def mark(sock: socket.socket, value: int) -> bool:
    """Give ``sock`` the mark ``value`` (before it connects); False when it cannot be set
    (no CAP_NET_ADMIN), said once in the log."""
    global _warned
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, value)
    except PermissionError:
        if not _warned:
            _warned = True
            log.warning(
                "cannot mark the gateway's connections to its targets (no CAP_NET_ADMIN): "
                "where interception rules are installed on this host, they send these "
                "connections back into the gateway, which refuses them"
            )
        return False
    return True


def connect(host: str, port: int, value: int, timeout_s: float) -> socket.socket:
    """A blocking TCP connection to ``host``:``port`` from a marked socket (for PyMySQL's
    ``Connection.connect(sock)``); OSError when no address answers."""
    last: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            mark(sock, value)
            sock.settimeout(timeout_s)
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        return sock
    raise last or OSError(f"no address for {host}")
