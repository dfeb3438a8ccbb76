"""The transparent path in the three-namespace lab (SPEC §2, §12; issue 3).

Agents in the agent namespace dial the database's own addresses (10.77.2.10 and
fd77:2::10, port 3306) exactly as they would without sqlgate. The gateway runs in the
gateway namespace, the router between agent and database, with
``[network] manage_rules = true``: its nftables rules redirect those connections to its
listen port, and it logs in to MariaDB with the vaulted credential.

The module's gateway is started on demand (``running_gateway``) and stopped on demand
(``no_gateway``), so every test states what it needs and the order does not matter.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest
from lab.clients import ClientError, ledger_records, parse_batch
from lab.mariadb import SHOP_CUSTOMERS
from lab.topology import DB_PORT, LabEnv, LabGateway, ns_argv, sqlgate_argv, unique_prefix

from appliance.config import load_config
from appliance.mysql.constants import ErrorCode
from netconfig import nft
from netconfig.lab import Lab
from netconfig.plan import plan_rules

pytestmark = pytest.mark.integration

AGENT = "agent"
AGENT_PASSWORD = "agent-secret-1"
CUSTOMERS_SQL = "SELECT id, name, email, card_number FROM shop.customers ORDER BY id"
GREETING_MARK = "-sqlgate"
CONNECT_TIMEOUT_S = 3.0
FAMILIES = ("v4", "v6")
TARGETS = {"v4": "orders", "v6": "orders6"}


# --------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def gateway(lab: LabEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabGateway]:
    """The lab's gateway (not started): stopped, and its rules removed, at module end."""
    gw = LabGateway(
        tmp_path_factory.mktemp("gateway"),
        lab.lab,
        backend_user=lab.db.native_user,
        backend_password=lab.db.native_password,
        pki=lab.pki,
    )
    gw.write_config()
    try:
        yield gw
    finally:
        try:
            gw.stop()
        finally:
            nft.remove(lab.ns("gw"))  # whatever a SIGKILL left behind


@pytest.fixture
def running_gateway(gateway: LabGateway) -> LabGateway:
    """The gateway, running in the gateway namespace (started if it is not)."""
    if not gateway.running:
        try:
            gateway.start()
        except RuntimeError as exc:
            pytest.fail(f"cannot start the gateway in its namespace: {exc}", pytrace=False)
    return gateway


@pytest.fixture
def no_gateway(lab: LabEnv, gateway: LabGateway) -> LabGateway:
    """No gateway running and no sqlgate rules in the gateway namespace."""
    gateway.stop()
    nft.remove(lab.ns("gw"))
    return gateway


def db_address(lab: LabEnv, family: str) -> str:
    return lab.lab.db_v4 if family == "v4" else lab.lab.db_v6


def agent_address(lab: LabEnv, family: str) -> str:
    return lab.lab.agent_v4 if family == "v4" else lab.lab.agent_v6


def gw_db_side(lab: LabEnv, family: str) -> str:
    return lab.lab.gw_db_side_v4 if family == "v4" else lab.lab.gw_db_side_v6


