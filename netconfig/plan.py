"""The interception rules as data: a pure function of the configuration.

``plan_rules`` turns a :class:`~appliance.config.Config` into a :class:`Plan` - the
project's own ``inet`` table, its four base chains and the ordered, tagged rules. It does
no I/O: ``netconfig.nft`` reconciles the kernel towards a plan through netlink, and
``Plan.to_nft()`` prints the same plan as ``nft -f`` input for ``net apply --dry-run``.

What the rules do (SPEC §2):

- ``prerouting`` (nat): a connection to a target's address and port is redirected to the
  proxy's listen port; the proxy reads the original destination to pick the target.
- ``output`` (nat): the same for clients inside the gateway's own namespace, except that
  sockets carrying ``[network] mark`` (the proxy's upstream connections) return first.
- ``forward`` (filter): a connection to a target's address and port that was not
  redirected is dropped, and so is any forwarded connection to a target's port at any
  other address (a database's second address, its IPv6 address when the target names
  IPv4, the new address of a moved name before the next look-up), so nothing reaches a
  database port except from the proxy.
- ``local`` (filter, output): the same drop of a target's port for the host's own
  unmarked sockets, on every packet that leaves the host (not through ``lo``), so that a
  connection made before the rules, which the nat chain never sees, is cut too.

Every rule carries a unique tag (its nft comment, netlink userdata): the reconcile key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from appliance.config import Config, ConfigError

__all__ = [
    "FAMILY",
    "TABLE",
    "Action",
    "Chain",
    "ChainType",
    "Hook",
    "IPAddress",
    "Plan",
    "PlanError",
    "Resolver",
    "Rule",
    "literal_only",
    "plan_rules",
]

TABLE = "sqlgate"
FAMILY = "inet"  # one table for IPv4 and IPv6; rules match nfproto first

TAG_PREFIX = "sqlgate:"
# nftables keeps a rule comment in 128 bytes including its NUL (NFTNL_UDATA_COMMENT_MAXLEN).
MAX_TAG_BYTES = 127
_TAG_RE = re.compile(r"sqlgate:[A-Za-z0-9._:/-]+")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Sequence[str]]


class PlanError(ConfigError):
    """The configuration cannot be turned into rules; ``str()`` names file, key, problem.

    A ``ConfigError``, so callers that answer bad configuration with one line and exit 2
    treat a plan problem (a name that cannot be resolved, an unusable address) the same.
    """


class Hook(StrEnum):
    """Netfilter hooks our base chains attach to (values are nft keywords)."""

    PREROUTING = "prerouting"
    OUTPUT = "output"
    FORWARD = "forward"


class ChainType(StrEnum):
    NAT = "nat"
    FILTER = "filter"


class Action(StrEnum):
    """What a matching rule does (values are the nft statements)."""

    REDIRECT = "redirect"  # to the proxy's listen port on this host
    DROP = "drop"
    RETURN = "return"  # leave this chain: the exemption for the proxy's own sockets


# How nft 1.0 prints standard priorities, so that our text matches `nft list` output.
_PRIORITY_NAMES = {
    (ChainType.NAT, Hook.PREROUTING, -100): "dstnat",
    (ChainType.FILTER, Hook.PREROUTING, 0): "filter",
    (ChainType.FILTER, Hook.OUTPUT, 0): "filter",
    (ChainType.FILTER, Hook.FORWARD, 0): "filter",
}


@dataclass(frozen=True, slots=True)
class Chain:
    """A base chain of our table; its policy is always accept (we only add matches)."""

    name: str
    type: ChainType
    hook: Hook
    priority: int

    @property
    def priority_text(self) -> str:
        return _PRIORITY_NAMES.get((self.type, self.hook, self.priority), str(self.priority))

    def header(self) -> str:
        """The chain's first line in nft syntax."""
        return f"type {self.type} hook {self.hook} priority {self.priority_text}; policy accept;"


