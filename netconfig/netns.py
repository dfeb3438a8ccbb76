"""Entering a network namespace for one thread, and leaving it again.

Only the calling thread moves, and it always moves back. Sockets created meanwhile stay
in the namespace for their whole life, and child processes started meanwhile run there.
A namespace is always opened by path and entered through the open file: given a name,
pyroute2 would create a namespace that is missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pyroute2 import netns as pyroute2_netns

NETNS_DIR = "/run/netns"


@contextmanager
def inside(netns: str | None, error: Callable[[str], Exception] = OSError) -> Iterator[None]:
    """Run the body with this thread in ``netns`` (a name under /run/netns or a path such
    as /proc/PID/ns/net); ``None`` stays where we are. Failures raise ``error(message)``."""
    if netns is None:
        yield
        return
    path = netns if "/" in netns else f"{NETNS_DIR}/{netns}"
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise error(f"network namespace '{netns}': {exc.strerror}") from None
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            pyroute2_netns.setns(target, flags=0)
        except OSError as exc:
            raise error(f"cannot enter network namespace '{netns}': {exc}") from None
        try:
            yield
        finally:
            pyroute2_netns.setns(saved, flags=0)
    finally:
        os.close(saved)
        os.close(target)
