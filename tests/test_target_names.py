"""Targets given by host name are followed when their name moves (a DNS failover).

The unit tests drive ``TargetNames`` with a resolver and a clock of their own; the lab
test runs the gateway in the gateway namespace with ``/etc/netns/<ns>/hosts`` (which
``ip netns exec`` puts over ``/etc/hosts`` for the gateway alone) naming the target,
then moves the name to the database's address while the gateway runs.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest
from lab.clients import ledger_records
from lab.topology import DB_PORT, LabEnv, LabGateway

from appliance.config import ConfigError, load_config
from appliance.target_names import Move, TargetNames
from netconfig import nft

HOST = "orders-db.sqlgate.test"


# --------------------------------------------------------------------------------------
# TargetNames, without I/O


class Resolver:
    """Answers set by the test; an ``OSError`` when the name is set to ``None``."""

    def __init__(self, answers: dict[str, Sequence[str] | None]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, host: str) -> Sequence[str]:
        self.asked.append(host)
        found = self.answers.get(host)
        if found is None:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return found


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _config(tmp_path: Path, *hosts: str, extra: str = "") -> Path:
    key = tmp_path / "ledger.key"
    key.write_text("unused")
    (tmp_path / "db.pw").write_text("secret\n")
    targets = "".join(
        f'[[targets]]\nname = "t{i}"\nhost = "{host}"\nport = 3306\nuser = "sqlgate"\n'
        'password_file = "db.pw"\n\n'
        for i, host in enumerate(hosts)
    )
    path = tmp_path / "sqlgate.toml"
    path.write_text(
        f'[appliance]\nname = "gw"\nlisten = "127.0.0.1:3307"\ndefault_target = "t0"\n\n'
        f'{targets}[ledger]\npath = "ledger.db"\nsigning_key = "ledger.key"\n\n{extra}'
    )
    return path


def _names(tmp_path: Path, resolver: Resolver, clock: Clock, *hosts: str) -> TargetNames:
    config = load_config(_config(tmp_path, *hosts))
    return TargetNames(config, lookup=resolver, keep_s=600, clock=clock)


def test_a_name_that_moves_is_known_by_both_addresses_until_the_old_one_expires(
    tmp_path: Path,
) -> None:
    resolver = Resolver({"db.example": ["10.0.0.5"]})
    clock = Clock()
    names = _names(tmp_path, resolver, clock, "db.example", "10.0.0.9")
    assert names.named
    assert names.pairs() == [(("10.0.0.5", 3306), "t0"), (("10.0.0.9", 3306), "t1")]

    resolver.answers["db.example"] = ["10.0.0.6"]
    clock.now += 30
    assert names.refresh() == [Move("t0", "db.example", ("10.0.0.6",), ("10.0.0.6",), ())]
    assert names.addresses("db.example") == ["10.0.0.5", "10.0.0.6"]  # clients' caches

    clock.now += 30
    assert names.refresh() == []  # nothing new, nothing expired
    clock.now += 600
    assert names.refresh() == [Move("t0", "db.example", ("10.0.0.6",), (), ("10.0.0.5",))]
    assert names.addresses("db.example") == ["10.0.0.6"]
    assert names.pairs() == [(("10.0.0.6", 3306), "t0"), (("10.0.0.9", 3306), "t1")]
    # literals are never looked up
    assert set(resolver.asked) == {"db.example"}
    assert names.addresses("10.0.0.9") == ["10.0.0.9"]


def test_round_robin_subsets_keep_every_address_they_return(tmp_path: Path) -> None:
    resolver = Resolver({"db.example": ["10.0.0.1", "10.0.0.2"]})
    clock = Clock()
    names = _names(tmp_path, resolver, clock, "db.example")
    for answer in (["10.0.0.2", "10.0.0.3"], ["10.0.0.1", "10.0.0.3"], ["10.0.0.2"]):
        resolver.answers["db.example"] = answer
        clock.now += 30
        names.refresh()
    assert names.addresses("db.example") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_a_name_that_stops_resolving_keeps_its_addresses_and_says_why(tmp_path: Path) -> None:
    resolver = Resolver({"db.example": ["10.0.0.5"]})
    clock = Clock()
    names = _names(tmp_path, resolver, clock, "db.example")
    resolver.answers["db.example"] = None
    clock.now += 30
    assert names.refresh() == []
    assert names.addresses("db.example") == ["10.0.0.5"]  # a DNS outage takes nothing away
    assert "Name or service not known" in names.failures["db.example"]
    clock.now += 601  # ... until the addresses are old enough to be let go
    assert names.refresh() == [Move("t0", "db.example", (), (), ("10.0.0.5",))]
    with pytest.raises(LookupError, match="Name or service not known"):
        names.addresses("db.example")
    resolver.answers["db.example"] = ["10.0.0.7"]
    clock.now += 30
    assert names.refresh() == [Move("t0", "db.example", ("10.0.0.7",), ("10.0.0.7",), ())]
    assert names.failures == {}


def test_a_name_unknown_at_start_is_routed_once_it_resolves(tmp_path: Path) -> None:
    resolver = Resolver({})
    clock = Clock()
    names = _names(tmp_path, resolver, clock, "db.example")
    assert names.pairs() == []
    assert "db.example" in names.failures
    resolver.answers["db.example"] = ["10.0.0.5"]
    assert names.refresh()[0].added == ("10.0.0.5",)
    assert names.pairs() == [(("10.0.0.5", 3306), "t0")]


def test_resolve_interval_is_read_and_bounded(tmp_path: Path) -> None:
    plain = load_config(_config(tmp_path, "10.0.0.1"))
    assert plain.network.resolve_interval_s == 30.0
    config = _config(tmp_path, "10.0.0.1", extra="[network]\nresolve_interval_s = 2.5\n")
    assert load_config(config).network.resolve_interval_s == 2.5
    config = _config(tmp_path, "10.0.0.1", extra="[network]\nresolve_interval_s = 0\n")
    with pytest.raises(ConfigError, match="resolve_interval_s"):
        load_config(config)


# --------------------------------------------------------------------------------------
# in the lab: the gateway's rules and routing follow the name


@dataclass
class NamedTargetGateway(LabGateway):
    """The lab's gateway with its IPv4 target given by ``HOST``, looked up every 0.5 s."""

    def write_config(self) -> Path:
        path = super().write_config()
        text = path.read_text()
        text = text.replace(f'host = "{self.lab.db_v4}"', f'host = "{HOST}"', 1)
        text = text.replace("[network]\n", "[network]\nresolve_interval_s = 0.5\n", 1)
        path.write_text(text)
        return path


