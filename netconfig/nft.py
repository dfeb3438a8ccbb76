"""Write a :class:`~netconfig.plan.Plan` into the kernel through netlink (pyroute2).

No ``nft`` or ``iptables`` processes: every rule is built from raw nftables expressions
(the same ones ``nft`` itself sends) and sent with pyroute2's ``AsyncNFTables`` socket.

``apply`` reconciles, in the manner of pyroute2-cni's firewall: read table ``inet sqlgate``,
compare each rule by its tag (netlink userdata, shown by ``nft`` as the comment) and by
its expressions, then send one netlink transaction that first adds what is missing and
then deletes what is stale. The kernel commits a transaction atomically, so no packet
ever sees a half-applied state; and even read in order, the additions come first. A
second ``apply`` of the same plan finds nothing to do and sends nothing.

Namespaces: pyroute2 0.9.7's ``NFTables`` takes no ``netns`` argument, so ``netns=NAME``
switches the calling thread into ``/run/netns/NAME`` with setns(2) for the duration of
the call and switches back before returning. Only the calling thread moves; call these
functions from a thread without a running event loop (``asyncio.to_thread`` from async
code) since each runs its own short ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyroute2.netlink import NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES, nfgen_msg
from pyroute2.netlink.nfnetlink.nftsocket import (
    NFT_MSG_DELRULE,
    NFT_MSG_DELTABLE,
    NFT_MSG_GETCHAIN,
    NFT_MSG_GETGEN,
    NFT_MSG_GETRULE,
    NFT_MSG_GETTABLE,
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWTABLE,
    nft_chain_msg,
    nft_gen_msg,
    nft_rule_msg,
    nft_table_msg,
)
from pyroute2.nftables.main import AsyncNFTables

from netconfig.netns import inside
from netconfig.plan import TABLE, Action, Chain, Hook, Plan, Rule

__all__ = [
    "ApplyReport",
    "DelRule",
    "DelTable",
    "NewChain",
    "NewRule",
    "NewTable",
    "Op",
    "LiveChain",
    "LiveRule",
    "LiveTable",
    "NftError",
    "RuleStatus",
    "apply",
    "canonical",
    "diff",
    "generation",
    "live_table",
    "planned_expressions",
    "reconcile",
    "remove",
    "rule_expressions",
    "status",
]

# include/uapi/linux/netfilter.h
NFPROTO_INET = 1
NFPROTO_IPV4 = 2
NFPROTO_IPV6 = 10
NF_DROP = 0
NF_ACCEPT = 1
# include/uapi/linux/netfilter/nf_tables.h
NFT_RETURN = -5
NFT_TABLE_F_DORMANT = 1  # the table's chains are unhooked: its rules see no packet
NFT_REG_VERDICT = 0
NFT_REG_1 = 1
NFT_CMP_EQ = 0
NFT_CMP_NEQ = 1
NFT_META_MARK = 3
NFT_META_OIFNAME = 7
IFNAMSIZ = 16
NFT_META_NFPROTO = 15
NFT_META_L4PROTO = 16
NFT_PAYLOAD_NETWORK_HEADER = 1
NFT_PAYLOAD_TRANSPORT_HEADER = 2
# include/uapi/linux/netfilter/nfnetlink.h: a transaction is BEGIN, messages, END.
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
IPPROTO_TCP = 6
# The kernel answers a netlink request at once; an answer that never comes (a whole batch
# refused for want of CAP_NET_ADMIN is answered under the batch marker's sequence number,
# which no request waits on) must not hang the caller.
ANSWER_TIMEOUT_S = 10.0

HOOKNUMS = {Hook.PREROUTING: 0, Hook.FORWARD: 2, Hook.OUTPUT: 3}

# Header fields that a daddr / dport match loads: (base, offset, length).
_DADDR = {4: (NFT_PAYLOAD_NETWORK_HEADER, 16, 4), 6: (NFT_PAYLOAD_NETWORK_HEADER, 24, 16)}
_DPORT = (NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2)

_T = TypeVar("_T")
Expr = dict[str, Any]  # pyroute2's {'attrs': [(NAME, value), ...]} form of one expression
CanonExpr = tuple[str, tuple[tuple[str, Any], ...]]  # (name, sorted attributes)


class NftError(Exception):
    """Netlink refused or could not be reached; ``str()`` is one line for the operator."""


# --------------------------------------------------------------------------------------
# Expressions (pure)


def _expr(name: str, attrs: list[tuple[str, Any]]) -> Expr:
    return {"attrs": [("NFTA_EXPR_NAME", name), ("NFTA_EXPR_DATA", {"attrs": attrs})]}


def _meta(key: int) -> Expr:
    return _expr("meta", [("NFTA_META_KEY", key), ("NFTA_META_DREG", NFT_REG_1)])


def _cmp_eq(data: bytes, op: int = NFT_CMP_EQ) -> Expr:
    return _expr(
        "cmp",
        [
            ("NFTA_CMP_SREG", NFT_REG_1),
            ("NFTA_CMP_OP", op),
            ("NFTA_CMP_DATA", {"attrs": [("NFTA_DATA_VALUE", data)]}),
        ],
    )


def _payload(base: int, offset: int, length: int) -> Expr:
    return _expr(
        "payload",
        [
            ("NFTA_PAYLOAD_DREG", NFT_REG_1),
            ("NFTA_PAYLOAD_BASE", base),
            ("NFTA_PAYLOAD_OFFSET", offset),
            ("NFTA_PAYLOAD_LEN", length),
        ],
    )


def _verdict(code: int) -> Expr:
    data = {"attrs": [("NFTA_DATA_VERDICT", {"attrs": [("NFTA_VERDICT_CODE", code)]})]}
    return _expr(
        "immediate", [("NFTA_IMMEDIATE_DREG", NFT_REG_VERDICT), ("NFTA_IMMEDIATE_DATA", data)]
    )


def rule_expressions(rule: Rule) -> list[Expr]:
    """The raw expressions for ``rule``, as ``nft`` compiles the same statement.

    In an ``inet`` table an address match needs ``meta nfproto`` first, and a port match
    ``meta l4proto`` first; integers in packet headers are big-endian, the mark is a
    host-order u32, and ``redirect to :PORT`` loads the port into a register for ``redir``.
    """
    exprs: list[Expr] = []
    if rule.leaves_host:  # oifname != "lo": nft compares the name padded to IFNAMSIZ
        exprs += [_meta(NFT_META_OIFNAME), _cmp_eq(b"lo".ljust(IFNAMSIZ, b"\0"), NFT_CMP_NEQ)]
    if rule.mark is not None:
        exprs += [_meta(NFT_META_MARK), _cmp_eq(rule.mark.to_bytes(4, sys.byteorder))]
    if rule.daddr is not None:
        nfproto = NFPROTO_IPV4 if rule.daddr.version == 4 else NFPROTO_IPV6
        exprs += [
            _meta(NFT_META_NFPROTO),
            _cmp_eq(bytes([nfproto])),
            _payload(*_DADDR[rule.daddr.version]),
            _cmp_eq(rule.daddr.packed),
        ]
    if rule.dport is not None:
        exprs += [
            _meta(NFT_META_L4PROTO),
            _cmp_eq(bytes([IPPROTO_TCP])),
            _payload(*_DPORT),
            _cmp_eq(rule.dport.to_bytes(2, "big")),
        ]
    exprs.append(_expr("counter", []))
    if rule.action is Action.REDIRECT:
        assert rule.to_port is not None  # Rule guarantees it
        port = {"attrs": [("NFTA_DATA_VALUE", rule.to_port.to_bytes(2, "big"))]}
        exprs.append(
            _expr("immediate", [("NFTA_IMMEDIATE_DREG", NFT_REG_1), ("NFTA_IMMEDIATE_DATA", port)])
        )
        exprs.append(
            _expr(
                "redir",
                [
                    ("NFTA_REDIR_REG_PROTO_MIN", NFT_REG_1),
                    ("NFTA_REDIR_REG_PROTO_MAX", NFT_REG_1),
                    ("NFTA_REDIR_FLAGS", {"NF_NAT_RANGE_PROTO_SPECIFIED"}),
                ],
            )
        )
    elif rule.action is Action.DROP:
        exprs.append(_verdict(NF_DROP))
    else:
        exprs.append(_verdict(NFT_RETURN))
    return exprs


# Attributes that say nothing about what a rule does: counter values change with traffic.
_IGNORED = {"NFTA_COUNTER_BYTES", "NFTA_COUNTER_PACKETS", "NFTA_COUNTER_PAD"}


def _canon_value(value: Any) -> Any:
    if isinstance(value, dict) and "attrs" in value:
        return tuple(
            sorted(
                (str(name), _canon_value(inner))
                for name, inner in value["attrs"]
                if name not in _IGNORED
            )
        )
    if isinstance(value, set | frozenset):
        return tuple(sorted(value))
    return value


def canonical(expressions: Iterable[Any]) -> tuple[CanonExpr, ...]:
    """Decoded netlink expressions in a comparable form: names, sorted attributes,
    counter values dropped. Both sides of a comparison must be decoded messages (a
    kernel dump, or our own message after an encode/decode round trip) so that enum
    values read as the same names."""
    result: list[CanonExpr] = []
    for expression in expressions:
        name = str(expression.get_attr("NFTA_EXPR_NAME"))
        data = expression.get_attr("NFTA_EXPR_DATA")
        attrs = _canon_value(data) if data is not None else ()
        result.append((name, attrs))
    return tuple(result)


def _rule_msg(table: str, rule: Rule, before: int | None = None) -> Any:
    """NFT_MSG_NEWRULE for ``rule``: appended, or inserted before handle ``before``."""
    attrs: list[tuple[str, Any]] = [
        ("NFTA_RULE_TABLE", table),
        ("NFTA_RULE_CHAIN", rule.chain),
        ("NFTA_RULE_EXPRESSIONS", rule_expressions(rule)),
        # libnftnl's udata TLV {type 0 = comment, length, text NUL}: pyroute2 writes
        # NFTA_RULE_USERDATA as a 16-bit big-endian length + text + NUL, which is the same
        # bytes for comments below 256 bytes (ours are at most 128).
        ("NFTA_RULE_USERDATA", rule.tag),
    ]
    flags = NLM_F_CREATE | NLM_F_APPEND
    if before is not None:
        attrs.append(("NFTA_RULE_POSITION", before))
        flags = NLM_F_CREATE  # with a position and no APPEND: insert before that rule
    return _message(nft_rule_msg, NFT_MSG_NEWRULE, flags, attrs)


def _message(cls: Any, msg_type: int, flags: int, attrs: list[tuple[str, Any]]) -> Any:
    msg = cls()
    msg["attrs"] = attrs
    msg["nfgen_family"] = NFPROTO_INET
    msg["header"]["type"] = (NFNL_SUBSYS_NFTABLES << 8) | msg_type
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
    return msg


@functools.lru_cache(maxsize=4096)
def planned_expressions(rule: Rule) -> tuple[CanonExpr, ...]:
    """What the kernel will report for ``rule``: its message encoded and decoded again.

    Kept per rule (a ``Rule`` is immutable): the round trip through pyroute2 costs
    milliseconds, and the sentinel compares the same plan with the kernel every pass."""
    msg = _rule_msg(TABLE, rule)
    msg.encode()
    decoded = nft_rule_msg(msg.data)
    decoded.decode()
    return canonical(decoded.get_attr("NFTA_RULE_EXPRESSIONS") or ())


# --------------------------------------------------------------------------------------
# What the kernel holds


@dataclass(frozen=True, slots=True)
class LiveChain:
    name: str
    type: str
    hooknum: int | None  # None: a regular (non-base) chain
    priority: int | None
    policy: int | None

    def matches(self, chain: Chain) -> bool:
        return (self.type, self.hooknum, self.priority, self.policy) == (
            str(chain.type),
            HOOKNUMS[chain.hook],
            chain.priority,
            NF_ACCEPT,
        )


@dataclass(frozen=True, slots=True)
class LiveRule:
    chain: str
    handle: int
    tag: str | None  # None: no comment, so not one of ours
    expressions: tuple[CanonExpr, ...] = field(repr=False)
    packets: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class LiveTable:
    """Table ``inet sqlgate`` as dumped: chains, rules in chain order, and the table's
    flags (``nft add table inet sqlgate { flags dormant; }`` switches every chain off
    while the rules stay listed)."""

    chains: tuple[LiveChain, ...]
    rules: tuple[LiveRule, ...]
    flags: int = 0

    @property
    def dormant(self) -> bool:
        return bool(self.flags & NFT_TABLE_F_DORMANT)


@dataclass(frozen=True, slots=True)
class RuleStatus:
    """One rule of our table and what its counter has seen."""

    tag: str  # "" for a rule without a tag (someone else's; the next apply removes it)
    chain: str
    handle: int
    packets: int
    bytes: int


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What ``apply`` changed. Tags name rules; ``created`` names the table and chains."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    created: tuple[str, ...] = ()
    rebuilt: bool = False  # the table did not have our chains and was replaced whole
    # the flags the table had (dormant: switched off) when it was replaced for them
    flags: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.created or self.rebuilt)


# --------------------------------------------------------------------------------------
# Reconcile (pure)


@dataclass(frozen=True, slots=True)
class NewTable:
    pass


@dataclass(frozen=True, slots=True)
class DelTable:
    pass


@dataclass(frozen=True, slots=True)
class NewChain:
    chain: Chain


@dataclass(frozen=True, slots=True)
class NewRule:
    rule: Rule
    before: int | None  # handle of a kept rule to insert before; None appends


@dataclass(frozen=True, slots=True)
class DelRule:
    chain: str
    handle: int
    tag: str | None


Op = NewTable | DelTable | NewChain | NewRule | DelRule


def _describe(rule: LiveRule) -> str:
    return rule.tag if rule.tag is not None else f"(untagged rule {rule.handle} in {rule.chain})"


def reconcile(plan: Plan, live: LiveTable | None) -> tuple[list[Op], ApplyReport]:
    """The operations that turn ``live`` into ``plan``: additions first, then deletions.

    A rule is kept when a live rule in the right chain has its tag and its expressions,
    and sits after the rules kept before it (order matters: the exemption must come
    first). Everything else in our table is stale: other tags, untagged rules, changed
    expressions, duplicates. A chain with the wrong type, hook, priority or policy, a
    chain we do not plan, or a table with flags (dormant: every chain unhooked, so the
    listed rules do nothing) cannot be trusted as it is: the table is replaced whole,
    inside the same atomic transaction.
    """
    full = [NewChain(chain) for chain in plan.chains]
    everything: list[Op] = [*full, *(NewRule(rule, None) for rule in plan.rules)]
    if live is None:
        created = (f"table {plan.family} {plan.table}", *(f"chain {c.name}" for c in plan.chains))
        return [NewTable(), *everything], ApplyReport(added=plan.tags, created=created)

    planned = {chain.name: chain for chain in plan.chains}
    by_name = {chain.name: chain for chain in live.chains}
    if live.flags or any(
        c.name not in planned or not c.matches(planned[c.name]) for c in live.chains
    ):
        removed = tuple(_describe(rule) for rule in live.rules)
        report = ApplyReport(added=plan.tags, removed=removed, rebuilt=True, flags=live.flags)
        return [DelTable(), NewTable(), *everything], report

    ops: list[Op] = [NewChain(c) for c in plan.chains if c.name not in by_name]
    created = tuple(f"chain {c.name}" for c in plan.chains if c.name not in by_name)
    kept: dict[str, LiveRule] = {}  # tag -> the live rule that stays
    for chain in plan.chains:
        position = {id(rule): i for i, rule in enumerate(live.rules) if rule.chain == chain.name}
        last = -1
        for rule in plan.rules_in(chain.name):
            wanted = planned_expressions(rule)
            for candidate in live.rules:
                index = position.get(id(candidate))
                if (
                    index is not None
                    and index > last
                    and candidate.tag == rule.tag
                    and candidate.expressions == wanted
                ):
                    kept[rule.tag] = candidate
                    last = index
                    break

    added: list[str] = []
    for chain in plan.chains:
        rules = plan.rules_in(chain.name)
        for i, rule in enumerate(rules):
            if rule.tag in kept:
                continue
            following = (kept[r.tag].handle for r in rules[i + 1 :] if r.tag in kept)
            ops.append(NewRule(rule, next(following, None)))
            added.append(rule.tag)

    keep = {id(rule) for rule in kept.values()}
    stale = [rule for rule in live.rules if id(rule) not in keep]
    ops += [DelRule(rule.chain, rule.handle, rule.tag) for rule in stale]
    removed = tuple(_describe(rule) for rule in stale)
    return ops, ApplyReport(added=tuple(added), removed=removed, created=created)


def _op_message(plan: Plan, op: Op) -> Any:
    table = [("NFTA_TABLE_NAME", plan.table)]
    if isinstance(op, NewTable):
        return _message(nft_table_msg, NFT_MSG_NEWTABLE, NLM_F_CREATE, table)
    if isinstance(op, DelTable):
        return _message(nft_table_msg, NFT_MSG_DELTABLE, 0, table)
    if isinstance(op, NewChain):
        hook = {
            "attrs": [
                ("NFTA_HOOK_HOOKNUM", HOOKNUMS[op.chain.hook]),
                ("NFTA_HOOK_PRIORITY", op.chain.priority),
            ]
        }
        attrs = [
            ("NFTA_CHAIN_TABLE", plan.table),
            ("NFTA_CHAIN_NAME", op.chain.name),
            ("NFTA_CHAIN_HOOK", hook),
            ("NFTA_CHAIN_POLICY", NF_ACCEPT),
            ("NFTA_CHAIN_TYPE", str(op.chain.type)),
        ]
        return _message(nft_chain_msg, NFT_MSG_NEWCHAIN, NLM_F_CREATE, attrs)
    if isinstance(op, NewRule):
        return _rule_msg(plan.table, op.rule, op.before)
    attrs = [
        ("NFTA_RULE_TABLE", plan.table),
        ("NFTA_RULE_CHAIN", op.chain),
        ("NFTA_RULE_HANDLE", op.handle),
    ]
    return _message(nft_rule_msg, NFT_MSG_DELRULE, 0, attrs)


def _op_text(op: Op) -> str:
    if isinstance(op, NewTable):
        return f"add table inet {TABLE}"
    if isinstance(op, DelTable):
        return f"delete table inet {TABLE}"
    if isinstance(op, NewChain):
        return f"add chain {op.chain.name} ({op.chain.type}, hook {op.chain.hook})"
    if isinstance(op, NewRule):
        return f"add rule {op.rule.tag} in chain {op.rule.chain}"
    return f"delete rule {op.tag or op.handle} in chain {op.chain}"


# --------------------------------------------------------------------------------------
# Netlink I/O


def _inside(netns: str | None) -> AbstractContextManager[None]:
    """This thread in ``netns`` for the body (see ``netconfig.netns.inside``)."""
    return inside(netns, NftError)


_NO_PERMISSION = "netlink: permission denied (CAP_NET_ADMIN is needed)"


def _run(netns: str | None, work: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    with _inside(netns):
        try:
            return asyncio.run(work())
        except NetlinkError as exc:
            if exc.code == errno.EPERM:
                raise NftError(_NO_PERMISSION) from None
            raise NftError(f"netlink: {exc.args[1] if len(exc.args) > 1 else exc}") from None
        except PermissionError:
            raise NftError(_NO_PERMISSION) from None
        except OSError as exc:
            raise NftError(f"netlink: {exc.strerror or exc}") from None


async def _dump(nft: Any, msg_cls: Any, msg_type: int) -> list[Any]:
    msg = msg_cls()
    if msg_cls is not nft_table_msg:
        # Ask the kernel for our table only (the attribute filters a dump).
        prefix = "NFTA_RULE_TABLE" if msg_cls is nft_rule_msg else "NFTA_CHAIN_TABLE"
        msg["attrs"] = [(prefix, TABLE)]
    return [x async for x in await nft.request_get(msg, msg_type)]


async def _live(nft: Any) -> LiveTable | None:
    tables = await _dump(nft, nft_table_msg, NFT_MSG_GETTABLE)
    ours = [t for t in tables if t.get_attr("NFTA_TABLE_NAME") == TABLE]
    if not ours:
        return None
    flags = int(ours[0].get_attr("NFTA_TABLE_FLAGS") or 0)
    chains = []
    for msg in await _dump(nft, nft_chain_msg, NFT_MSG_GETCHAIN):
        if msg.get_attr("NFTA_CHAIN_TABLE") != TABLE:
            continue
        hook = msg.get_attr("NFTA_CHAIN_HOOK")
        hooknum = hook.get_attr("NFTA_HOOK_HOOKNUM") if hook is not None else None
        priority = hook.get_attr("NFTA_HOOK_PRIORITY") if hook is not None else None
        chains.append(
            LiveChain(
                name=str(msg.get_attr("NFTA_CHAIN_NAME")),
                type=str(msg.get_attr("NFTA_CHAIN_TYPE")),
                hooknum=None if hooknum is None else int(hooknum),
                priority=None if priority is None else int(priority),
                policy=_optional_int(msg.get_attr("NFTA_CHAIN_POLICY")),
            )
        )
    rules = []
    for msg in await _dump(nft, nft_rule_msg, NFT_MSG_GETRULE):
        if msg.get_attr("NFTA_RULE_TABLE") != TABLE:
            continue
        expressions = msg.get_attr("NFTA_RULE_EXPRESSIONS") or ()
        packets = nbytes = 0
        for expression in expressions:
            if expression.get_attr("NFTA_EXPR_NAME") == "counter":
                data = expression.get_attr("NFTA_EXPR_DATA")
                packets += int(data.get_attr("NFTA_COUNTER_PACKETS") or 0)
                nbytes += int(data.get_attr("NFTA_COUNTER_BYTES") or 0)
        tag = msg.get_attr("NFTA_RULE_USERDATA")
        rules.append(
            LiveRule(
                chain=str(msg.get_attr("NFTA_RULE_CHAIN")),
                handle=int(msg.get_attr("NFTA_RULE_HANDLE")),
                tag=tag if isinstance(tag, str) and tag else None,
                expressions=canonical(expressions),
                packets=packets,
                bytes=nbytes,
            )
        )
    return LiveTable(tuple(chains), tuple(rules), flags)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _batch_marker(msg_type: int) -> Any:
    msg = nfgen_msg()
    msg["res_id"] = NFNL_SUBSYS_NFTABLES
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = NLM_F_REQUEST
    return msg


async def _commit(nft: Any, plan: Plan, ops: Sequence[Op]) -> None:
    """Send ``ops`` as one transaction; on a refusal, name the operation refused."""
    messages = [
        _batch_marker(NFNL_MSG_BATCH_BEGIN),
        *(_op_message(plan, op) for op in ops),
        _batch_marker(NFNL_MSG_BATCH_END),
    ]
    answered = 0
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            async for _ in nft.nlm_request_batch(messages):
                answered += 1
    except TimeoutError:
        failed = _op_text(ops[answered]) if answered < len(ops) else "commit"
        raise NftError(
            f"netlink: the kernel did not answer '{failed}' within {ANSWER_TIMEOUT_S:g}s; "
            "'sqlgate net status' shows what is in place"
        ) from None
    except NetlinkError as exc:
        failed = _op_text(ops[answered]) if answered < len(ops) else "commit"
        reason = exc.args[1] if len(exc.args) > 1 else str(exc)
        raise NftError(f"netlink refused '{failed}': {reason} (nothing was changed)") from None


async def _apply(plan: Plan) -> ApplyReport:
    async with AsyncNFTables(nfgen_family=NFPROTO_INET) as nft:
        ops, report = reconcile(plan, await _live(nft))
        if ops:
            await _commit(nft, plan, ops)
        return report


async def _remove() -> bool:
    async with AsyncNFTables(nfgen_family=NFPROTO_INET) as nft:
        # Read first: a refusal (no CAP_NET_ADMIN) is answered to a read, while a batch
        # refused whole is answered to its marker, which nothing waits on.
        tables = await _dump(nft, nft_table_msg, NFT_MSG_GETTABLE)
        if not any(t.get_attr("NFTA_TABLE_NAME") == TABLE for t in tables):
            return False
        msg = _message(nft_table_msg, NFT_MSG_DELTABLE, 0, [("NFTA_TABLE_NAME", TABLE)])
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                async for _ in nft.nlm_request_batch(
                    [_batch_marker(NFNL_MSG_BATCH_BEGIN), msg, _batch_marker(NFNL_MSG_BATCH_END)]
                ):
                    pass
        except TimeoutError:
            raise NftError(
                f"netlink: the kernel did not answer 'delete table inet {TABLE}' within "
                f"{ANSWER_TIMEOUT_S:g}s; 'sqlgate net status' shows what is in place"
            ) from None
        except NetlinkError as exc:
            if exc.code == errno.ENOENT:
                return False
            raise
        return True


async def _read() -> LiveTable | None:
    async with AsyncNFTables(nfgen_family=NFPROTO_INET) as nft:
        return await _live(nft)


async def _generation() -> int:
    async with AsyncNFTables(nfgen_family=NFPROTO_INET) as nft:
        answers = [x async for x in await nft.request_get(nft_gen_msg(), NFT_MSG_GETGEN)]
    if not answers or answers[0].get_attr("NFTA_GEN_ID") is None:
        raise NftError("netlink: no ruleset generation in the answer")
    return int(answers[0].get_attr("NFTA_GEN_ID"))


def generation(netns: str | None = None) -> int:
    """The ruleset's generation in ``netns``: the kernel counts every committed change to
    any table there, so an unchanged number means an unchanged ruleset."""
    return _run(netns, _generation)


def apply(plan: Plan, netns: str | None = None) -> ApplyReport:
    """Make table ``inet sqlgate`` hold exactly ``plan``, in one atomic transaction."""
    return _run(netns, lambda: _apply(plan))


def remove(netns: str | None = None) -> bool:
    """Delete table ``inet sqlgate`` and everything in it; False when it was not there."""
    return _run(netns, _remove)


def diff(plan: Plan, netns: str | None = None) -> ApplyReport:
    """What ``apply`` would change, changing nothing: a drift check for watchers."""
    return reconcile(plan, live_table(netns))[1]


def live_table(netns: str | None = None) -> LiveTable | None:
    """Our table as the kernel holds it, or ``None`` when it is absent."""
    return _run(netns, _read)


def status(netns: str | None = None) -> list[RuleStatus]:
    """Every rule in our table with its counters, in chain order; empty if absent."""
    live = live_table(netns)
    if live is None:
        return []
    return [
        RuleStatus(rule.tag or "", rule.chain, rule.handle, rule.packets, rule.bytes)
        for rule in live.rules
    ]
