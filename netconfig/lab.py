"""The three-namespace lab: an agent, the gateway as its router, and a database subnet.

::

    <p>-agent                    <p>-gw                          <p>-db
    to-gw  10.77.1.10/24  <-->  to-agent 10.77.1.1/24
           fd77:1::10/64               fd77:1::1/64
                                 to-db   10.77.2.1/24   <-->  to-gw  10.77.2.10/24
                                         fd77:2::1/64                fd77:2::10/64

The agent's and the database's default routes (IPv4 and IPv6) point at the gateway,
which forwards between the two subnets, so a client in the agent namespace reaches the
database at its own address by plain routing, exactly as in front of a real database
subnet. ``sqlgate`` running in the gateway namespace then intercepts that path (SPEC §2).

Everything is built through netlink with pyroute2: namespaces, veth pairs (created in the
gateway namespace with their peer placed straight into the neighbour, so two labs with
different prefixes never share an interface name), addresses and routes. Sysctls
(forwarding, IPv6 duplicate address detection off, so addresses are usable at once) are
written to ``/proc/sys`` from the calling thread switched into the namespace; no ``ip``
or ``sysctl`` processes.

``Lab.up()`` is idempotent and completes a half-built lab; ``Lab.down()`` deletes the
namespaces (and with them the veth pairs); ``Lab.status()`` reports what exists. Root (or
CAP_SYS_ADMIN and CAP_NET_ADMIN) is needed. Processes still running inside a namespace
keep it alive after ``down``: stop them first.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError

from netconfig.netns import inside as netns_inside

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_SUBNET_BASE",
    "ROLES",
    "Lab",
    "LabError",
    "inside",
]

DEFAULT_PREFIX = "sqlgate"
DEFAULT_SUBNET_BASE = 77
ROLES = ("agent", "gw", "db")
_ALIASES = {"gateway": "gw", "database": "db"}

# Interface names inside the namespaces (each namespace has its own name space for links).
AGENT_IF = "to-gw"  # in the agent namespace
GW_AGENT_IF = "to-agent"  # in the gateway namespace, toward the agent
GW_DB_IF = "to-db"  # in the gateway namespace, toward the database
DB_IF = "to-gw"  # in the database namespace

NETNS_DIR = "/run/netns"
_PREFIX_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
IFA_F_NODAD = 0x02
IFA_F_TENTATIVE = 0x40
_MAIN_TABLE = 254
_DAD_WAIT_S = 5.0


class LabError(RuntimeError):
    """The lab could not be built, inspected or removed; the message says what and where."""


def inside(netns: str) -> AbstractContextManager[None]:
    """Run the body with the CURRENT THREAD in network namespace ``netns``; a missing
    namespace is a ``LabError`` (never created by accident). See ``netconfig.netns``."""
    return netns_inside(netns, LabError)


def _write_sysctl(name: str, value: str) -> None:
    """Write ``net.ipv4.ip_forward``-style ``name`` in the current thread's namespace."""
    path = "/proc/sys/" + name.replace(".", "/")
    try:
        with open(path, "w") as f:
            f.write(value + "\n")
    except OSError as exc:
        raise LabError(f"cannot set {name} = {value}: {exc.strerror}") from None


def _read_sysctl(name: str) -> str:
    path = "/proc/sys/" + name.replace(".", "/")
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class _Address:
    ifname: str
    address: str
    prefixlen: int