def query(conn: pymysql.connections.Connection[Any], sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def seen_from(conn: pymysql.connections.Connection[Any]) -> str:
    """The client address MariaDB sees for this connection ("10.77.2.1:41234")."""
    rows = query(conn, "SELECT host FROM information_schema.processlist WHERE id = CONNECTION_ID()")
    return str(rows[0][0])


def output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def net(lab: LabEnv, role: str, gw: LabGateway, *args: str) -> subprocess.CompletedProcess[str]:
    """``sqlgate net ARGS -c CFG`` inside ``role``'s namespace."""
    return lab.sqlgate(role, "net", *args, "-c", str(gw.config_path))


def rule_counters(lab: LabEnv) -> dict[str, int]:
    """Rule tag -> packets, read straight from the kernel in the gateway namespace."""
    return {rule.tag: rule.packets for rule in nft.status(lab.ns("gw"))}


def through_gateway(lab: LabEnv, gw: LabGateway, family: str) -> None:
    """One short session through the gateway (for counters)."""
    conn = lab.connect("agent", db_address(lab, family), DB_PORT, AGENT, AGENT_PASSWORD, timeout=5)
    try:
        assert query(conn, "SELECT 1") == [(1,)]
    finally:
        conn.close()


def assert_authenticated_in_log(
    lab: LabEnv, gw: LabGateway, family: str, *, timeout: float = 5.0
) -> None:
    """The gateway logged a session of ``agent`` from the agent's address for the target."""
    agent = re.escape(agent_address(lab, family))
    pattern = (
        rf"session \d+: {AGENT} authenticated from \[?(?:::ffff:)?{agent}\]?:\d+ "
        rf".*for target {TARGETS[family]}\b"
    )
    found = gw.wait_log(pattern, timeout)
    assert found is not None, f"no session of {AGENT} in the gateway log:\n{gw.new_log()}"


# --------------------------------------------------------------------------------------
# the lab itself


def test_lab_topology_is_complete(lab: LabEnv) -> None:
    topo = lab.lab
    status = topo.status()
    assert status["up"], status
    spaces = status["namespaces"]
    assert set(spaces) == {topo.agent_ns, topo.gw_ns, topo.db_ns}
    assert all(s["present"] for s in spaces.values())
    assert spaces[topo.agent_ns]["addresses"][topo.agent_if] == [
        f"{topo.agent_v4}/24",
        f"{topo.agent_v6}/64",
    ]
    assert spaces[topo.gw_ns]["addresses"][topo.gw_agent_if] == [
        f"{topo.gw_agent_side_v4}/24",
        f"{topo.gw_agent_side_v6}/64",
    ]
    assert spaces[topo.gw_ns]["addresses"][topo.gw_db_if] == [
        f"{topo.gw_db_side_v4}/24",
        f"{topo.gw_db_side_v6}/64",
    ]
    assert spaces[topo.db_ns]["addresses"][topo.db_if] == [f"{topo.db_v4}/24", f"{topo.db_v6}/64"]
    assert sorted(spaces[topo.agent_ns]["default_routes"]) == [
        f"default via {topo.gw_agent_side_v4} dev {topo.agent_if}",
        f"default via {topo.gw_agent_side_v6} dev {topo.agent_if}",
    ]
    assert sorted(spaces[topo.db_ns]["default_routes"]) == [
        f"default via {topo.gw_db_side_v4} dev {topo.db_if}",
        f"default via {topo.gw_db_side_v6} dev {topo.db_if}",
    ]
    assert spaces[topo.gw_ns]["forwarding"] == {"ipv4": True, "ipv6": True}
    assert spaces[topo.agent_ns]["forwarding"] == {"ipv4": False, "ipv6": False}
    assert all(s["links"]["lo"] in ("UNKNOWN", "UP") for s in spaces.values())
    # up() on a complete lab changes nothing and keeps it complete.
    topo.up()
    assert topo.is_up()
    assert topo.status() == status


def test_lab_up_and_down_are_idempotent() -> None:
    other = Lab(unique_prefix(), subnet_base=78)
    try:
        other.up()
        other.up()
        assert other.is_up()
        assert other.db_v6 == "fd78:2::10"
        assert other.ns("gateway") == other.gw_ns == f"{other.prefix}-gw"
    finally:
        other.down()
    other.down()
    assert not any(other.present().values())
    assert other.status()["up"] is False
    with pytest.raises(ValueError):
        other.ns("router")


@pytest.mark.parametrize("family", FAMILIES)
def test_db_reachable_from_agent_by_plain_routing(
    lab: LabEnv, no_gateway: LabGateway, family: str
) -> None:
    """Before any gateway rule exists, the agent reaches MariaDB itself (routed by gw)."""
    assert nft.status(lab.ns("gw")) == []
    host = db_address(lab, family)
    conn = lab.connect(
        "agent", host, DB_PORT, lab.db.native_user, lab.db.native_password, timeout=5
    )
    try:
        assert not conn.get_server_info().endswith(GREETING_MARK)
        assert query(conn, "SELECT CURRENT_USER()") == [(f"{lab.db.native_user}@%",)]
        assert query(conn, CUSTOMERS_SQL) == list(SHOP_CUSTOMERS)
        # No proxy and no NAT in between: MariaDB sees the agent's own address.
        assert seen_from(conn).startswith(agent_address(lab, family) + ":")
    finally:
        conn.close()


# --------------------------------------------------------------------------------------
# through the gateway


def test_gateway_installs_its_rules_at_start(lab: LabEnv, running_gateway: LabGateway) -> None:
    assert running_gateway.rules_ready, (
        f"no sqlgate rules in {lab.ns('gw')} after the gateway started with "
        f"manage_rules = true:\n{running_gateway.log()}"
    )
    tags = set(rule_counters(lab))
    for target in TARGETS.values():
        assert {
            f"sqlgate:redirect:{target}",
            f"sqlgate:redirect-local:{target}",
            f"sqlgate:bypass-drop:{target}",
        } <= tags, tags
    assert {"sqlgate:exempt", f"sqlgate:bypass-drop-port:{DB_PORT}"} <= tags


@pytest.mark.parametrize("family", FAMILIES)
def test_pymysql_in_agent_ns_is_served_by_the_gateway(
    lab: LabEnv, running_gateway: LabGateway, family: str
) -> None:
    gw = running_gateway
    gw.mark_log()
    conn = lab.connect("agent", db_address(lab, family), DB_PORT, AGENT, AGENT_PASSWORD, timeout=5)
    try:
        # The greeting came from the gateway (it marks the backend's version) ...
        assert conn.get_server_info().endswith(GREETING_MARK), conn.get_server_info()
        assert query(conn, CUSTOMERS_SQL) == list(SHOP_CUSTOMERS)
        # ... which logged in to MariaDB for the agent with the vaulted credential ...
        assert query(conn, "SELECT CURRENT_USER()") == [(f"{lab.db.native_user}@%",)]
        # ... from its own database-side address, not the agent's.
        assert seen_from(conn).startswith(gw_db_side(lab, family) + ":"), seen_from(conn)
    finally:
        conn.close()
    assert_authenticated_in_log(lab, gw, family)


@pytest.mark.parametrize("family", FAMILIES)
def test_mariadb_cli_in_agent_ns_is_served_by_the_gateway(
    lab: LabEnv, running_gateway: LabGateway, family: str
) -> None:
    gw = running_gateway
    gw.mark_log()
    out = lab.mariadb_cli(
        "agent",
        f"SELECT CURRENT_USER(); {CUSTOMERS_SQL}",
        host=db_address(lab, family),
        port=DB_PORT,
        user=AGENT,
        password=AGENT_PASSWORD,
        column_names=False,
    )
    rows = parse_batch(out)
    assert rows[0] == [f"{lab.db.native_user}@%"]
    assert rows[1:] == [[str(c[0]), c[1], c[2], c[3]] for c in SHOP_CUSTOMERS]
    assert_authenticated_in_log(lab, gw, family)
    status = lab.mariadb_cli(
        "agent",
        "status",
        host=db_address(lab, family),
        port=DB_PORT,
        user=AGENT,
        password=AGENT_PASSWORD,
    )
    assert re.search(r"Server version:.*" + re.escape(GREETING_MARK), status), status


def test_net_status_shows_redirect_counters(lab: LabEnv, running_gateway: LabGateway) -> None:
    gw = running_gateway
    for family in FAMILIES:
        through_gateway(lab, gw, family)
    done = net(lab, "gw", gw, "status")
    assert done.returncode == 0, output(done)
    for target in TARGETS.values():
        tag = f"sqlgate:redirect:{target}"
        lines = [
            line
            for line in done.stdout.splitlines()
            if re.search(rf"(?<!\S){re.escape(tag)}(?!\S)", line)
        ]
        assert len(lines) == 1, f"{tag} not listed once:\n{output(done)}"
        numbers = [int(n) for n in re.findall(r"(?<![\w:.-])\d+(?![\w:.-])", lines[0])]
        assert numbers and numbers[0] > 0, f"no packets counted for {tag}: {lines[0]!r}"
        # The CLI shows what the kernel holds.
        assert rule_counters(lab)[tag] > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_net_probe_from_agent_ns_says_intercepted(
    lab: LabEnv, running_gateway: LabGateway, family: str
) -> None:
    host = db_address(lab, family)
    target = f"[{host}]:{DB_PORT}" if family == "v6" else f"{host}:{DB_PORT}"
    done = net(lab, "agent", running_gateway, "probe", "--target", target)
    assert done.returncode == 0, output(done)
    said = done.stdout.lower()
    assert "intercepted" in said and "not intercepted" not in said, output(done)


def test_clean_stop_removes_the_rules(lab: LabEnv, running_gateway: LabGateway) -> None:
    assert rule_counters(lab), "the gateway's rules were not in place"
    code = running_gateway.stop()
    assert code == 0, running_gateway.log()
    assert nft.status(lab.ns("gw")) == [], "rules left behind after a clean exit"
    assert nft.live_table(lab.ns("gw")) is None


# --------------------------------------------------------------------------------------
# failing closed, and back to plain routing


@dataclass
class GatewayWithout(LabGateway):
    """The lab's gateway run without some capabilities (``dropped``, for setpriv's
    ``--bounding-set``: ``-net_raw``, ``-net_admin,-net_raw``)."""

    dropped: str = ""

    def command(self) -> list[str]:
        if not self.dropped:
            return super().command()
        run = sqlgate_argv("run", "-c", str(self.config_path))
        return ns_argv(self.lab.gw_ns, ["setpriv", f"--bounding-set={self.dropped}", *run])


def own_gateway(lab: LabEnv, workdir: Path, **kwargs: Any) -> GatewayWithout:
    """A gateway of the test's own in the lab (the module's one stopped first)."""
    return GatewayWithout(
        workdir,
        lab.lab,
        backend_user=lab.db.native_user,
        backend_password=lab.db.native_password,
        pki=lab.pki,
        **kwargs,
    )


def test_without_net_raw_the_gateway_serves_without_its_sentinel(
    lab: LabEnv, no_gateway: LabGateway, tmp_path: Path
) -> None:
    """The sentinel needs CAP_NET_RAW, the rules only CAP_NET_ADMIN: without the first the
    gateway serves behind its rules and says the sentinel is off (it exited 1 and left
    its rules behind, so every client was refused)."""
    gw = own_gateway(lab, tmp_path, dropped="-net_raw")
    try:
        gw.start()
        assert gw.rules_ready, gw.log()
        through_gateway(lab, gw, "v4")
        assert_authenticated_in_log(lab, gw, "v4")
        (alert,) = ledger_records(tmp_path / "ledger.db", "--kind", "alert")
        assert alert["alert"] == "sentinel_error" and alert["source"] == "start"
        assert "Operation not permitted" in alert["reason"]
        assert "the interception rules are in place" in alert["reason"]
        assert gw.stop() == 0
        assert nft.status(lab.ns("gw")) == []  # a clean stop removes them, as ever
    finally:
        gw.stop()
        nft.remove(lab.ns("gw"))


def test_a_gateway_that_cannot_mark_its_connections_refuses_them_when_they_come_back(
    lab: LabEnv, no_gateway: LabGateway, tmp_path: Path
) -> None:
    """Rules installed by someone else, the gateway without CAP_NET_ADMIN: its unmarked
    upstream connection is redirected into itself. It connected to itself again and
    again (thousands of sessions a second, out of file descriptors); now the returning
    connection is refused and the client told why."""
    # either capability sets a socket mark: without both it cannot
    gw = own_gateway(lab, tmp_path, dropped="-net_admin,-net_raw", manage_rules=False)
    gw.write_config()
    nft.apply(plan_rules(load_config(gw.config_path)), lab.ns("gw"))
    try:
        gw.start()
        with pytest.raises(pymysql.err.OperationalError) as refused:
            lab.connect("agent", lab.lab.db_v4, DB_PORT, AGENT, AGENT_PASSWORD, timeout=5)
        assert "came back to it" in str(refused.value)
        assert "CAP_NET_ADMIN" in str(refused.value)
        time.sleep(0.5)
        log = gw.log()
        assert log.count("is the gateway's own, sent back by the interception rules") == 1, log
        assert log.count("cannot mark the gateway's connections to its targets") == 1, log
    finally:
        gw.stop()
        nft.remove(lab.ns("gw"))


def test_views_over_masked_columns_stay_masked_behind_the_rules(
    lab: LabEnv, no_gateway: LabGateway, tmp_path: Path
) -> None:
    """The gateway reads the targets' views on a side connection of its own; it carried
    no mark, so the rules sent it back into the gateway, the views were never read and a
    view showed the masked column in clear. Started with the rules already in place (a
    restart after SIGKILL), as the first read then met nobody listening."""
    lab.db.admin_sql(
        "CREATE OR REPLACE VIEW shop.v_cards AS SELECT id, card_number AS c FROM shop.customers"
    )
    gw = own_gateway(
        lab,
        tmp_path,
        extra_toml='[[masking]]\ncolumn = "shop.customers.card_number"\nstrategy = "last4"\n',
    )
    gw.write_config()
    nft.apply(plan_rules(load_config(gw.config_path)), lab.ns("gw"))
    try:
        gw.start()
        conn = lab.connect("agent", lab.lab.db_v4, DB_PORT, AGENT, AGENT_PASSWORD, timeout=5)
        try:
            assert query(conn, "SELECT card_number FROM shop.customers WHERE id = 1") == [
                ("************1111",)
            ]
            assert query(conn, "SELECT c FROM shop.v_cards WHERE id = 1") == [("************1111",)]
        finally:
            conn.close()
        assert "cannot read its views" not in gw.log()
    finally:
        gw.stop()
        nft.remove(lab.ns("gw"))
        lab.db.admin_sql("DROP VIEW IF EXISTS shop.v_cards")


def test_with_keep_rules_on_stop_a_clean_stop_fails_closed(
    lab: LabEnv, no_gateway: LabGateway, tmp_path: Path
) -> None:
    """A clean stop (an upgrade) removed the rules, so until the gateway was back the
    clients reached the database around it; with keep_rules_on_stop they stay."""
    gw = own_gateway(lab, tmp_path, extra_toml="keep_rules_on_stop = true\n")
    try:
        gw.start()
        assert gw.rules_ready, gw.log()
        through_gateway(lab, gw, "v4")
        assert gw.stop() == 0
        assert "interception rules kept (keep_rules_on_stop)" in gw.log()
        assert nft.status(lab.ns("gw")) != []
        assert not lab.can_connect("agent", lab.lab.db_v4, DB_PORT, timeout=1.0)
    finally:
        gw.stop()
        nft.remove(lab.ns("gw"))
    assert lab.can_connect("agent", lab.lab.db_v4, DB_PORT, timeout=2.0)  # net remove


def test_killed_gateway_fails_closed_then_net_remove_restores_plain_routing(
    lab: LabEnv, running_gateway: LabGateway
) -> None:
    gw = running_gateway
    assert gw.rules_ready, f"the gateway installed no rules:\n{gw.log()}"
    gw.kill()  # SIGKILL: it cannot take its rules away
    assert rule_counters(lab), "the rules vanished with the killed gateway"

    for family in FAMILIES:
        host = db_address(lab, family)
        for user, password in (
            (AGENT, AGENT_PASSWORD),
            (lab.db.native_user, lab.db.native_password),
        ):
            with pytest.raises(pymysql.err.OperationalError) as failed:
                conn = lab.connect(
                    "agent", host, DB_PORT, user, password, timeout=CONNECT_TIMEOUT_S
                )
                conn.close()
            assert failed.value.args[0] == ErrorCode.CONN_HOST_ERROR, failed.value
        assert not lab.can_connect("agent", host, DB_PORT, timeout=CONNECT_TIMEOUT_S)

    done = net(lab, "gw", gw, "remove")
    assert done.returncode == 0, output(done)
    assert nft.live_table(lab.ns("gw")) is None

    for family in FAMILIES:
        host = db_address(lab, family)
        conn = lab.connect(
            "agent", host, DB_PORT, lab.db.native_user, lab.db.native_password, timeout=5
        )
        try:
            assert not conn.get_server_info().endswith(GREETING_MARK)
            assert query(conn, "SELECT CURRENT_USER()") == [(f"{lab.db.native_user}@%",)]
            assert seen_from(conn).startswith(agent_address(lab, family) + ":")
        finally:
            conn.close()
        # The gateway's account means nothing to MariaDB itself.
        with pytest.raises(pymysql.err.OperationalError) as refused:
            lab.connect("agent", host, DB_PORT, AGENT, AGENT_PASSWORD, timeout=5).close()
        assert refused.value.args[0] == ErrorCode.ACCESS_DENIED, refused.value


def test_net_apply_twice_changes_nothing_and_remove_twice_is_fine(
    lab: LabEnv, no_gateway: LabGateway
) -> None:
    gw = no_gateway
    first = net(lab, "gw", gw, "apply")
    assert first.returncode == 0, output(first)
    installed = nft.status(lab.ns("gw"))
    assert {r.tag for r in installed} >= {f"sqlgate:redirect:{t}" for t in TARGETS.values()}

    second = net(lab, "gw", gw, "apply")
    assert second.returncode == 0, output(second)
    assert re.search(r"unchanged|nothing|no change", second.stdout, re.IGNORECASE), output(second)
    # Not one rule was replaced: same handles, same order.
    assert [(r.tag, r.handle) for r in nft.status(lab.ns("gw"))] == [
        (r.tag, r.handle) for r in installed
    ]

    for attempt in (1, 2):
        done = net(lab, "gw", gw, "remove")
        assert done.returncode == 0, f"remove #{attempt}: {output(done)}"
        assert "Traceback" not in done.stderr
    assert nft.live_table(lab.ns("gw")) is None


def test_mariadb_cli_refused_by_mariadb_itself_without_gateway(
    lab: LabEnv, no_gateway: LabGateway
) -> None:
    """With no gateway and no rules the agent's gateway account reaches MariaDB, which
    does not know it: the path is plain routing."""
    with pytest.raises(ClientError) as failed:
        lab.mariadb_cli(
            "agent",
            "SELECT 1",
            host=lab.lab.db_v4,
            port=DB_PORT,
            user=AGENT,
            password=AGENT_PASSWORD,
        )
    assert "Access denied" in failed.value.stderr, failed.value.stderr


def test_config_file_is_valid(gateway: LabGateway) -> None:
    from appliance.config import load_config

    config = load_config(gateway.config_path)
    assert [(t.name, t.host, t.port) for t in config.targets] == [
        ("orders", gateway.lab.db_v4, DB_PORT),
        ("orders6", gateway.lab.db_v6, DB_PORT),
    ]
    assert config.network.manage_rules
    assert config.appliance.listen == "[::]:3307"
    assert Path(config.appliance.state_dir) == gateway.workdir.resolve()


# --------------------------------------------------------------------------------------
# the sentinel inside the running gateway


def test_flushed_rules_raise_an_alert_and_come_back_within_2s(
    lab: LabEnv, running_gateway: LabGateway
) -> None:
    gw = running_gateway
    plan = plan_rules(load_config(gw.config_path))
    for _ in range(3):  # the watchdog may win the race to the first connection: try again
        gw.mark_log()
        started = time.monotonic()
        assert nft.remove(lab.ns("gw"))  # someone flushes the gateway's table behind its back
        # a connection slips past while the table is gone: plain routing to MariaDB
        slipped = lab.can_connect("agent", lab.lab.db_v4, DB_PORT, timeout=1.0)
        restored = gw.wait_log(r"alert rules_restored", timeout=2.0)
        elapsed = time.monotonic() - started
        assert gw.wait_log(r"alert rules_changed", timeout=0.1) is not None, gw.new_log()
        assert restored is not None and elapsed <= 2.5, f"{elapsed:.2f}s\n{gw.new_log()}"
        assert not nft.diff(plan, lab.ns("gw")).changed
        if slipped:
            break
    assert slipped, "no connection got past the flushed table in three tries"
    agent = re.escape(lab.lab.agent_v4)
    assert gw.wait_log(rf"alert bypass: .* from {agent}", timeout=2.0), gw.new_log()
    through_gateway(lab, gw, "v4")  # and the path is intercepted again
    # Each alert is a ledger record too (and so an event for the console), not only a
    # log line: they were only logged.
    deadline = time.monotonic() + 5
    while True:
        alerts = ledger_records(gw.workdir / "ledger.db", "--kind", "alert")
        kinds = {r["alert"] for r in alerts}
        if {"bypass", "rules_changed", "rules_restored"} <= kinds or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    bypass = [r for r in alerts if r["alert"] == "bypass" and r["src"] == lab.lab.agent_v4]
    assert bypass, alerts
    assert bypass[0]["dst"] == lab.lab.db_v4 and bypass[0]["target"] == "orders"
    assert "did not pass the gateway" in bypass[0]["reason"]
    changed = next(r for r in alerts if r["alert"] == "rules_changed")
    assert "table inet sqlgate is gone" in changed["reason"]