# The chains, in the order nft lists them. Output runs at the same priority as dstnat.
PREROUTING = Chain("prerouting", ChainType.NAT, Hook.PREROUTING, -100)
OUTPUT = Chain("output", ChainType.NAT, Hook.OUTPUT, -100)
FORWARD = Chain("forward", ChainType.FILTER, Hook.FORWARD, 0)
LOCAL = Chain("local", ChainType.FILTER, Hook.OUTPUT, 0)
CHAINS = (PREROUTING, OUTPUT, FORWARD, LOCAL)


@dataclass(frozen=True, slots=True)
class Rule:
    """One tagged rule: optional matches (mark; daddr + tcp dport), a counter, an action.

    A rule matches on ``mark`` alone (the exemption), on ``daddr`` and ``dport``
    together (a target), or on ``dport`` alone (the drop of a target's port at every
    address: a drop only). ``leaves_host`` adds ``oifname != "lo"``: only packets to
    another host (a local client's connection to this host's own port 3306 is not one).
    ``to_port`` is the redirect destination port.
    """

    chain: str
    tag: str
    action: Action
    daddr: IPAddress | None = None
    dport: int | None = None
    mark: int | None = None
    to_port: int | None = None
    leaves_host: bool = False

    def __post_init__(self) -> None:
        if not _TAG_RE.fullmatch(self.tag) or len(self.tag.encode()) > MAX_TAG_BYTES:
            raise ValueError(f"bad rule tag {self.tag!r}")
        if self.daddr is not None and self.dport is None:
            raise ValueError("daddr needs a dport")
        if (self.dport is None) == (self.mark is None):
            raise ValueError("a rule matches either a mark or a port (and an address)")
        if self.daddr is None and self.dport is not None and self.action is not Action.DROP:
            raise ValueError("a rule on a port at every address can only drop")
        if (self.action is Action.REDIRECT) != (self.to_port is not None):
            raise ValueError("to_port is the redirect port, and only that")

    def to_nft(self) -> str:
        """The rule as one nft statement line (as ``nft list`` prints it, minus counters)."""
        parts: list[str] = []
        if self.leaves_host:
            parts.append('oifname != "lo"')
        if self.mark is not None:
            parts.append(f"meta mark 0x{self.mark:08x}")
        if self.daddr is not None:
            parts.append(f"{'ip' if self.daddr.version == 4 else 'ip6'} daddr {self.daddr}")
        if self.dport is not None:
            parts.append(f"tcp dport {self.dport}")
        parts.append("counter")
        if self.action is Action.REDIRECT:
            parts.append(f"redirect to :{self.to_port}")
        else:
            parts.append(str(self.action))
        parts.append(f'comment "{self.tag}"')
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Plan:
    """The whole intended state of table ``inet sqlgate``."""

    table: str
    family: str
    chains: tuple[Chain, ...]
    rules: tuple[Rule, ...]  # chain by chain, in order within each chain

    def __post_init__(self) -> None:
        tags = [rule.tag for rule in self.rules]
        if len(set(tags)) != len(tags):
            raise ValueError("rule tags must be unique")
        names = {chain.name for chain in self.chains}
        if any(rule.chain not in names for rule in self.rules):
            raise ValueError("every rule must belong to one of the plan's chains")

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(rule.tag for rule in self.rules)

    def rules_in(self, chain: str) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if rule.chain == chain)

    def to_nft(self) -> str:
        """The plan as ``nft -f`` input, laid out as ``nft list table`` prints it."""
        blocks = []
        for chain in self.chains:
            lines = [f"\tchain {chain.name} {{", f"\t\t{chain.header()}"]
            lines += [f"\t\t{rule.to_nft()}" for rule in self.rules_in(chain.name)]
            lines.append("\t}")
            blocks.append("\n".join(lines))
        return f"table {self.family} {self.table} {{\n" + "\n\n".join(blocks) + "\n}\n"


def literal_only(host: str) -> Sequence[str]:
    """The default resolver: host names are not looked up (rules match addresses)."""
    raise LookupError("it is a host name; the rules match addresses, so resolve it first")