class Lab:
    """Three namespaces ``<prefix>-agent``, ``<prefix>-gw``, ``<prefix>-db``.

    ``subnet_base`` (10..99) picks the address plan: 10.<base>.1.0/24 and fd<base>:1::/64
    between agent and gateway, 10.<base>.2.0/24 and fd<base>:2::/64 between gateway and
    database, so several labs with different bases can even be routed side by side.
    Attributes name every address (``agent_v4``, ``gw_agent_side_v6``, ``db_v4``, ...)
    and namespace (``agent_ns``, ``gw_ns``, ``db_ns``); :meth:`ns` maps a role to one.
    """

    def __init__(self, prefix: str = DEFAULT_PREFIX, subnet_base: int = DEFAULT_SUBNET_BASE):
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(
                f"lab prefix {prefix!r}: lower-case letters, digits and '-', at most 32, "
                "starting with a letter"
            )
        if not 10 <= subnet_base <= 99:
            raise ValueError(f"subnet_base must be from 10 to 99, got {subnet_base}")
        self.prefix = prefix
        self.subnet_base = subnet_base
        self.agent_ns = f"{prefix}-agent"
        self.gw_ns = f"{prefix}-gw"
        self.db_ns = f"{prefix}-db"

        b = subnet_base
        self.agent_net_v4 = f"10.{b}.1.0/24"
        self.agent_net_v6 = f"fd{b}:1::/64"
        self.db_net_v4 = f"10.{b}.2.0/24"
        self.db_net_v6 = f"fd{b}:2::/64"
        self.agent_v4 = f"10.{b}.1.10"
        self.agent_v6 = f"fd{b}:1::10"
        self.gw_agent_side_v4 = f"10.{b}.1.1"
        self.gw_agent_side_v6 = f"fd{b}:1::1"
        self.gw_db_side_v4 = f"10.{b}.2.1"
        self.gw_db_side_v6 = f"fd{b}:2::1"
        self.db_v4 = f"10.{b}.2.10"
        self.db_v6 = f"fd{b}:2::10"

        self.agent_if = AGENT_IF
        self.gw_agent_if = GW_AGENT_IF
        self.gw_db_if = GW_DB_IF
        self.db_if = DB_IF

    def __repr__(self) -> str:
        return f"Lab(prefix={self.prefix!r}, subnet_base={self.subnet_base})"

    # -- naming --------------------------------------------------------------------------

    def ns(self, role: str) -> str:
        """The namespace name of ``role``: "agent", "gw" (or "gateway"), "db"."""
        role = _ALIASES.get(role, role)
        if role == "agent":
            return self.agent_ns
        if role == "gw":
            return self.gw_ns
        if role == "db":
            return self.db_ns
        raise ValueError(f"unknown lab role {role!r}; roles: {', '.join(ROLES)}")

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.agent_ns, self.gw_ns, self.db_ns)

    def _addresses(self) -> dict[str, list[_Address]]:
        return {
            self.agent_ns: [
                _Address(AGENT_IF, self.agent_v4, 24),
                _Address(AGENT_IF, self.agent_v6, 64),
            ],
            self.gw_ns: [
                _Address(GW_AGENT_IF, self.gw_agent_side_v4, 24),
                _Address(GW_AGENT_IF, self.gw_agent_side_v6, 64),
                _Address(GW_DB_IF, self.gw_db_side_v4, 24),
                _Address(GW_DB_IF, self.gw_db_side_v6, 64),
            ],
            self.db_ns: [
                _Address(DB_IF, self.db_v4, 24),
                _Address(DB_IF, self.db_v6, 64),
            ],
        }

    def _default_routes(self) -> dict[str, tuple[str, str, str]]:
        """Namespace -> (interface, IPv4 gateway, IPv6 gateway) of its default routes."""
        return {
            self.agent_ns: (AGENT_IF, self.gw_agent_side_v4, self.gw_agent_side_v6),
            self.db_ns: (DB_IF, self.gw_db_side_v4, self.gw_db_side_v6),
        }

    # -- lifecycle -----------------------------------------------------------------------

    def present(self) -> dict[str, bool]:
        """Namespace name -> whether it exists."""
        existing = set(_list_netns())
        return {name: name in existing for name in self.namespaces}

    def is_up(self) -> bool:
        """All three namespaces exist with their addresses and default routes."""
        if not all(self.present().values()):
            return False
        state = self.status()
        for ns, wanted in self._addresses().items():
            have = state["namespaces"][ns]["addresses"]
            if any(f"{a.address}/{a.prefixlen}" not in have.get(a.ifname, []) for a in wanted):
                return False
        return all(state["namespaces"][ns]["default_routes"] for ns in self._default_routes())

    def up(self) -> Lab:
        """Build whatever is missing; an already complete lab is left as it is."""
        for name in self.namespaces:
            if name not in _list_netns():
                try:
                    pyroute2_netns.create(name)
                except OSError as exc:
                    raise LabError(f"cannot create network namespace '{name}': {exc}") from None
        for name in self.namespaces:
            with inside(name):
                # Addresses are usable at once: no duplicate address detection.
                _write_sysctl("net.ipv6.conf.all.accept_dad", "0")
                _write_sysctl("net.ipv6.conf.default.accept_dad", "0")
                if name == self.gw_ns:
                    _write_sysctl("net.ipv4.ip_forward", "1")
                    _write_sysctl("net.ipv6.conf.all.forwarding", "1")
                    _write_sysctl("net.ipv6.conf.default.forwarding", "1")
        self._veth(GW_AGENT_IF, self.agent_ns, AGENT_IF)
        self._veth(GW_DB_IF, self.db_ns, DB_IF)
        for name, addresses in self._addresses().items():
            self._configure(name, addresses)
        for name, (ifname, via4, via6) in self._default_routes().items():
            self._route_default(name, ifname, via4, via6)
        self._wait_usable()
        return self

    def down(self) -> None:
        """Delete the three namespaces (their veth pairs go with them); absent is fine."""
        existing = set(_list_netns())
        problems = []
        for name in reversed(self.namespaces):
            if name not in existing:
                continue
            try:
                pyroute2_netns.remove(name)
            except OSError as exc:
                problems.append(f"'{name}': {exc}")
        if problems:
            raise LabError("cannot delete network namespace " + "; ".join(problems))

    # -- inspection ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What exists now, as plain data (JSON-ready)::

        {"prefix": ..., "subnet_base": ..., "up": bool,
         "namespaces": {NAME: {"role": ..., "present": bool,
                               "links": {IF: "UP"|"DOWN"|...},
                               "addresses": {IF: ["10.77.1.10/24", ...]},
                               "routes": ["default via 10.77.1.1 dev to-gw", ...],
                               "default_routes": ["default via ...", ...],
                               "forwarding": {"ipv4": bool, "ipv6": bool}}}}
        """
        present = self.present()
        spaces: dict[str, Any] = {}
        for role, name in zip(ROLES, self.namespaces, strict=True):
            entry: dict[str, Any] = {
                "role": role,
                "present": present[name],
                "links": {},
                "addresses": {},
                "routes": [],
                "default_routes": [],
                "forwarding": {"ipv4": False, "ipv6": False},
            }
            if present[name]:
                entry.update(_inspect(name))
            spaces[name] = entry
        result: dict[str, Any] = {
            "prefix": self.prefix,
            "subnet_base": self.subnet_base,
            "namespaces": spaces,
        }
        result["up"] = all(present.values()) and all(
            spaces[ns]["default_routes"] for ns in self._default_routes()
        )
        return result

    # -- internals -----------------------------------------------------------------------

    def _veth(self, gw_if: str, peer_ns: str, peer_if: str) -> None:
        """A veth pair: ``gw_if`` in the gateway namespace, ``peer_if`` in ``peer_ns``."""
        with _ipr(self.gw_ns) as ipr:
            if ipr.link_lookup(ifname=gw_if):
                return
            try:
                ipr.link(
                    "add",
                    ifname=gw_if,
                    kind="veth",
                    peer={"ifname": peer_if, "net_ns_fd": peer_ns},
                )
            except NetlinkError as exc:
                raise LabError(
                    f"cannot create veth {self.gw_ns}/{gw_if} <-> {peer_ns}/{peer_if}: "
                    f"{_reason(exc)}"
                ) from None

    def _configure(self, name: str, addresses: list[_Address]) -> None:
        ifnames = list(dict.fromkeys(a.ifname for a in addresses))
        with inside(name):
            for ifname in ifnames:
                _write_sysctl(f"net.ipv6.conf.{ifname}.accept_dad", "0")
        with _ipr(name) as ipr:
            lo = _index(ipr, name, "lo")
            ipr.link("set", index=lo, state="up")
            for ifname in ifnames:
                ipr.link("set", index=_index(ipr, name, ifname), state="up")
            for a in addresses:
                index = _index(ipr, name, a.ifname)
                family = socket.AF_INET6 if ":" in a.address else socket.AF_INET
                kwargs: dict[str, Any] = {}
                if family == socket.AF_INET6:
                    kwargs["flags"] = IFA_F_NODAD
                try:
                    ipr.addr(
                        "add",
                        index=index,
                        address=a.address,
                        prefixlen=a.prefixlen,
                        family=family,
                        **kwargs,
                    )
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise LabError(
                            f"cannot add {a.address}/{a.prefixlen} to {name}/{a.ifname}: "
                            f"{_reason(exc)}"
                        ) from None

    def _route_default(self, name: str, ifname: str, via4: str, via6: str) -> None:
        with _ipr(name) as ipr:
            index = _index(ipr, name, ifname)
            for dst, via, family in (
                ("0.0.0.0/0", via4, socket.AF_INET),
                ("::/0", via6, socket.AF_INET6),
            ):
                try:
                    ipr.route("replace", dst=dst, gateway=via, oif=index, family=family)
                except NetlinkError as exc:
                    raise LabError(
                        f"cannot route {dst} via {via} in {name}: {_reason(exc)}"
                    ) from None

    def _wait_usable(self) -> None:
        """Wait (bounded) until no IPv6 address of ours is still tentative."""
        deadline = time.monotonic() + _DAD_WAIT_S
        while True:
            tentative = []
            for name in self.namespaces:
                with _ipr(name) as ipr:
                    for msg in ipr.get_addr(family=socket.AF_INET6):
                        flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
                        if int(flags) & IFA_F_TENTATIVE:
                            tentative.append(f"{name}: {msg.get_attr('IFA_ADDRESS')}")
            if not tentative:
                return
            if time.monotonic() > deadline:
                raise LabError("IPv6 addresses still tentative: " + ", ".join(tentative))
            time.sleep(0.05)


# --------------------------------------------------------------------------------------
# helpers


def _list_netns() -> list[str]:
    try:
        return sorted(str(n) for n in pyroute2_netns.listnetns())
    except FileNotFoundError:
        return []


@contextmanager
def _ipr(name: str) -> Iterator[Any]:
    """An rtnetlink socket inside namespace ``name`` (which must exist)."""
    if name not in _list_netns():
        raise LabError(f"network namespace '{name}' does not exist")
    try:
        ipr = IPRoute(netns=name, flags=0)
    except OSError as exc:
        raise LabError(f"cannot open netlink in namespace '{name}': {exc}") from None
    try:
        yield ipr
    finally:
        ipr.close()


def _index(ipr: Any, ns: str, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"no interface '{ifname}' in namespace '{ns}'")
    return int(found[0])


def _reason(exc: NetlinkError) -> str:
    return str(exc.args[1]) if len(exc.args) > 1 else str(exc)


def _inspect(name: str) -> dict[str, Any]:
    links: dict[str, str] = {}
    addresses: dict[str, list[str]] = {}
    routes: list[str] = []
    with _ipr(name) as ipr:
        names: dict[int, str] = {}
        for link in ipr.get_links():
            ifname = str(link.get_attr("IFLA_IFNAME"))
            names[int(link["index"])] = ifname
            links[ifname] = str(link.get_attr("IFLA_OPERSTATE") or "UNKNOWN")
        for msg in ipr.get_addr():
            address = str(msg.get_attr("IFA_ADDRESS"))
            if ipaddress.ip_address(address).is_link_local:
                continue
            ifname = names.get(int(msg["index"]), str(msg["index"]))
            addresses.setdefault(ifname, []).append(f"{address}/{msg['prefixlen']}")
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in ipr.get_routes(family=family, table=_MAIN_TABLE):
                text = _route_text(msg, names)
                if text is not None:
                    routes.append(text)
    with inside(name):
        forwarding = {
            "ipv4": _read_sysctl("net.ipv4.ip_forward") == "1",
            "ipv6": _read_sysctl("net.ipv6.conf.all.forwarding") == "1",
        }
    return {
        "links": links,
        "addresses": addresses,
        "routes": routes,
        "default_routes": [r for r in routes if r.startswith("default")],
        "forwarding": forwarding,
    }


def _route_text(msg: Any, names: dict[int, str]) -> str | None:
    """``ip route``-style text of a main-table route; None for link-local and multicast."""
    dst = msg.get_attr("RTA_DST")
    plen = int(msg["dst_len"])
    if dst is None:
        where = "default"
    else:
        network = ipaddress.ip_network(f"{dst}/{plen}", strict=False)
        if network.is_link_local or network.is_multicast:
            return None
        where = str(network)
    parts = [where]
    via = msg.get_attr("RTA_GATEWAY")
    if via is not None:
        parts.append(f"via {via}")
    oif = msg.get_attr("RTA_OIF")
    if oif is not None:
        parts.append(f"dev {names.get(int(oif), oif)}")
    return " ".join(parts)
