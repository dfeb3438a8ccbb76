"""netconfig.nft: raw netlink expressions, the pure reconcile, and the live table in
namespaces of our own (never the host's ruleset).

The expressions are checked twice: against golden lists taken from what ``nft`` 1.0
compiles for the same statements (``nft --debug=netlink``), without a kernel; and live,
against rules that ``nft -f`` itself installs in a namespace and pyroute2 reads back.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    MakeConfig,
    Namespaces,
    comments,
    listener,
    nft_json,
    nft_text,
    ns_run,
    ns_socket,
)

from netconfig.nft import (
    HOOKNUMS,
    ApplyReport,
    DelRule,
    DelTable,
    LiveChain,
    LiveRule,
    LiveTable,
    NewChain,
    NewRule,
    NewTable,
    NftError,
    _rule_msg,
    apply,
    diff,
    live_table,
    planned_expressions,
    reconcile,
    remove,
    status,
)
from netconfig.plan import TABLE, Action, Plan, Rule, plan_rules

V4 = ipaddress.IPv4Address("10.77.2.10")
V6 = ipaddress.IPv6Address("fd77::10")

# --- golden expressions -------------------------------------------------------------------
# `nft --debug=netlink add rule inet sqlgate prerouting ip daddr 10.77.2.10 tcp dport 3306
#  counter redirect to :3307` prints:
#   [ meta load nfproto => reg 1 ]                       [ cmp eq reg 1 0x00000002 ]
#   [ payload load 4b @ network header + 16 => reg 1 ]   [ cmp eq reg 1 0x0a024d0a ]
#   [ meta load l4proto => reg 1 ]                       [ cmp eq reg 1 0x00000006 ]
#   [ payload load 2b @ transport header + 2 => reg 1 ]  [ cmp eq reg 1 0x0000ea0c ]
#   [ counter pkts 0 bytes 0 ]
#   [ immediate reg 1 0x0000eb0c ]
#   [ redir proto_min reg 1 proto_max reg 1 flags 0x2 ]
# and the same with "ip6 daddr fd77::10" loads 16 bytes at network header + 24.


def meta(key: str) -> Any:
    return ("meta", (("NFTA_META_DREG", "NFT_REG_1"), ("NFTA_META_KEY", key)))


def cmp_eq(data: bytes) -> Any:
    return (
        "cmp",
        (
            ("NFTA_CMP_DATA", (("NFTA_DATA_VALUE", data),)),
            ("NFTA_CMP_OP", "NFT_CMP_EQ"),
            ("NFTA_CMP_SREG", "NFT_REG_1"),
        ),
    )


def payload(base: str, offset: int, length: int) -> Any:
    return (
        "payload",
        (
            ("NFTA_PAYLOAD_BASE", base),
            ("NFTA_PAYLOAD_DREG", "NFT_REG_1"),
            ("NFTA_PAYLOAD_LEN", length),
            ("NFTA_PAYLOAD_OFFSET", offset),
        ),
    )


def verdict(code: str) -> Any:
    data = (("NFTA_DATA_VERDICT", (("NFTA_VERDICT_CODE", code),)),)
    return (
        "immediate",
        (("NFTA_IMMEDIATE_DATA", data), ("NFTA_IMMEDIATE_DREG", "NFT_REG_VERDICT")),
    )


def match_target(nfproto: int, daddr: bytes, offset: int) -> list[Any]:
    return [
        meta("NFT_META_NFPROTO"),
        cmp_eq(bytes([nfproto])),
        payload("NFT_PAYLOAD_NETWORK_HEADER", offset, len(daddr)),
        cmp_eq(daddr),
        meta("NFT_META_L4PROTO"),
        cmp_eq(b"\x06"),
        payload("NFT_PAYLOAD_TRANSPORT_HEADER", 2, 2),
        cmp_eq(b"\x0c\xea"),  # 3306
    ]


COUNTER = ("counter", ())
REDIRECT_3307 = [
    (
        "immediate",
        (
            ("NFTA_IMMEDIATE_DATA", (("NFTA_DATA_VALUE", b"\x0c\xeb"),)),
            ("NFTA_IMMEDIATE_DREG", "NFT_REG_1"),
        ),
    ),  # fmt: skip
    (
        "redir",
        (
            ("NFTA_REDIR_FLAGS", ("NF_NAT_RANGE_PROTO_SPECIFIED",)),
            ("NFTA_REDIR_REG_PROTO_MAX", "NFT_REG_1"),
            ("NFTA_REDIR_REG_PROTO_MIN", "NFT_REG_1"),
        ),
    ),  # fmt: skip
]


def test_redirect_ipv4_expressions_are_what_nft_compiles() -> None:
    rule = Rule("prerouting", "sqlgate:redirect:orders", Action.REDIRECT, V4, 3306, to_port=3307)
    golden = [*match_target(2, b"\x0a\x4d\x02\x0a", 16), COUNTER, *REDIRECT_3307]
    assert list(planned_expressions(rule)) == golden


def test_redirect_ipv6_expressions_are_what_nft_compiles() -> None:
    rule = Rule("prerouting", "sqlgate:redirect:v6", Action.REDIRECT, V6, 3306, to_port=3307)
    golden = [*match_target(10, V6.packed, 24), COUNTER, *REDIRECT_3307]
    assert list(planned_expressions(rule)) == golden


def test_drop_and_exempt_expressions_are_what_nft_compiles() -> None:
    drop = Rule("forward", "sqlgate:bypass-drop:orders", Action.DROP, V4, 3306)
    assert list(planned_expressions(drop)) == [
        *match_target(2, V4.packed, 16),
        COUNTER,
        verdict("NF_DROP"),
    ]
    # `meta mark 0x00005147 counter return`: the mark is a host-order u32.
    exempt = Rule("output", "sqlgate:exempt", Action.RETURN, mark=0x5147)
    assert list(planned_expressions(exempt)) == [
        meta("NFT_META_MARK"),
        cmp_eq(struct.pack("=I", 0x5147)),
        COUNTER,
        verdict("NFT_RETURN"),
    ]


def nlattrs(data: bytes) -> dict[int, bytes]:
    """Top-level netlink attributes of one message: {type: payload}."""
    offset, found = 16 + 4, {}  # nlmsghdr + nfgenmsg
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        found[kind & 0x3FFF] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def test_userdata_is_an_nftnl_comment_tlv() -> None:
    # libnftnl: {u8 type = NFTNL_UDATA_RULE_COMMENT (0), u8 length, text, NUL}; that is
    # what makes `nft list` print `comment "..."`.
    tag = "sqlgate:redirect-local:orders"
    rule = Rule("output", tag, Action.REDIRECT, V4, 3306, to_port=3307)
    msg = _rule_msg(TABLE, rule)
    msg.encode()
    nfta_rule_userdata = 7
    assert nlattrs(msg.data)[nfta_rule_userdata] == bytes([0, len(tag) + 1]) + tag.encode() + b"\0"


# --- reconcile, without a kernel -----------------------------------------------------------


def live(plan: Plan, rules: list[LiveRule] | None = None) -> LiveTable:
    chains = tuple(
        LiveChain(c.name, str(c.type), HOOKNUMS[c.hook], c.priority, 1) for c in plan.chains
    )
    if rules is None:
        rules = [
            LiveRule(r.chain, handle, r.tag, planned_expressions(r))
            for handle, r in enumerate(plan.rules, start=10)
        ]
    return LiveTable(chains, tuple(rules))


def by_tag(plan: Plan, chain: str) -> list[str]:
    return [rule.tag for rule in plan.rules_in(chain)]


def adds_before_deletes(ops: list[Any]) -> bool:
    kinds = [isinstance(op, DelRule) for op in ops]
    return kinds == sorted(kinds)


def outcome(table: LiveTable, ops: list[Any]) -> dict[str, list[str | None]]:
    """The tags per chain after ``ops``, carried out as the kernel would."""
    chains: dict[str, list[tuple[str | None, int]]] = {c.name: [] for c in table.chains}
    for rule in table.rules:
        chains[rule.chain].append((rule.tag, rule.handle))
    for handle, op in enumerate(ops, start=1000):
        if isinstance(op, NewRule):
            rules = chains[op.rule.chain]
            at = next(i for i, r in enumerate(rules) if r[1] == op.before) if op.before else None
            rules.insert(len(rules) if at is None else at, (op.rule.tag, handle))
        elif isinstance(op, DelRule):
            chains[op.chain] = [r for r in chains[op.chain] if r[1] != op.handle]
    return {name: [tag for tag, _ in rules] for name, rules in chains.items()}


def test_reconcile_empty_kernel_creates_everything(make_config: MakeConfig) -> None:
    plan = plan_rules(make_config())
    ops, report = reconcile(plan, None)
    assert ops[0] == NewTable()
    assert [op.chain.name for op in ops if isinstance(op, NewChain)] == [
        "prerouting",
        "output",
        "forward",
        "local",
    ]
    assert [op.rule for op in ops if isinstance(op, NewRule)] == list(plan.rules)
    assert report.added == plan.tags and report.removed == ()
    assert report.created == (
        "table inet sqlgate",
        "chain prerouting",
        "chain output",
        "chain forward",
        "chain local",
    )


def test_reconcile_in_sync_does_nothing(make_config: MakeConfig) -> None:
    plan = plan_rules(make_config([("orders", "10.77.2.10"), ("v6", "fd77::10")]))
    ops, report = reconcile(plan, live(plan))
    assert ops == [] and report == ApplyReport() and not report.changed


def test_reconcile_adds_missing_then_deletes_stale(make_config: MakeConfig) -> None:
    old = plan_rules(make_config([("orders", "10.77.2.10"), ("billing", "10.77.2.20")]))
    new = plan_rules(make_config([("orders", "10.77.2.10"), ("reports", "10.77.2.30")]))
    ops, report = reconcile(new, live(old))
    assert adds_before_deletes(ops)
    assert report.added == (
        "sqlgate:redirect:reports",
        "sqlgate:redirect-local:reports",
        "sqlgate:bypass-drop:reports",
    )
    assert report.removed == (
        "sqlgate:redirect:billing",
        "sqlgate:redirect-local:billing",
        "sqlgate:bypass-drop:billing",
    )
    # appended, but the new address drop goes before the kept drop of the port
    handles = {r.tag: r.handle for r in live(old).rules}
    assert [op.before for op in ops if isinstance(op, NewRule)] == [
        None,
        None,
        handles["sqlgate:bypass-drop-port:3306"],
    ]
    assert outcome(live(old), ops) == {c.name: by_tag(new, c.name) for c in new.chains}


def test_reconcile_replaces_a_rule_whose_expressions_changed(make_config: MakeConfig) -> None:
    old = plan_rules(make_config(listen_port=3307))
    new = plan_rules(make_config(listen_port=4000))
    ops, report = reconcile(new, live(old))
    changed = ("sqlgate:redirect:orders", "sqlgate:redirect-local:orders")
    assert report.added == report.removed == changed
    assert adds_before_deletes(ops)


def test_reconcile_keeps_the_exemption_first(make_config: MakeConfig) -> None:
    plan = plan_rules(make_config())
    table = live(plan)
    without_exempt = [r for r in table.rules if r.tag != "sqlgate:exempt"]
    ops, report = reconcile(plan, live(plan, without_exempt))
    local = next(r for r in table.rules if r.tag == "sqlgate:redirect-local:orders")
    assert ops == [NewRule(plan.rules_in("output")[0], before=local.handle)]
    assert report.added == ("sqlgate:exempt",)

    # The exemption present but after the redirect: one of the two is re-added in place.
    exempt = next(r for r in table.rules if r.tag == "sqlgate:exempt")
    swapped = [r for r in table.rules if r is not exempt]
    swapped.insert(swapped.index(local) + 1, exempt)
    ops, report = reconcile(plan, live(plan, swapped))
    assert adds_before_deletes(ops) and len(ops) == 2
    assert outcome(live(plan, swapped), ops)["output"] == list(plan.tags[1:3])


def test_reconcile_removes_foreign_and_duplicate_rules(make_config: MakeConfig) -> None:
    plan = plan_rules(make_config())
    table = live(plan)
    drop = table.rules[-1]
    foreign = LiveRule("forward", 90, None, (("counter", ()),))
    duplicate = LiveRule("forward", 91, drop.tag, drop.expressions)
    ops, report = reconcile(plan, live(plan, [*table.rules, foreign, duplicate]))
    assert ops == [DelRule("forward", 90, None), DelRule("forward", 91, drop.tag)]
    assert report.removed == ("(untagged rule 90 in forward)", drop.tag)


def test_reconcile_rebuilds_a_table_with_wrong_chains(make_config: MakeConfig) -> None:
    plan = plan_rules(make_config())
    table = live(plan)
    bad = LiveTable((*table.chains[:2], LiveChain("forward", "filter", 2, 0, 0)), table.rules)
    ops, report = reconcile(plan, bad)
    assert ops[:2] == [DelTable(), NewTable()]
    assert report.rebuilt and report.added == plan.tags and report.removed == plan.tags


# --- live, in namespaces of our own ---------------------------------------------------------


def test_dry_run_text_is_valid_nft_input(
    netns: str, tmp_path: Path, make_config: MakeConfig
) -> None:
    plan = plan_rules(make_config([("orders", "10.77.2.10"), ("v6", "fd77::10")]))
    (tmp_path / "plan.nft").write_text(plan.to_nft())
    ns_run(netns, "nft", "-c", "-f", str(tmp_path / "plan.nft"))
    assert nft_json(netns) == []  # -c checks only


def test_our_expressions_equal_what_nft_installs(
    netns: str, tmp_path: Path, make_config: MakeConfig
) -> None:
    plan = plan_rules(make_config([("orders", "10.77.2.10"), ("v6", "fd77::10")]))
    (tmp_path / "plan.nft").write_text(plan.to_nft())
    ns_run(netns, "nft", "-f", str(tmp_path / "plan.nft"))

    table = live_table(netns)
    assert table is not None
    assert [rule.tag for rule in table.rules] == list(plan.tags)
    for installed, rule in zip(table.rules, plan.rules, strict=True):
        assert installed.expressions == planned_expressions(rule), rule.tag
    # So reconcile finds nothing to do in a table that nft wrote from the dry-run text.
    assert not apply(plan, netns).changed


def test_apply_installs_exactly_the_plan(netns: str, make_config: MakeConfig) -> None:
    plan = plan_rules(make_config([("orders", "10.77.2.10"), ("v6", "fd77::10")]))
    report = apply(plan, netns)
    assert report.added == plan.tags and report.removed == () and report.created

    assert nft_text(netns) == plan.to_nft()
    objects = nft_json(netns)
    assert [o["table"]["name"] for o in objects if "table" in o] == ["sqlgate"]
    assert [o["table"]["family"] for o in objects if "table" in o] == ["inet"]
    chains = {
        o["chain"]["name"]: (o["chain"]["type"], o["chain"]["hook"], o["chain"]["prio"])
        for o in objects
        if "chain" in o
    }
    assert chains == {
        "prerouting": ("nat", "prerouting", -100),
        "output": ("nat", "output", -100),
        "forward": ("filter", "forward", 0),
        "local": ("filter", "output", 0),
    }
    assert all(o["chain"]["policy"] == "accept" for o in objects if "chain" in o)
    assert comments(netns) == {c.name: [r.tag for r in plan.rules_in(c.name)] for c in plan.chains}


def test_apply_twice_changes_nothing(netns: str, make_config: MakeConfig) -> None:
    plan = plan_rules(make_config([("orders", "10.77.2.10"), ("v6", "fd77::10")]))
    apply(plan, netns)
    handles = [s.handle for s in status(netns)]
    second = apply(plan, netns)
    assert second == ApplyReport() and not second.changed
    assert [s.handle for s in status(netns)] == handles


def test_changed_plan_reconciles(netns: str, make_config: MakeConfig) -> None:
    apply(plan_rules(make_config([("orders", "10.77.2.10"), ("billing", "10.77.2.20")])), netns)
    new = plan_rules(make_config([("orders", "10.77.2.10"), ("reports", "fd77:2::30")]))
    report = apply(new, netns)
    assert set(report.added) == {t for t in new.tags if t.endswith(":reports")}
    assert set(report.removed) == {
        "sqlgate:redirect:billing",
        "sqlgate:redirect-local:billing",
        "sqlgate:bypass-drop:billing",
    }
    assert nft_text(netns) == new.to_nft()

    moved = plan_rules(make_config([("orders", "10.77.2.10"), ("reports", "fd77:2::30")], 4000))
    report = apply(moved, netns)
    assert (
        set(report.added)
        == set(report.removed)
        == {t for t in moved.tags if ":redirect" in t and "exempt" not in t}
    )
    assert nft_text(netns) == moved.to_nft()


def test_apply_repairs_tampering(netns: str, make_config: MakeConfig) -> None:
    plan = plan_rules(make_config())
    apply(plan, netns)
    exempt = next(s for s in status(netns) if s.tag == "sqlgate:exempt")
    ns_run(
        netns, "nft", "delete", "rule", "inet", "sqlgate", "output", "handle", str(exempt.handle)
    )
    ns_run(
        netns, "nft", "add", "rule", "inet", "sqlgate", "forward", "tcp", "dport", "22", "accept"
    )
    assert diff(plan, netns).added == ("sqlgate:exempt",)  # diff reports, changes nothing
    assert diff(plan, netns).added == ("sqlgate:exempt",)
    report = apply(plan, netns)
    assert report.added == ("sqlgate:exempt",)
    assert len(report.removed) == 1 and report.removed[0].startswith("(untagged rule")
    assert nft_text(netns) == plan.to_nft()  # the exemption is back in front

    ns_run(netns, "nft", "add", "chain", "inet", "sqlgate", "forward", "{ policy drop; }")
    report = apply(plan, netns)
    assert report.rebuilt
    assert nft_text(netns) == plan.to_nft()


def test_async_callers_use_a_worker_thread(netns: str, make_config: MakeConfig) -> None:
    plan = plan_rules(make_config())

    async def main() -> ApplyReport:
        return await asyncio.to_thread(apply, plan, netns)

    assert asyncio.run(main()).added == plan.tags
    assert nft_text(netns) == plan.to_nft()


def test_remove_leaves_no_table_and_twice_is_fine(netns: str, make_config: MakeConfig) -> None:
    ns_run(netns, "nft", "add", "table", "inet", "someone-else")
    apply(plan_rules(make_config()), netns)
    assert remove(netns) is True
    assert [o["table"]["name"] for o in nft_json(netns) if "table" in o] == ["someone-else"]
    assert remove(netns) is False
    assert status(netns) == []


def test_missing_namespace_is_an_error_and_is_not_created(make_config: MakeConfig) -> None:
    name = "sqlgate-t-does-not-exist"
    with pytest.raises(NftError, match=name):
        apply(plan_rules(make_config()), name)
    assert not Path(f"/run/netns/{name}").exists()


# --- traffic --------------------------------------------------------------------------------

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same number


def original_dst(conn: socket.socket) -> tuple[str, int]:
    """The destination a redirected connection was addressed to."""
    if conn.family == socket.AF_INET6:
        raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), int.from_bytes(raw[2:4], "big")
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")


def packets(ns: str) -> dict[str, int]:
    return {s.tag: s.packets for s in status(ns)}


def connect(
    ns: str, address: str, port: int, mark: int | None = None, timeout: float = 5
) -> socket.socket:
    sock = ns_socket(ns, socket.AF_INET6 if ":" in address else socket.AF_INET)
    if mark is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    sock.settimeout(timeout)
    sock.connect((address, port))
    return sock


def nothing_waiting(server: socket.socket) -> bool:
    server.settimeout(0.2)
    try:
        conn, _ = server.accept()
    except TimeoutError:
        return True
    conn.close()
    return False


@pytest.mark.parametrize(("db", "loopback"), [("10.77.2.10", "127.0.0.1"), ("fd77::10", "::1")])
def test_local_client_is_redirected_and_counted(
    netns: str, make_config: MakeConfig, db: str, loopback: str
) -> None:
    # One namespace: the database address is local (on lo), so an unredirected connect
    # would reach `database`; the output chain sends it to `proxy` instead.
    ns_run(netns, "ip", "addr", "add", db, "dev", "lo")
    apply(plan_rules(make_config([("orders", db)], listen_port=3307)), netns)
    proxy, database = listener(netns, loopback, 3307), listener(netns, db, 3306)
    before = packets(netns)["sqlgate:redirect-local:orders"]

    client = connect(netns, db, 3306)
    conn, _ = proxy.accept()
    assert original_dst(conn) == (db, 3306)
    assert nothing_waiting(database)
    assert packets(netns)["sqlgate:redirect-local:orders"] > before
    for sock in (conn, client, proxy, database):
        sock.close()


@pytest.mark.parametrize(("db", "loopback"), [("10.77.2.10", "127.0.0.1"), ("fd77::10", "::1")])
def test_marked_socket_is_exempt(
    netns: str, make_config: MakeConfig, db: str, loopback: str
) -> None:
    ns_run(netns, "ip", "addr", "add", db, "dev", "lo")
    apply(plan_rules(make_config([("orders", db)], listen_port=3307, mark=0x5147)), netns)
    proxy, database = listener(netns, loopback, 3307), listener(netns, db, 3306)
    before = packets(netns)

    client = connect(netns, db, 3306, mark=0x5147)  # as the proxy's upstream sockets are
    conn, _ = database.accept()
    assert nothing_waiting(proxy)
    after = packets(netns)
    assert after["sqlgate:exempt"] > before["sqlgate:exempt"]
    assert after["sqlgate:redirect-local:orders"] == before["sqlgate:redirect-local:orders"]
    for sock in (conn, client, proxy, database):
        sock.close()


def three_namespaces(namespaces: Namespaces) -> tuple[str, str, str]:
    """agent --(10.77.1.0/24, fd77:1::/64)-- gateway --(10.77.2.0/24, fd77:2::/64)-- db."""
    agent, gateway, db = namespaces.new(), namespaces.new(), namespaces.new()
    ns_run(agent, "ip", "link", "add", "a0", "type", "veth", "peer", "name", "g0", "netns", gateway)
    ns_run(gateway, "ip", "link", "add", "g1", "type", "veth", "peer", "name", "d0", "netns", db)
    for ns, dev, v4, v6 in [
        (agent, "a0", "10.77.1.10/24", "fd77:1::10/64"),
        (gateway, "g0", "10.77.1.1/24", "fd77:1::1/64"),
        (gateway, "g1", "10.77.2.1/24", "fd77:2::1/64"),
        (db, "d0", "10.77.2.10/24", "fd77:2::10/64"),
    ]:
        ns_run(ns, "ip", "addr", "add", v4, "dev", dev)
        ns_run(ns, "ip", "addr", "add", v6, "dev", dev, "nodad")
        ns_run(ns, "ip", "link", "set", dev, "up")
    for ns, via4, via6 in [(agent, "10.77.1.1", "fd77:1::1"), (db, "10.77.2.1", "fd77:2::1")]:
        ns_run(ns, "ip", "route", "add", "default", "via", via4)
        ns_run(ns, "ip", "-6", "route", "add", "default", "via", via6)
    ns_run(gateway, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
    return agent, gateway, db


def reaches(agent: str, address: str, server: socket.socket) -> tuple[str, int] | None:
    """Connect from the agent; None if ``server`` did not accept, else the destination
    the client addressed as the server sees it (for the proxy on 3307: SO_ORIGINAL_DST)."""
    client = connect(agent, address, 3306)
    try:
        conn, _ = server.accept()
    except TimeoutError:
        return None
    finally:
        client.close()
    with conn:
        return original_dst(conn) if server.getsockname()[1] == 3307 else conn.getsockname()[:2]


def test_gateway_redirects_fails_closed_and_is_plain_routing_after_remove(
    namespaces: Namespaces, make_config: MakeConfig
) -> None:
    agent, gateway, db = three_namespaces(namespaces)
    plan = plan_rules(make_config([("orders", "10.77.2.10"), ("v6", "fd77:2::10")], 3307))
    proxies = {4: listener(gateway, "0.0.0.0", 3307), 6: listener(gateway, "::", 3307)}
    dbs = {4: listener(db, "10.77.2.10", 3306), 6: listener(db, "fd77:2::10", 3306)}
    targets = {4: "10.77.2.10", 6: "fd77:2::10"}

    for v, address in targets.items():  # before any rule: routed straight to the db
        assert reaches(agent, address, dbs[v]) == (address, 3306)

    apply(plan, gateway)
    for v, address in targets.items():
        assert reaches(agent, address, proxies[v]) == (address, 3306)
        assert nothing_waiting(dbs[v])
    counts = packets(gateway)
    assert counts["sqlgate:redirect:orders"] > 0 and counts["sqlgate:redirect:v6"] > 0

    # Someone deletes the IPv4 redirect: the forward drop keeps the database closed.
    handle = next(s.handle for s in status(gateway) if s.tag == "sqlgate:redirect:orders")
    ns_run(gateway, "nft", "delete", "rule", "inet", "sqlgate", "prerouting", "handle", str(handle))
    with pytest.raises(TimeoutError):
        connect(agent, "10.77.2.10", 3306, timeout=1)
    assert nothing_waiting(dbs[4])
    assert packets(gateway)["sqlgate:bypass-drop:orders"] > 0

    assert apply(plan, gateway).added == ("sqlgate:redirect:orders",)
    assert reaches(agent, "10.77.2.10", proxies[4]) == ("10.77.2.10", 3306)

    assert remove(gateway)
    for v, address in targets.items():  # plain routing again
        assert reaches(agent, address, dbs[v]) == (address, 3306)
    for sock in (*proxies.values(), *dbs.values()):
        sock.close()


def test_the_databases_other_addresses_are_closed_too(
    namespaces: Namespaces, make_config: MakeConfig
) -> None:
    # The target names the db's IPv4 address only; the same server also answers on its
    # IPv6 address and on a second IPv4 address. Those were forwarded straight to it.
    agent, gateway, db = three_namespaces(namespaces)
    ns_run(db, "ip", "addr", "add", "10.77.2.11/24", "dev", "d0")
    plan = plan_rules(make_config([("orders", "10.77.2.10")], 3307))
    proxy = listener(gateway, "0.0.0.0", 3307)
    others = {a: listener(db, a, 3306) for a in ("fd77:2::10", "10.77.2.11")}
    for address, server in others.items():  # before any rule: routed straight to the db
        assert reaches(agent, address, server) == (address, 3306)

    apply(plan, gateway)
    assert reaches(agent, "10.77.2.10", proxy) == ("10.77.2.10", 3306)
    for address, server in others.items():
        with pytest.raises(TimeoutError):
            connect(agent, address, 3306, timeout=1)
        assert nothing_waiting(server)
    assert packets(gateway)["sqlgate:bypass-drop-port:3306"] > 0
    for sock in (proxy, *others.values()):
        sock.close()


# An operator's own table that keeps conntrack busy before ours exists.
OPERATOR_CT_RULESET = (
    "add table inet operator; add chain inet operator out "
    "{ type filter hook output priority 0; ct state established counter accept; }"
)


def test_local_clients_reach_the_databases_other_addresses_only_marked(
    namespaces: Namespaces, make_config: MakeConfig
) -> None:
    # A process in the gateway's namespace that dialled the db's IPv6 address (the target
    # names IPv4) reached the database without its mark: the output chain only knew the
    # targets' addresses. And where conntrack was already in use (any ruleset with `ct`),
    # a local connection made before the rules kept flowing: nat chains see only the
    # first packet of a connection.
    _, gateway, db = three_namespaces(namespaces)
    ns_run(gateway, "nft", OPERATOR_CT_RULESET)
    target = listener(db, "10.77.2.10", 3306)
    early = connect(gateway, "10.77.2.10", 3306)
    early_conn, _ = target.accept()
    apply(plan_rules(make_config([("orders", "10.77.2.10")], 3307, mark=0x5147)), gateway)
    early.send(b"after the rules")
    early_conn.settimeout(1)
    with pytest.raises(TimeoutError):
        early_conn.recv(100)
    for sock in (early, early_conn, target):
        sock.close()

    other, own = listener(db, "fd77:2::10", 3306), listener(gateway, "127.0.0.1", 3306)
    with pytest.raises(TimeoutError):  # dropped on its way out
        connect(gateway, "fd77:2::10", 3306, timeout=1)
    assert nothing_waiting(other)
    assert packets(gateway)["sqlgate:local-drop-port:3306"] > 0
    connect(gateway, "fd77:2::10", 3306, mark=0x5147).close()  # the proxy's own: passes
    other.accept()[0].close()
    connect(gateway, "127.0.0.1", 3306).close()  # a port 3306 of the host itself: not dropped
    own.accept()[0].close()
    for sock in (other, own):
        sock.close()


_CLI_CONFIG = """
[appliance]
listen = "0.0.0.0:3307"
[[targets]]
name = "orders"
host = "{host}"
user = "sqlgate"
password_file = "orders.pw"
[ledger]
path = "ledger.db"
signing_key = "ledger.key"
"""


def test_net_remove_and_status_need_no_target_that_resolves_now(netns: str, tmp_path: Path) -> None:
    """`sqlgate net remove` planned the rules first: with a target's host name that did
    not resolve (DNS down) or a password file gone, it refused (exit 2) and left the
    rules, which drop every connection to the database, in place; `status` likewise."""
    import sys

    from appliance.ledger.chain import generate_key, private_key_pem

    (tmp_path / "orders.pw").write_text("secret\n")
    (tmp_path / "ledger.key").write_bytes(private_key_pem(generate_key()))
    (tmp_path / "ledger.key").chmod(0o600)  # the gateway refuses a key others can read
    good, broken = tmp_path / "good.toml", tmp_path / "broken.toml"
    good.write_text(_CLI_CONFIG.format(host="10.77.2.10"))
    broken.write_text(_CLI_CONFIG.format(host="orders.invalid").replace("orders.pw", "gone.pw"))

    def sqlgate(*args: str) -> tuple[int, str, str]:
        done = ns_run(netns, sys.executable, "-m", "appliance.cli", *args, check=False)
        return done.returncode, done.stdout, done.stderr

    assert sqlgate("net", "apply", "-c", str(good))[0] == 0
    code, out, err = sqlgate("net", "status", "-c", str(broken))
    assert (code, err) == (0, "") and "sqlgate:bypass-drop:orders" in out
    assert sqlgate("net", "remove", "-c", str(broken)) == (0, "removed table inet sqlgate\n", "")
    assert "sqlgate" not in ns_run(netns, "nft", "list", "ruleset").stdout
    code, _, err = sqlgate("net", "apply", "-c", str(broken))  # apply still needs them
    assert code == 2 and "targets[0]" in err, err


def test_a_dormant_table_is_not_trusted(namespaces: Namespaces, make_config: MakeConfig) -> None:
    # `flags dormant` unhooks every chain of the table while its rules stay listed: an
    # apply said "unchanged" and the sentinel saw no drift, and clients went straight
    # to the database. Now the table is replaced, in force again.
    agent, gateway, db = three_namespaces(namespaces)
    plan = plan_rules(make_config([("orders", "10.77.2.10")], 3307))
    proxy, database = listener(gateway, "0.0.0.0", 3307), listener(db, "10.77.2.10", 3306)
    apply(plan, gateway)
    ns_run(gateway, "nft", "add table inet sqlgate { flags dormant; }")
    assert reaches(agent, "10.77.2.10", database) == ("10.77.2.10", 3306)  # the hazard
    assert [s.tag for s in status(gateway)] == list(plan.tags)  # ... listed all the same

    drift = diff(plan, gateway)
    assert drift.changed and drift.rebuilt and drift.flags == 1
    report = apply(plan, gateway)
    assert report.rebuilt and report.flags == 1
    assert "dormant" not in ns_run(gateway, "nft", "list", "table", "inet", "sqlgate").stdout
    assert nft_text(gateway) == plan.to_nft()
    assert not apply(plan, gateway).changed
    assert reaches(agent, "10.77.2.10", proxy) == ("10.77.2.10", 3306)
    assert nothing_waiting(database)
    for sock in (proxy, database):
        sock.close()


@pytest.mark.parametrize("action", ["remove", "status", "apply"])
def test_net_commands_without_cap_net_admin_fail_with_one_line(
    netns: str, tmp_path: Path, action: str
) -> None:
    """`sqlgate net remove` run without CAP_NET_ADMIN never returned: the kernel refused
    the whole netlink batch under the batch marker's sequence number, which nothing
    waited on. Now every net command says what is missing and exits 1, rules untouched."""
    import sys

    from appliance.ledger.chain import generate_key, private_key_pem

    (tmp_path / "orders.pw").write_text("secret\n")
    (tmp_path / "ledger.key").write_bytes(private_key_pem(generate_key()))
    (tmp_path / "ledger.key").chmod(0o600)
    config = tmp_path / "sqlgate.toml"
    config.write_text(_CLI_CONFIG.format(host="10.77.2.10"))
    ns_run(netns, sys.executable, "-m", "appliance.cli", "net", "apply", "-c", str(config))
    command = [sys.executable, "-m", "appliance.cli", "net", action, "-c", str(config)]
    before = nft_text(netns)

    done = ns_run(netns, "setpriv", "--bounding-set=-net_admin", *command, check=False)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr == "sqlgate: netlink: permission denied (CAP_NET_ADMIN is needed)\n"
    assert nft_text(netns) == before


def test_net_status_says_when_the_rules_are_not_the_configured_ones(
    netns: str, tmp_path: Path
) -> None:
    """With the forward chain deleted behind its back (the drop that keeps clients from
    going around the gateway), `sqlgate net status` listed the rules that were left and
    said nothing amiss. Now it compares them with the configuration's plan."""
    import sys

    from appliance.ledger.chain import generate_key, private_key_pem

    (tmp_path / "orders.pw").write_text("secret\n")
    (tmp_path / "ledger.key").write_bytes(private_key_pem(generate_key()))
    (tmp_path / "ledger.key").chmod(0o600)
    config = tmp_path / "sqlgate.toml"
    config.write_text(_CLI_CONFIG.format(host="10.77.2.10"))

    def cli_status() -> str:
        done = ns_run(
            netns, sys.executable, "-m", "appliance.cli", "net", "status", "-c", str(config)
        )
        assert done.stderr == ""
        return done.stdout

    ns_run(netns, sys.executable, "-m", "appliance.cli", "net", "apply", "-c", str(config))
    assert cli_status().splitlines()[-1] == "in place: the 7 rules the configuration plans"

    ns_run(netns, "nft", "delete", "chain", "inet", "sqlgate", "forward")
    local = next(r for r in status(netns) if r.tag == "sqlgate:redirect-local:orders")
    ns_run(netns, "nft", "delete", "rule", "inet", "sqlgate", "output", "handle", str(local.handle))
    last = cli_status().splitlines()[-1]
    assert last.startswith("NOT as configured (chains missing: forward; missing: "), last
    assert "sqlgate:bypass-drop:orders" in last and "'sqlgate net apply' puts them back" in last

    config.write_text(_CLI_CONFIG.format(host="10.77.2.11"))  # the target moved
    last = cli_status().splitlines()[-1]
    assert "changed: sqlgate:redirect:orders)" in last, last