def plan_rules(config: Config, resolve: Resolver | None = None) -> Plan:
    """The rules that intercept every configured target; raises ``PlanError``.

    ``resolve`` turns a target host name into addresses (``socket.getaddrinfo`` in the
    CLI); it is called only for names, never for literals, and may raise ``OSError`` or
    ``LookupError``. Without it a host name is a ``PlanError``.
    """
    resolver = resolve or literal_only
    port = config.appliance.listen_port
    if port == 0:
        raise PlanError(
            config.path,
            "appliance.listen",
            "port 0 (chosen by the system) cannot be a redirect destination; set a fixed port",
        )

    prerouting: list[Rule] = []
    output: list[Rule] = [
        Rule(OUTPUT.name, TAG_PREFIX + "exempt", Action.RETURN, mark=config.network.mark)
    ]
    forward: list[Rule] = []
    seen: set[tuple[IPAddress, int]] = set()
    for index, target in enumerate(config.targets):
        key = f"targets[{index}].host"
        addresses = _addresses(config, key, target.host, resolver)
        for address in addresses:
            if (address, target.port) in seen:
                # Another target already fronts this address and port: one rule serves both.
                continue
            seen.add((address, target.port))
            suffix = target.name if len(addresses) == 1 else f"{target.name}/{address}"
            redirect = f"{TAG_PREFIX}redirect:{suffix}"
            local = f"{TAG_PREFIX}redirect-local:{suffix}"
            drop = f"{TAG_PREFIX}bypass-drop:{suffix}"
            dport = target.port
            prerouting.append(
                Rule(PREROUTING.name, redirect, Action.REDIRECT, address, dport, to_port=port)
            )
            output.append(Rule(OUTPUT.name, local, Action.REDIRECT, address, dport, to_port=port))
            forward.append(Rule(FORWARD.name, drop, Action.DROP, address, dport))
    ports = tuple(dict.fromkeys(target.port for target in config.targets))
    forward += _port_drops(FORWARD, "bypass-drop-port", ports)
    local_out = [
        Rule(LOCAL.name, TAG_PREFIX + "local-exempt", Action.RETURN, mark=config.network.mark),
        *_port_drops(LOCAL, "local-drop-port", ports, leaves_host=True),
    ]
    return Plan(TABLE, FAMILY, CHAINS, (*prerouting, *output, *forward, *local_out))


def _port_drops(
    chain: Chain, kind: str, ports: Iterable[int], leaves_host: bool = False
) -> list[Rule]:
    """A drop of each target port at every address, in config order.

    The address rules only know the addresses the configuration names; a database also
    answers on its other addresses (IPv6 beside IPv4, a second interface), and a name
    may have moved since the last look-up. Forwarded, or dialled by an unmarked local
    client, any of those went around the proxy.
    """
    return [
        Rule(
            chain.name,
            f"{TAG_PREFIX}{kind}:{port}",
            Action.DROP,
            dport=port,
            leaves_host=leaves_host,
        )
        for port in ports
    ]


def _addresses(config: Config, key: str, host: str, resolve: Resolver) -> tuple[IPAddress, ...]:
    """The target's addresses, literal or resolved, checked and deduplicated in order."""
    try:
        return (_usable(config, key, host, ipaddress.ip_address(host)),)
    except ValueError:
        pass
    try:
        found: Iterable[str] = resolve(host)
    except (OSError, LookupError) as exc:
        raise PlanError(config.path, key, f"cannot use '{host}': {exc}") from None
    addresses: list[IPAddress] = []
    for text in found:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            problem = f"'{host}' resolved to '{text}', which is not an IP address"
            raise PlanError(config.path, key, problem) from None
        address = _usable(config, key, host, address)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise PlanError(config.path, key, f"'{host}' resolved to no address")
    return tuple(addresses)


def _usable(config: Config, key: str, host: str, address: IPAddress) -> IPAddress:
    """A single unicast address that a ``daddr`` match can name."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            problem = f"'{host}': an address with a zone (%{address.scope_id}) cannot be matched"
            raise PlanError(config.path, key, problem)
        if address.ipv4_mapped is not None:
            # A dual-stack socket to ::ffff:a.b.c.d sends IPv4 packets: match those.
            address = address.ipv4_mapped
    if address.is_unspecified or address.is_multicast or address == _BROADCAST:
        problem = f"'{host}' ({address}) is not the address of one host"
        raise PlanError(config.path, key, problem)
    return address


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
