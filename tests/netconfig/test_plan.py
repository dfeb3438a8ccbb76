"""netconfig.plan: the configuration becomes tagged rules and nft text, without I/O."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import MakeConfig

from appliance.config import ConfigError, load_config
from netconfig.plan import (
    FAMILY,
    TABLE,
    Action,
    Plan,
    PlanError,
    Rule,
    plan_rules,
)

SPEC_TEXT = """\
table inet sqlgate {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 10.77.2.10 tcp dport 3306 counter redirect to :3307 comment "sqlgate:redirect:orders"
	}

	chain output {
		type nat hook output priority -100; policy accept;
		meta mark 0x00005147 counter return comment "sqlgate:exempt"
		ip daddr 10.77.2.10 tcp dport 3306 counter redirect to :3307 comment "sqlgate:redirect-local:orders"
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		ip daddr 10.77.2.10 tcp dport 3306 counter drop comment "sqlgate:bypass-drop:orders"
		tcp dport 3306 counter drop comment "sqlgate:bypass-drop-port:3306"
	}

	chain local {
		type filter hook output priority filter; policy accept;
		meta mark 0x00005147 counter return comment "sqlgate:local-exempt"
		oifname != "lo" tcp dport 3306 counter drop comment "sqlgate:local-drop-port:3306"
	}
}
"""  # noqa: E501


def by_chain(plan: Plan) -> dict[str, list[str]]:
    return {chain.name: [rule.tag for rule in plan.rules_in(chain.name)] for chain in plan.chains}


def test_spec_config_gives_the_spec_rules(make_config: MakeConfig) -> None:
    plan = plan_rules(make_config())
    assert (plan.table, plan.family) == (TABLE, FAMILY) == ("sqlgate", "inet")
    assert [(c.name, c.type, c.hook, c.priority) for c in plan.chains] == [
        ("prerouting", "nat", "prerouting", -100),
        ("output", "nat", "output", -100),
        ("forward", "filter", "forward", 0),
        ("local", "filter", "output", 0),
    ]
    orders = ipaddress.IPv4Address("10.77.2.10")
    assert plan.rules == (
        Rule("prerouting", "sqlgate:redirect:orders", Action.REDIRECT, orders, 3306, to_port=3307),
        Rule("output", "sqlgate:exempt", Action.RETURN, mark=0x5147),
        Rule(
            "output", "sqlgate:redirect-local:orders", Action.REDIRECT, orders, 3306, to_port=3307
        ),
        Rule("forward", "sqlgate:bypass-drop:orders", Action.DROP, orders, 3306),
        Rule("forward", "sqlgate:bypass-drop-port:3306", Action.DROP, dport=3306),
        Rule("local", "sqlgate:local-exempt", Action.RETURN, mark=0x5147),
        Rule("local", "sqlgate:local-drop-port:3306", Action.DROP, dport=3306, leaves_host=True),
    )
    assert plan.to_nft() == SPEC_TEXT


def test_plan_from_a_config_file(tmp_path: Path) -> None:
    (tmp_path / "orders.pw").write_text("secret\n")
    (tmp_path / "ledger.key").write_bytes(b"\x00" * 32)
    (tmp_path / "sqlgate.toml").write_text(
        '[appliance]\nlisten = "[::]:4406"\n'
        '[[targets]]\nname = "orders"\nhost = "[fd77:2::10]"\nport = 3316\n'
        'user = "sqlgate"\npassword_file = "orders.pw"\n'
        '[ledger]\npath = "ledger.db"\nsigning_key = "ledger.key"\n'
        "[network]\nmark = 0xdead\n"
    )
    plan = plan_rules(load_config(tmp_path / "sqlgate.toml"))
    text = plan.to_nft()
    assert "meta mark 0x0000dead counter return" in text
    assert "ip6 daddr fd77:2::10 tcp dport 3316 counter redirect to :4406 comment" in text


def test_ipv6_target(make_config: MakeConfig) -> None:
    plan = plan_rules(make_config([("orders", "fd77::10")]))
    redirect = plan.rules_in("prerouting")[0]
    assert redirect.daddr == ipaddress.IPv6Address("fd77::10")
    assert redirect.to_nft() == (
        "ip6 daddr fd77::10 tcp dport 3306 counter redirect to :3307"
        ' comment "sqlgate:redirect:orders"'
    )
    assert plan.rules_in("forward")[0].to_nft() == (
        'ip6 daddr fd77::10 tcp dport 3306 counter drop comment "sqlgate:bypass-drop:orders"'
    )


def test_ipv4_mapped_target_is_matched_as_ipv4(make_config: MakeConfig) -> None:
    # A dual-stack client socket to ::ffff:a.b.c.d sends IPv4 packets.
    plan = plan_rules(make_config([("orders", "::ffff:10.77.2.10")]))
    assert plan.rules_in("prerouting")[0].daddr == ipaddress.IPv4Address("10.77.2.10")


def test_several_targets_in_config_order(make_config: MakeConfig) -> None:
    config = make_config(
        [("orders", "10.77.2.10"), ("billing", "fd77:2::20", 3307), ("reports", "10.77.2.30")],
        listen_port=4000,
        mark=0xDEADBEEF,
    )
    plan = plan_rules(config)
    assert by_chain(plan) == {
        "prerouting": [
            "sqlgate:redirect:orders",
            "sqlgate:redirect:billing",
            "sqlgate:redirect:reports",
        ],
        "output": [
            "sqlgate:exempt",
            "sqlgate:redirect-local:orders",
            "sqlgate:redirect-local:billing",
            "sqlgate:redirect-local:reports",
        ],
        "forward": [
            "sqlgate:bypass-drop:orders",
            "sqlgate:bypass-drop:billing",
            "sqlgate:bypass-drop:reports",
            "sqlgate:bypass-drop-port:3306",  # each target port at every other address
            "sqlgate:bypass-drop-port:3307",
        ],
        "local": [
            "sqlgate:local-exempt",
            "sqlgate:local-drop-port:3306",
            "sqlgate:local-drop-port:3307",
        ],
    }
    text = plan.to_nft()
    assert "meta mark 0xdeadbeef counter return" in text
    assert "ip6 daddr fd77:2::20 tcp dport 3307 counter redirect to :4000" in text
    assert text.count("redirect to :4000") == 6
    assert len(set(plan.tags)) == len(plan.tags) == 15


def test_targets_sharing_address_and_port_share_one_rule(make_config: MakeConfig) -> None:
    config = make_config(
        [("orders", "10.77.2.10"), ("orders-ro", "10.77.2.10"), ("audit", "10.77.2.10", 3307)]
    )
    assert by_chain(plan_rules(config))["prerouting"] == [
        "sqlgate:redirect:orders",
        "sqlgate:redirect:audit",
    ]


def test_host_name_with_a_resolver(make_config: MakeConfig) -> None:
    asked: list[str] = []

    def resolve(name: str) -> Sequence[str]:
        asked.append(name)
        return ["10.77.2.40", "fd77:2::40", "10.77.2.40"]  # duplicates are dropped

    config = make_config([("orders", "10.77.2.10"), ("billing", "db.billing.internal")])
    plan = plan_rules(config, resolve=resolve)
    assert asked == ["db.billing.internal"]  # literals are never looked up
    assert by_chain(plan)["prerouting"] == [
        "sqlgate:redirect:orders",
        "sqlgate:redirect:billing/10.77.2.40",
        "sqlgate:redirect:billing/fd77:2::40",
    ]
    assert [str(r.daddr) for r in plan.rules_in("forward")] == [
        "10.77.2.10",
        "10.77.2.40",
        "fd77:2::40",
        "None",  # the port at every address
    ]


def test_host_name_resolving_to_one_address_keeps_the_short_tag(make_config: MakeConfig) -> None:
    plan = plan_rules(make_config([("billing", "db.billing")]), resolve=lambda _: ["10.77.2.40"])
    assert by_chain(plan)["prerouting"] == ["sqlgate:redirect:billing"]


def test_host_name_without_a_resolver_names_the_key(make_config: MakeConfig) -> None:
    config = make_config([("orders", "10.77.2.10"), ("billing", "db.billing.internal")])
    with pytest.raises(PlanError) as caught:
        plan_rules(config)
    assert caught.value.key == "targets[1].host"
    assert str(caught.value).startswith(f"{config.path}: targets[1].host: ")
    assert "db.billing.internal" in str(caught.value)
    assert isinstance(caught.value, ConfigError)  # the CLI answers it like any bad config


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (OSError("Name or service not known"), "Name or service not known"),
        ([], "resolved to no address"),
        (["not-an-address"], "not an IP address"),
        (["0.0.0.0"], "not the address of one host"),
    ],
)
def test_resolver_problems_are_plan_errors(
    make_config: MakeConfig, answer: Exception | list[str], fragment: str
) -> None:
    def resolve(name: str) -> Sequence[str]:
        if isinstance(answer, Exception):
            raise answer
        return answer

    with pytest.raises(PlanError, match=fragment) as caught:
        plan_rules(make_config([("billing", "db.billing.internal")]), resolve=resolve)
    assert caught.value.key == "targets[0].host"


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255", "fe80::1%eth0"]
)
def test_bad_address_is_a_plan_error(make_config: MakeConfig, host: str) -> None:
    with pytest.raises(PlanError) as caught:
        plan_rules(make_config([("orders", "10.77.2.10"), ("bad", host)]))
    assert caught.value.key == "targets[1].host"


def test_listen_port_zero_cannot_be_redirected_to(make_config: MakeConfig) -> None:
    with pytest.raises(PlanError) as caught:
        plan_rules(make_config(listen_port=0))
    assert caught.value.key == "appliance.listen"


def test_longest_tag_fits_an_nft_comment(make_config: MakeConfig) -> None:
    name = "n" * 64  # the longest target name the config accepts
    address = "fd77:aaaa:bbbb:cccc:dddd:eeee:ffff:1234"
    plan = plan_rules(
        make_config([(name, "db.example"), ("x", "10.0.0.1")]), lambda _: [address, "10.0.0.2"]
    )
    assert max(len(tag) for tag in plan.tags) == 127


def test_rules_and_plans_are_checked_values(make_config: MakeConfig) -> None:
    plan = plan_rules(make_config())
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.rules = ()  # type: ignore[misc]
    with pytest.raises(ValueError, match="tag"):
        Rule("output", 'sqlgate:bad"tag', Action.RETURN, mark=1)
    with pytest.raises(ValueError, match="to_port"):
        Rule("output", "sqlgate:x", Action.DROP, mark=1, to_port=3307)
    with pytest.raises(ValueError, match="unique"):
        Plan(TABLE, FAMILY, plan.chains, plan.rules + plan.rules[:1])
