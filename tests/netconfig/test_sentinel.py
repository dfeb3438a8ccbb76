"""netconfig.sentinel and netconfig.routes: the bypass sentinel and rule watchdog, live.

Every live test builds the three-namespace lab (client -> gateway -> db) from conftest,
applies the plan in the gateway's namespace and runs the sentinel there; nothing touches
the host's ruleset or addresses. Alerts are collected by a thread-safe list and awaited
with deadlines, never with fixed sleeps.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import Lab, MakeConfig, listener, ns_run, ns_socket

from netconfig import nft
from netconfig.nft import ApplyReport
from netconfig.plan import Plan, plan_rules
from netconfig.routes import RouteError, interfaces_toward, links, local_addresses
from netconfig.sentinel import Alert, Sentinel, SentinelError, describe_drift, syn_filter

MARK = 0x5147
INTERVAL = 0.1  # the watchdog's pass interval in tests that do not measure the default


class Alerts:
    """``on_alert`` for tests: a list guarded by a condition, with deadline waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: list[Alert] = []
        self.threads: set[str] = set()

    def __call__(self, alert: Alert) -> None:
        with self._cond:
            self._items.append(alert)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def all(self, kind: str | None = None) -> list[Alert]:
        with self._cond:
            return [a for a in self._items if kind is None or a.kind == kind]

    def wait(
        self, kind: str, where: Callable[[Alert], bool] = lambda a: True, timeout: float = 5.0
    ) -> Alert:
        """The first alert of ``kind`` that satisfies ``where``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for alert in self._items:
                    if alert.kind == kind and where(alert):
                        return alert
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(a.kind, a.message) for a in self._items]
                    pytest.fail(f"no {kind} alert within {timeout}s; alerts: {seen}")
                self._cond.wait(remaining)


Start = Callable[..., tuple[Sentinel, Alerts]]


@pytest.fixture
def plan(lab: Lab, make_config: MakeConfig) -> Plan:
    """Two targets on the db (IPv4 and IPv6), the rules applied in the gateway."""
    built = plan_rules(make_config([("orders", lab.db_v4), ("orders6", lab.db_v6)], mark=MARK))
    nft.apply(built, netns=lab.gateway)
    return built


@pytest.fixture
def db_listeners(lab: Lab) -> Iterator[list[socket.socket]]:
    """The database: TCP listeners on both target addresses (the kernel completes the
    handshakes; nothing needs to be accepted)."""
    socks = [listener(lab.db, lab.db_v4, 3306), listener(lab.db, lab.db_v6, 3306)]
    yield socks
    for sock in socks:
        sock.close()


@pytest.fixture
def start_sentinel(lab: Lab, plan: Plan) -> Iterator[Start]:
    """``start_sentinel(**kwargs)``: a started Sentinel in the gateway and its alerts;
    stopped at teardown, before the namespaces go."""
    started: list[Sentinel] = []

    def start(**kwargs: object) -> tuple[Sentinel, Alerts]:
        alerts = Alerts()
        options: dict[str, object] = {"netns": lab.gateway, "interval_s": INTERVAL}
        options["on_alert"] = alerts
        options.update(kwargs)
        sentinel = Sentinel(plan, **options)  # type: ignore[arg-type]
        sentinel.start()
        started.append(sentinel)
        return sentinel, alerts

    yield start
    for sentinel in started:
        sentinel.stop()


def connect(ns: str, address: str, port: int = 3306, mark: int | None = None) -> socket.socket:
    """A TCP connection from namespace ``ns``; raises if it is not established."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = ns_socket(ns, family)
    if mark is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    sock.settimeout(3)
    sock.connect((address, port))
    return sock


def source_is(address: str) -> Callable[[Alert], bool]:
    return lambda alert: alert.details.get("src") == address


# --- pure parts ---------------------------------------------------------------------------


