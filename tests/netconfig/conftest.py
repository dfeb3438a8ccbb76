"""Fixtures for netconfig: configurations built in memory, and network namespaces of our
own (``sqlgate-t-XXXXXX``) so that no test ever touches the host's ruleset.

Missing tools (``ip``, ``nft``) make the namespace fixtures fail, never skip.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import netns as pyroute2_netns

from appliance.config import (
    ApplianceConfig,
    Config,
    LedgerConfig,
    NetworkConfig,
    TargetConfig,
)

Target = tuple[str, str] | tuple[str, str, int]  # (name, host[, port])
MakeConfig = Callable[..., Config]


@pytest.fixture
def make_config(tmp_path: Path) -> MakeConfig:
    """``make_config(targets, listen_port=3307, mark=0x5147)``: a complete Config."""

    def make(
        targets: list[Target] | None = None,
        listen_port: int = 3307,
        mark: int = 0x5147,
    ) -> Config:
        targets = targets if targets is not None else [("orders", "10.77.2.10")]
        built = tuple(
            TargetConfig(
                name=t[0],
                host=t[1],
                port=t[2] if len(t) == 3 else 3306,
                user="sqlgate",
                password_file=tmp_path / f"{t[0]}.pw",
                password=b"secret",
            )
            for t in targets
        )
        return Config(
            path=tmp_path / "sqlgate.toml",
            sha256="0" * 64,
            appliance=ApplianceConfig(
                name="edge-1",
                listen=f"0.0.0.0:{listen_port}",
                listen_host="0.0.0.0",
                listen_port=listen_port,
                default_target=built[0].name,
                state_dir=tmp_path / "state",
            ),
            targets=built,
            ledger=LedgerConfig(path=tmp_path / "ledger.db", signing_key=tmp_path / "ledger.key"),
            network=NetworkConfig(mark=mark),
        )

    return make


# --- namespaces -------------------------------------------------------------------------


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; a failure shows its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def ns_run(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", ns, *argv, check=check)


def nft_json(ns: str) -> list[dict[str, Any]]:
    """``nft -j list ruleset`` inside ``ns``: the list of objects under "nftables"."""
    listing = json.loads(ns_run(ns, "nft", "-j", "list", "ruleset").stdout)
    objects: list[dict[str, Any]] = listing["nftables"]
    return [o for o in objects if "metainfo" not in o]


def nft_text(ns: str) -> str:
    """``nft list table inet sqlgate`` inside ``ns`` without counter values, which the
    plan's text does not print."""
    text = ns_run(ns, "nft", "list", "table", "inet", "sqlgate").stdout
    return re.sub(r" packets \d+ bytes \d+", "", text)


def comments(ns: str) -> dict[str, list[str]]:
    """Rule comments per chain of table inet sqlgate, in rule order."""
    result: dict[str, list[str]] = {}
    for obj in nft_json(ns):
        if "chain" in obj and obj["chain"]["table"] == "sqlgate":
            result.setdefault(obj["chain"]["name"], [])
        if "rule" in obj and obj["rule"]["table"] == "sqlgate":
            rule = obj["rule"]
            result.setdefault(rule["chain"], []).append(rule.get("comment", ""))
    return result


class Namespaces:
    """Creates namespaces with unique names and deletes every one of them at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                pytest.fail(f"'{tool}' is not installed (apt-get install iproute2 nftables)")

    def new(self) -> str:
        name = f"sqlgate-t-{secrets.token_hex(3)}"
        run("ip", "netns", "add", name)
        self.names.append(name)
        ns_run(name, "ip", "link", "set", "lo", "up")
        return name

    def close(self) -> None:
        for name in reversed(self.names):
            run("ip", "netns", "delete", name, check=False)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    spaces = Namespaces()
    try:
        yield spaces
    finally:
        spaces.close()


@pytest.fixture
def netns(namespaces: Namespaces) -> str:
    """One fresh, empty namespace with lo up."""
    return namespaces.new()


def ns_socket(ns: str, family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    """A TCP socket that lives in ``ns`` (created there by pyroute2 in a child process);
    its connects and binds use that namespace's addresses, routes and rules."""
    sock: socket.socket = pyroute2_netns.create_socket(
        netns=ns, family=family, socket_type=socket.SOCK_STREAM, flags=0
    )
    return sock


def listener(ns: str, address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = ns_socket(ns, family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((address, port))
    sock.listen(8)
    sock.settimeout(5)
    return sock


# --- the three-namespace lab: client -> gateway (router) -> db --------------------------


@dataclass(frozen=True)
class Lab:
    """Client, gateway and db namespaces joined by veth pairs, the gateway forwarding.

    Addresses (inside the namespaces only): the client side is 10.78.1.0/24 and
    fd78::1:0/112, the db side 10.78.2.0/24 and fd78::2:0/112; the gateway is .1 / ::x:1
    on both, the client and the db are .10 / ::x:10 and route everything via the gateway.
    """

    client: str
    gateway: str
    db: str
    client_v4: str = "10.78.1.10"
    client_v6: str = "fd78::1:10"
    gw_client_v4: str = "10.78.1.1"
    gw_client_v6: str = "fd78::1:1"
    gw_db_v4: str = "10.78.2.1"
    gw_db_v6: str = "fd78::2:1"
    db_v4: str = "10.78.2.10"
    db_v6: str = "fd78::2:10"
    gw_to_client: str = "gc0"  # the gateway's interface toward the client
    gw_to_db: str = "gd0"  # ... and toward the db


def _link(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair created inside ``ns_a`` with its peer in ``ns_b`` (never the host)."""
    run("ip", "-n", ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
    run("ip", "-n", ns_a, "link", "set", if_a, "up")
    run("ip", "-n", ns_b, "link", "set", if_b, "up")


def _address(ns: str, interface: str, *cidrs: str) -> None:
    for cidr in cidrs:
        extra = ["nodad"] if ":" in cidr else []
        run("ip", "-n", ns, "addr", "add", cidr, "dev", interface, *extra)


def build_lab(namespaces: Namespaces) -> Lab:
    lab = Lab(client=namespaces.new(), gateway=namespaces.new(), db=namespaces.new())
    for ns in (lab.client, lab.gateway, lab.db):
        # No duplicate address detection: a tentative link-local address holds up neighbour
        # discovery for about two seconds after the links come up.
        ns_run(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
        ns_run(ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
    _link(lab.client, "c0", lab.gateway, lab.gw_to_client)
    _link(lab.gateway, lab.gw_to_db, lab.db, "d0")
    _address(lab.client, "c0", f"{lab.client_v4}/24", f"{lab.client_v6}/112")
    _address(lab.gateway, lab.gw_to_client, f"{lab.gw_client_v4}/24", f"{lab.gw_client_v6}/112")
    _address(lab.gateway, lab.gw_to_db, f"{lab.gw_db_v4}/24", f"{lab.gw_db_v6}/112")
    _address(lab.db, "d0", f"{lab.db_v4}/24", f"{lab.db_v6}/112")
    for ns, v4, v6 in (
        (lab.client, lab.gw_client_v4, lab.gw_client_v6),
        (lab.db, lab.gw_db_v4, lab.gw_db_v6),
    ):
        run("ip", "-n", ns, "route", "add", "default", "via", v4)
        run("ip", "-n", ns, "-6", "route", "add", "default", "via", v6)
    ns_run(
        lab.gateway,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
    )
    return lab


@pytest.fixture
def lab(namespaces: Namespaces) -> Lab:
    """The three namespaces, no rules yet; deleted (with everything in them) afterwards."""
    return build_lab(namespaces)