@pytest.fixture
def hosts_file(lab: LabEnv) -> Iterator[Path]:
    """The gateway namespace's own hosts file (``ip netns exec`` mounts it over
    /etc/hosts for what it runs); written in place, so the mount sees every change."""
    folder = Path("/etc/netns") / lab.ns("gw")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hosts"
    path.write_text("127.0.0.1 localhost\n")
    try:
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _set_hosts(path: Path, address: str) -> None:
    with path.open("r+") as f:  # the same file: the bind mount keeps its inode
        f.truncate(0)
        f.write(f"127.0.0.1 localhost\n{address} {HOST}\n")


def _through_gateway(lab: LabEnv, address: str) -> str | None:
    """The server version the agent gets dialling ``address`` as the gateway account
    ``agent``, or None when that login is refused (no gateway in the way: MariaDB itself
    has no such user)."""
    try:
        conn = lab.connect("agent", address, DB_PORT, "agent", "agent-secret-1", timeout=3)
    except pymysql.err.OperationalError:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchall() == ((1,),)
        return str(conn.get_server_info())
    finally:
        conn.close()


@pytest.mark.integration
def test_the_rules_and_routing_follow_a_target_name_that_moves(
    lab: LabEnv, hosts_file: Path, tmp_path: Path
) -> None:
    """Before, the name was looked up once at start: after a failover moved it, agents
    dialling the new address reached the database without passing the gateway."""
    db = lab.lab.db_v4
    stale = db.rsplit(".", 1)[0] + ".99"  # where the name pointed before the failover
    _set_hosts(hosts_file, stale)
    gw = NamedTargetGateway(
        tmp_path / "gateway",
        lab.lab,
        backend_user=lab.db.native_user,
        backend_password=lab.db.native_password,
        pki=lab.pki,
    )
    try:
        gw.start()
        tags = {rule.tag for rule in nft.status(lab.ns("gw"))}
        assert "sqlgate:redirect:orders" in tags
        # the database's own address is not the target's yet: the drop of the target's
        # port at every address keeps it closed until the name moves there (before, the
        # connection was forwarded and MariaDB answered it, around the gateway)
        assert not lab.can_connect("agent", db, DB_PORT)
        assert _through_gateway(lab, db) is None

        _set_hosts(hosts_file, db)
        deadline = time.monotonic() + 20
        version = None
        while version is None and time.monotonic() < deadline:
            version = _through_gateway(lab, db)
            time.sleep(0.2)
        assert version is not None and "-sqlgate" in version, gw.log()
        tags = {rule.tag for rule in nft.status(lab.ns("gw"))}
        # both: clients that still dial the old address are carried to the target too
        assert {f"sqlgate:redirect:orders/{db}", f"sqlgate:redirect:orders/{stale}"} <= tags
        assert f"sqlgate:bypass-drop:orders/{db}" in tags
        moved = [
            r
            for r in ledger_records(gw.workdir / "ledger.db", "--kind", "alert")
            if r["alert"] == "target_moved"
        ]
        assert len(moved) == 1, moved
        assert moved[0]["target"] == "orders" and moved[0]["host"] == HOST
        assert moved[0]["addresses"] == [db] and moved[0]["added"] == [db]
        assert gw.wait_log(r"interception rules follow the targets", 5, since_mark=False)
        assert gw.wait_log(r"bypass sentinel watching", 5, since_mark=False)
    finally:
        code = gw.stop()
        nft.remove(lab.ns("gw"))
    assert code == 0, gw.log()
    assert "Traceback" not in gw.log()