def test_syn_filter_jumps_stay_inside_the_program() -> None:
    for ports in ([3306], [3306, 3307, 5432], list(range(1000, 1064)), list(range(1000, 1100))):
        program = syn_filter(ports)
        assert program[-2] == (0x06, 0, 0, 0x40000)  # accept
        assert program[-1] == (0x06, 0, 0, 0)  # reject
        for index, (code, jt, jf, _) in enumerate(program):
            if code & 0x07 == 0x05:  # a jump
                assert 0 <= jt < 256 and 0 <= jf < 256
                assert index + 1 + max(jt, jf) < len(program)
    # Past 64 ports the program stops checking ports (Python still does).
    assert len(syn_filter(range(1000, 1100))) < len(syn_filter(range(1000, 1064)))


def test_drift_descriptions_name_what_is_missing_extra_and_changed() -> None:
    gone = ApplyReport(
        added=("sqlgate:exempt", "sqlgate:bypass-drop:orders"),
        created=("table inet sqlgate", "chain output", "chain forward"),
    )
    message, details = describe_drift(gone, restoring=True)
    assert message == (
        "the gateway's rules changed behind its back: table inet sqlgate is gone "
        "(2 chains missing, 2 rules missing); restoring them"
    )
    assert details["missing"] == "sqlgate:exempt, sqlgate:bypass-drop:orders"
    assert details["chains_missing"] == "output, forward"

    edited = ApplyReport(
        added=("sqlgate:redirect:orders", "sqlgate:exempt"),
        removed=("sqlgate:redirect:orders", "(untagged rule 9 in forward)"),
    )
    message, details = describe_drift(edited, restoring=False)
    assert message == (
        "the gateway's rules changed behind its back: table inet sqlgate was changed "
        "(1 rule missing, 1 rule extra, 1 rule changed); run 'sqlgate net apply' to put "
        "them back"
    )
    assert details["missing"] == "sqlgate:exempt"
    assert details["extra"] == "(untagged rule 9 in forward)"
    assert details["changed"] == "sqlgate:redirect:orders"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        Sentinel(Plan("sqlgate", "inet", (), ()), on_alert=print, interval_s=0)


# --- routes -------------------------------------------------------------------------------


def test_routes_answer_from_the_named_namespace(lab: Lab) -> None:
    hosts = [lab.db_v4, lab.db_v6, lab.client_v4, lab.db_v4]
    assert interfaces_toward(hosts, lab.gateway) == [lab.gw_to_db, lab.gw_to_client]
    assert interfaces_toward([lab.db_v6], lab.client) == ["c0"]
    own = local_addresses(lab.gateway)
    assert {lab.gw_db_v4, lab.gw_db_v6, lab.gw_client_v4, lab.gw_client_v6, "127.0.0.1"} <= own
    assert lab.db_v4 not in own
    assert local_addresses(lab.db) >= {lab.db_v4, lab.db_v6}
    (link,) = links([lab.gw_to_db], lab.gateway)
    assert (link.name, link.type, link.up) == (lab.gw_to_db, 1, True)


def test_routes_fail_with_one_line(lab: Lab) -> None:
    ns_run(lab.db, "ip", "route", "del", "default")
    with pytest.raises(RouteError, match=r"^no route to 10\.78\.1\.10 in network namespace"):
        interfaces_toward([lab.client_v4], lab.db)
    with pytest.raises(RouteError, match="'db.example' is not an IP address"):
        interfaces_toward(["db.example"], lab.gateway)
    with pytest.raises(RouteError, match="interface 'eth9' does not exist"):
        links(["eth9"], lab.gateway)
    with pytest.raises(RouteError, match="network namespace 'sqlgate-t-none'"):
        local_addresses("sqlgate-t-none")


# --- the sentinel, live -------------------------------------------------------------------


@pytest.mark.usefixtures("db_listeners")
def test_proxy_upstream_is_not_a_bypass_but_a_routed_client_is(
    lab: Lab, start_sentinel: Start
) -> None:
    sentinel, alerts = start_sentinel(restore=False)
    assert sentinel.interfaces == (lab.gw_to_db,)  # found from the routing table

    # (a) The proxy's own upstream: from the gateway, with the exempt mark, to the db.
    for address in (lab.db_v4, lab.db_v6):
        connect(lab.gateway, address, mark=MARK).close()

    # With the rules in place a client cannot get past: redirected to the (absent) proxy.
    with pytest.raises(ConnectionRefusedError):
        connect(lab.client, lab.db_v4)

    # (c) The table is removed behind the gateway's back; nothing puts it back.
    assert nft.remove(netns=lab.gateway)
    changed = alerts.wait("rules_changed", timeout=2.0)
    assert "table inet sqlgate is gone" in changed.message
    assert "run 'sqlgate net apply'" in changed.message

    # Now a client's connection passes by plain routing, and is reported.
    client4 = connect(lab.client, lab.db_v4)
    client6 = connect(lab.client, lab.db_v6)
    v4 = alerts.wait("bypass", source_is(lab.client_v4))
    v6 = alerts.wait("bypass", source_is(lab.client_v6))
    client_port = str(client4.getsockname()[1])
    client4.close()
    client6.close()
    assert v4.message == (
        f"connection to {lab.db_v4}:3306 from {lab.client_v4} did not pass the gateway "
        f"(seen on {lab.gw_to_db})"
    )
    assert dict(v4.details) == {
        "src": lab.client_v4,
        "sport": client_port,
        "dst": lab.db_v4,
        "dport": "3306",
        "target": "orders",
        "interface": lab.gw_to_db,
        "netns": lab.gateway,
    }
    assert v6.message.startswith(f"connection to [{lab.db_v6}]:3306 from {lab.client_v6} ")
    assert v6.details["target"] == "orders6"

    # The upstream connections from (a) came earlier on the same capture: never reported.
    bypasses = alerts.all("bypass")
    assert [a.details["src"] for a in bypasses] == [lab.client_v4, lab.client_v6]
    # One alert per drift, however many passes saw it; and nothing restored it.
    deadline = time.monotonic() + 5 * INTERVAL
    while time.monotonic() < deadline:
        time.sleep(INTERVAL)
    assert len(alerts.all("rules_changed")) == 1
    assert alerts.all("rules_restored") == [] and alerts.all("sentinel_error") == []
    assert nft.live_table(lab.gateway) is None
    for alert in alerts.all():
        assert alert.ts.endswith("Z") and "T" in alert.ts
    assert alerts.threads <= {"sqlgate-sentinel-watchdog", "AsyncSniffer"}


def test_a_syn_to_a_target_port_at_another_address_is_a_bypass(
    lab: Lab, make_config: MakeConfig, start_sentinel: Start
) -> None:
    # The targets name the db's two addresses; it also answers on a third. With the
    # rules gone, a client that dials that one is a bypass as much as one that dials a
    # target's own address: it was not reported.
    ns_run(lab.db, "ip", "addr", "add", "10.78.2.11/24", "dev", "d0")
    other = listener(lab.db, "10.78.2.11", 3306)
    _, alerts = start_sentinel(restore=False)
    assert nft.remove(netns=lab.gateway)
    alerts.wait("rules_changed", timeout=2.0)
    connect(lab.client, "10.78.2.11").close()
    alert = alerts.wait("bypass", source_is(lab.client_v4))
    assert alert.details["dst"] == "10.78.2.11" and alert.details["dport"] == "3306"
    assert alert.details["target"] == "orders, orders6"
    other.close()


@pytest.mark.usefixtures("db_listeners")
def test_flushed_table_is_noticed_and_restored_within_two_seconds(
    lab: Lab, plan: Plan, start_sentinel: Start
) -> None:
    sentinel, alerts = start_sentinel(interval_s=0.5)  # the default interval

    # (b) Flushed behind its back: alert and rules back within 2 s.
    removed_at = time.monotonic()
    assert nft.remove(netns=lab.gateway)
    changed = alerts.wait("rules_changed", timeout=2.0)
    restored = alerts.wait("rules_restored", timeout=2.0 - (time.monotonic() - removed_at))
    assert time.monotonic() - removed_at < 2.0
    assert changed.message.endswith("; restoring them")
    assert set(changed.details["missing"].split(", ")) == set(plan.tags)
    assert restored.message == (
        f"the gateway's rules are back in table inet sqlgate ({len(plan.tags)} added, 0 removed)"
    )
    assert not nft.diff(plan, lab.gateway).changed
    # Back in force: a client is intercepted again, not routed to the db.
    with pytest.raises(ConnectionRefusedError):
        connect(lab.client, lab.db_v4)

    # A rule slipped in by someone else is a new drift: reported, and taken out again.
    ns_run(
        lab.gateway,
        "nft",
        "add",
        "rule",
        "inet",
        "sqlgate",
        "forward",
        "tcp",
        "dport",
        "22",
        "accept",
    )
    extra = alerts.wait("rules_changed", lambda a: "extra" in a.details, timeout=2.0)
    assert extra.message.startswith(
        "the gateway's rules changed behind its back: table inet sqlgate was changed (1 rule extra)"
    )
    alerts.wait("rules_restored", lambda a: a.details["removed"] != "", timeout=2.0)
    assert not nft.diff(plan, lab.gateway).changed

    # check_rules directly: nothing to report while in sync.
    assert sentinel.check_rules() is None
    assert alerts.all("bypass") == [] and alerts.all("sentinel_error") == []


def test_check_rules_without_threads(lab: Lab, plan: Plan) -> None:
    alerts = Alerts()
    sentinel = Sentinel(plan, on_alert=alerts, netns=lab.gateway, restore=False)
    assert sentinel.check_rules() is None
    nft.remove(netns=lab.gateway)
    first = sentinel.check_rules()
    assert first is not None and first.kind == "rules_changed"
    assert sentinel.check_rules() is None  # the same drift again: already reported
    assert nft.live_table(lab.gateway) is None
    sentinel.restore = True
    assert sentinel.check_rules() is None  # still the same drift; but now put back
    assert [a.kind for a in alerts.all()] == ["rules_changed", "rules_restored"]
    assert not nft.diff(plan, lab.gateway).changed
    sentinel.stop()  # never started: nothing to do


def test_a_dormant_table_is_a_drift_and_is_put_back_in_force(lab: Lab, plan: Plan) -> None:
    # A dormant table lists every rule but unhooks its chains: nothing is intercepted.
    # The watchdog saw no drift in it, so it never restored the rules.
    alerts = Alerts()
    sentinel = Sentinel(plan, on_alert=alerts, netns=lab.gateway)
    assert sentinel.check_rules() is None
    ns_run(lab.gateway, "nft", "add table inet sqlgate { flags dormant; }")
    changed = sentinel.check_rules()
    assert changed is not None and changed.kind == "rules_changed"
    assert changed.message == (
        "the gateway's rules changed behind its back: table inet sqlgate was switched off "
        "(flags dormant: its rules saw no packet); restoring them"
    )
    assert changed.details["flags"] == "0x1"
    assert [a.kind for a in alerts.all()] == ["rules_changed", "rules_restored"]
    live = nft.live_table(lab.gateway)
    assert live is not None and not live.dormant
    assert not nft.diff(plan, lab.gateway).changed
    sentinel.stop()


def test_an_unchanged_ruleset_is_not_read_again(
    lab: Lab, plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every pass dumped and decoded the whole table and compared it with the plan: with
    # fifty targets a pass cost about half a second of CPU, every half second, in the
    # gateway's process. Now a pass reads only the ruleset generation until it changes.
    reads: list[str | None] = []
    real = nft.live_table

    def counted(netns: str | None = None) -> nft.LiveTable | None:
        reads.append(netns)
        return real(netns)

    monkeypatch.setattr(nft, "live_table", counted)
    sentinel = Sentinel(plan, on_alert=Alerts(), netns=lab.gateway, restore=False)
    assert sentinel.check_rules() is None
    assert sentinel.check_rules() is None
    assert sentinel.check_rules() is None
    assert len(reads) == 1  # nothing was committed since: the table was not read again

    ns_run(lab.gateway, "nft", "add table inet someone_else")  # any commit at all
    assert sentinel.check_rules() is None
    assert len(reads) == 2
    assert sentinel.check_rules() is None
    assert len(reads) == 2

    ns_run(lab.gateway, "nft", "add table inet sqlgate { flags dormant; }")
    changed = sentinel.check_rules()
    assert changed is not None and changed.kind == "rules_changed"
    nft.apply(plan, netns=lab.gateway)
    assert sentinel.check_rules() is None  # in place again: one more full read
    assert sentinel.check_rules() is None
    assert len(reads) == 4
    sentinel.stop()


@pytest.mark.usefixtures("db_listeners")
def test_failures_are_alerts_and_the_threads_go_on(
    lab: Lab, plan: Plan, start_sentinel: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = threading.Event()
    failing.set()
    real_diff = nft.diff

    def diff(plan: Plan, netns: str | None = None) -> ApplyReport:
        if failing.is_set():
            raise nft.NftError("netlink: boom")
        return real_diff(plan, netns)

    monkeypatch.setattr(nft, "diff", diff)
    sentinel, alerts = start_sentinel(restore=True)
    error = alerts.wait("sentinel_error", timeout=2.0)
    assert error.message == (
        "bypass sentinel: watching the gateway's rules: netlink: boom; still watching"
    )
    assert error.details["source"] == "rules"
    deadline = time.monotonic() + 5 * INTERVAL
    while time.monotonic() < deadline:
        time.sleep(INTERVAL)
    assert len(alerts.all("sentinel_error")) == 1  # once while it stands, not every pass
    failing.clear()

    # The watchdog is still there: a flush is noticed and repaired.
    nft.remove(netns=lab.gateway)
    alerts.wait("rules_restored", timeout=2.0)

    # The capture dies under it (the interface goes down): reported and reopened.
    ns_run(lab.gateway, "ip", "link", "set", lab.gw_to_db, "down")
    ns_run(lab.gateway, "ip", "link", "set", lab.gw_to_db, "up")
    restarted = alerts.wait("sentinel_error", lambda a: a.details["source"] == "capture")
    assert restarted.message == (
        f"bypass sentinel: capture on {lab.gw_to_db} failed; the capture was restarted"
    )
    # ... and still sees a bypass (IPv4: the link flap took the IPv6 addresses away).
    sentinel.restore = False
    nft.remove(netns=lab.gateway)
    alerts.wait("rules_changed", lambda a: a.ts > restarted.ts, timeout=2.0)
    connect(lab.client, lab.db_v4).close()
    alerts.wait("bypass", source_is(lab.client_v4))


def test_an_on_alert_that_raises_does_not_stop_the_sentinel(
    lab: Lab, plan: Plan, start_sentinel: Start
) -> None:
    alerts = Alerts()
    calls: list[str] = []

    def flaky(alert: Alert) -> None:
        calls.append(alert.kind)
        if len(calls) == 1:
            raise RuntimeError("the consumer broke")
        alerts(alert)

    start_sentinel(on_alert=flaky)
    nft.remove(netns=lab.gateway)  # rules_changed goes to the broken consumer
    alerts.wait("rules_restored", timeout=2.0)
    nft.remove(netns=lab.gateway)
    alerts.wait("rules_changed", timeout=2.0)
    assert calls[:2] == ["rules_changed", "rules_restored"]


def test_stop_is_clean_and_idempotent(lab: Lab, plan: Plan) -> None:
    before = set(threading.enumerate())
    alerts = Alerts()
    sentinel = Sentinel(plan, on_alert=alerts, netns=lab.gateway, interval_s=INTERVAL)
    sentinel.stop()  # before start: nothing to stop
    sentinel = Sentinel(plan, on_alert=alerts, netns=lab.gateway, interval_s=INTERVAL)
    sentinel.start()
    ours = set(threading.enumerate()) - before
    assert {t.name for t in ours} == {"sqlgate-sentinel-watchdog", "AsyncSniffer"}
    with pytest.raises(RuntimeError, match="started once"):
        sentinel.start()
    began = time.monotonic()
    sentinel.stop()
    sentinel.stop()
    assert time.monotonic() - began < 2.0
    assert not any(t.is_alive() for t in ours)
    assert alerts.all() == []
    # Stopped means stopped: a flush now stays flushed.
    nft.remove(netns=lab.gateway)
    time.sleep(3 * INTERVAL)
    assert alerts.all() == [] and nft.live_table(lab.gateway) is None


def test_start_fails_with_one_line(lab: Lab, plan: Plan) -> None:
    def attempt(**kwargs: object) -> str:
        sentinel = Sentinel(plan, on_alert=print, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(SentinelError) as caught:
            sentinel.start()
        sentinel.stop()
        return str(caught.value)

    assert attempt(netns=lab.gateway, interfaces=["eth9"]) == (
        f"bypass sentinel: interface 'eth9' does not exist in network namespace '{lab.gateway}'"
    )
    ns_run(lab.gateway, "ip", "route", "flush", "dev", lab.gw_to_db)
    ns_run(lab.gateway, "ip", "-6", "route", "flush", "dev", lab.gw_to_db)
    assert attempt(netns=lab.gateway).startswith(
        f"bypass sentinel: no route to {lab.db_v4} in network namespace '{lab.gateway}'"
    )
    assert attempt(netns="sqlgate-t-none", interfaces=["lo"]) == (
        "bypass sentinel: network namespace 'sqlgate-t-none': No such file or directory"
    )
    names = {t.name for t in threading.enumerate()}
    assert not names & {"sqlgate-sentinel-watchdog", "AsyncSniffer"}


@pytest.mark.usefixtures("db_listeners")
@pytest.mark.usefixtures("db_listeners")
def test_a_redirected_syn_coming_in_is_not_a_bypass(
    lab: Lab, plan: Plan, start_sentinel: Start
) -> None:
    """On an interface that also faces the clients (a gateway with one interface), every
    client's SYN comes in before the redirect: only SYNs leaving toward a database count
    (each intercepted connection was reported as a bypass)."""
    port = next(r.to_port for r in plan.rules if r.to_port)
    proxy = listener(lab.gateway, "0.0.0.0", port)
    try:
        _, alerts = start_sentinel(interfaces=[lab.gw_to_client, lab.gw_to_db], restore=False)
        connect(lab.client, lab.db_v4).close()  # redirected: the proxy's listener answers
        time.sleep(10 * INTERVAL)
        assert alerts.all("bypass") == []
        nft.remove(netns=lab.gateway)  # now one passes by plain routing, and is reported
        alerts.wait("rules_changed", timeout=2.0)
        connect(lab.client, lab.db_v4).close()
        bypass = alerts.wait("bypass", source_is(lab.client_v4))
        assert bypass.details["interface"] == lab.gw_to_db
    finally:
        proxy.close()


@pytest.mark.usefixtures("db_listeners")
def test_interfaces_can_be_given(lab: Lab, start_sentinel: Start) -> None:
    sentinel, alerts = start_sentinel(interfaces=[lab.gw_to_db], restore=False)
    assert sentinel.interfaces == (lab.gw_to_db,)
    nft.remove(netns=lab.gateway)
    alerts.wait("rules_changed", timeout=2.0)
    connect(lab.client, lab.db_v6).close()
    alert = alerts.wait("bypass", source_is(lab.client_v6))
    assert alert.details["interface"] == lab.gw_to_db
    assert ipaddress.ip_address(alert.details["dst"]) == ipaddress.ip_address(lab.db_v6)
