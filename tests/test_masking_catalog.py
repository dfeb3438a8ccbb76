"""A view made through the gateway is masked from the moment it exists (docs/masking.md,
"Limits"): the statement that creates, alters, renames or drops a view makes its target's
views stale as it goes, and a masked session's next statement waits until the catalog has
read them again, or is refused (fail closed). Sessions without a masker never wait.

The catalog's reads of the views can be held from the test: the real gateway process
gets a sitecustomize module that makes them wait while a file exists."""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from lab.clients import ledger_records
from lab.gateway import GatewayAccount, GatewayProcess
from lab.mariadb import MariaDB

pytestmark = pytest.mark.integration

CARD = "4111111111111111"
LAST4 = "************1111"
MASKING = """
[[masking]]
column = "shop.mcat_cust.card"
strategy = "last4"
exempt_groups = ["pii-readers"]

[[masking]]
column = "shop.mcat_cust.email"
strategy = "redact"
exempt_groups = ["mail-readers"]
"""
HOLD = """
import os
import time

import appliance.catalog as catalog

_read = catalog._load


def _held_load(*args):
    held = os.environ["MCAT_HOLD"]
    if os.path.exists(held):
        with open(held + ".reading", "w"):
            pass
        while os.path.exists(held):
            time.sleep(0.02)
    return _read(*args)


catalog._load = _held_load
"""
REFUSED = (
    "has not read the target's views again within 6 s, so it cannot tell which columns of "
    "this statement's results to mask"
)


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """While this file exists, the catalog's reads wait (and leave ``<file>.reading``)."""
    return tmp_path_factory.mktemp("hold") / "hold"


@pytest.fixture(scope="module")
def gw(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory, held: Path
) -> Iterator[GatewayProcess]:
    mariadb.admin_sql(
        "CREATE OR REPLACE TABLE shop.mcat_cust (id INT PRIMARY KEY, card VARCHAR(19), "
        "email VARCHAR(60), name VARCHAR(20))",
        f"INSERT INTO shop.mcat_cust VALUES (1, '{CARD}', 'ann@example.com', 'Ann')",
    )
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(textwrap.dedent(HOLD))
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    accounts = [
        GatewayAccount("agent", "agent-secret-1"),  # masked: card and email
        GatewayAccount("clerk", "clerk-secret-5", ("agents", "pii-readers")),  # email
        # exempt from every rule: no masker
        GatewayAccount("auditor", "auditor-secret-4", ("agents", "pii-readers", "mail-readers")),
    ]
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gw"),
        mariadb,
        mariadb.pki,
        accounts=accounts,
        extra_toml=MASKING,
        env={"PYTHONPATH": path, "MCAT_HOLD": str(held)},
    )
    gw.start()
    yield gw
    held.unlink(missing_ok=True)
    assert gw.stop() == 0
    log = gw.log()
    assert "Traceback" not in log and CARD not in log


def run(conn: Any, sql: str) -> list[tuple[object, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()]


def view(name: str) -> str:
    return f"CREATE VIEW shop.{name} AS SELECT id, card AS x, name FROM shop.mcat_cust"


@pytest.mark.parametrize("maker", ["auditor", "clerk"])
def test_a_view_made_through_the_gateway_is_masked_at_once(gw: GatewayProcess, maker: str) -> None:
    """Right after the CREATE VIEW is answered, a masked session reads the new view: the
    catalog read it again only a while after (in the background), and until then the
    card came in the clear. The maker itself (with or without a masker, exempt from the
    card rule) gets its real values, without waiting on its own statement."""
    creator = gw.connect(user=maker, database="shop")
    reader = gw.connect(user="agent", database="shop")
    try:
        for i in range(20):
            name = f"mcat_{maker}_{i}"
            run(creator, view(name))
            assert run(reader, f"SELECT x FROM {name} WHERE id = 1") == [(LAST4,)], i
            assert run(creator, f"SELECT x FROM {name} WHERE id = 1") == [(CARD,)], i
    finally:
        creator.close()
        reader.close()


def test_a_view_made_inside_a_masked_sessions_transaction_does_not_hold_it(
    gw: GatewayProcess,
) -> None:
    """CREATE VIEW commits the transaction first (an implicit commit), so the catalog's
    read on its own connection waits for no lock of the session's own."""
    clerk = gw.connect(user="clerk", database="shop")
    reader = gw.connect(user="agent", database="shop")
    try:
        run(clerk, "BEGIN")
        assert run(clerk, "SELECT id FROM mcat_cust WHERE id = 1 FOR UPDATE") == [(1,)]
        run(clerk, view("mcat_in_tx"))
        assert run(clerk, "SELECT x, name FROM mcat_in_tx") == [(CARD, "Ann")]
        assert run(reader, "SELECT x, name FROM mcat_in_tx") == [(LAST4, "Ann")]
        run(clerk, "COMMIT")
    finally:
        clerk.close()
        reader.close()


def test_while_the_views_cannot_be_read_masked_sessions_are_refused_others_go_on(
    gw: GatewayProcess, held: Path
) -> None:
    """The catalog's read after the CREATE VIEW is held: the exempt auditor (no masker)
    is answered meanwhile, the masked agent's SELECT waits its bounded time and is
    refused with the reason, which the ledger records; once the read works, the view is
    masked."""
    reading = Path(str(held) + ".reading")
    reading.unlink(missing_ok=True)
    auditor = gw.connect(user="auditor", database="shop")
    agent = gw.connect(user="agent", database="shop", read_timeout=60)
    try:
        held.touch()
        run(auditor, view("mcat_held"))
        deadline = time.monotonic() + 20
        while not reading.exists():  # the catalog's read after it has begun, and waits
            assert time.monotonic() < deadline, "the catalog did not read the views again"
            time.sleep(0.05)
        assert run(auditor, "SELECT x FROM mcat_held WHERE id = 1") == [(CARD,)]
        assert held.exists()  # answered while the views could not be read
        with pytest.raises(pymysql.err.OperationalError) as refused:
            run(agent, "SELECT x FROM mcat_held WHERE id = 1")
        assert refused.value.args[0] == 1227
        assert REFUSED in refused.value.args[1]
        assert "blocked by rule 'masking'" in refused.value.args[1]
        assert run(auditor, "SELECT 1") == [(1,)]
    finally:
        held.unlink(missing_ok=True)
        auditor.close()
    try:
        deadline = time.monotonic() + 30
        while True:  # refused while the views are read again, then masked; never clear
            try:
                rows = run(agent, "SELECT x FROM mcat_held WHERE id = 1")
            except pymysql.err.OperationalError as exc:
                assert exc.args[0] == 1227 and REFUSED in exc.args[1]
                assert time.monotonic() < deadline
                continue
            assert rows == [(LAST4,)]
            break
    finally:
        agent.close()
    deadline = time.monotonic() + 20
    while True:  # the result record says why (written in the background)
        results = ledger_records(gw.ledger, "--kind", "result")
        refusals = [r for r in results if REFUSED in (r.get("reason") or "")]
        if refusals or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert refusals and refusals[0]["identity"] == "agent" and refusals[0]["error"] == 1227


@pytest.mark.usefixtures("gw")  # (its table)
def test_a_view_made_outside_the_gateway_is_masked_within_views_refresh_s(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """The views were read again every minute whatever the operator wanted: a view made
    straight on the database showed the card in the clear for up to 60 s."""
    gw = GatewayProcess(
        tmp_path,
        mariadb,
        mariadb.pki,
        extra_toml=MASKING + "\n[policy]\nviews_refresh_s = 1\n",
    ).start()
    try:
        with gw.connect(database="shop") as agent:
            assert run(agent, "SELECT 1") == [(1,)]  # the first read is done
            mariadb.admin_sql(view("mcat_outside"))
            deadline = time.monotonic() + 15
            rows = run(agent, "SELECT x FROM mcat_outside WHERE id = 1")
            while rows != [(LAST4,)] and time.monotonic() < deadline:
                assert rows == [(CARD,)]
                time.sleep(0.2)
                rows = run(agent, "SELECT x FROM mcat_outside WHERE id = 1")
            assert rows == [(LAST4,)]
    finally:
        mariadb.admin_sql("DROP VIEW IF EXISTS shop.mcat_outside")
        assert gw.stop() == 0


def test_a_view_made_outside_the_gateway_under_the_columns_names_is_masked_at_once(
    gw: GatewayProcess, mariadb: MariaDB
) -> None:
    """A view made straight on the database that keeps the masked column's name showed
    the card in the clear until the next read of the views (up to views_refresh_s, 60 s
    here): MariaDB reports its column as the view's, which no rule names. A column the
    catalog does not know, named like a masked one, is now masked at once; a table the
    catalog read keeps its own rules (none here), and an exempt session sees the card."""
    mariadb.admin_sql(
        "CREATE OR REPLACE TABLE shop.mcat_known (id INT PRIMARY KEY, card VARCHAR(19))",
        "INSERT INTO shop.mcat_known VALUES (1, 'not a card')",
    )
    agent = gw.connect(database="shop")
    clerk = gw.connect(user="clerk", database="shop")
    try:
        run(clerk, "CREATE VIEW mcat_nudge AS SELECT 1 AS one")  # the catalog reads again
        assert run(agent, "SELECT card FROM mcat_known WHERE id = 1") == [("not a card",)]
        mariadb.admin_sql(
            "CREATE VIEW shop.mcat_same AS SELECT id, card, name FROM shop.mcat_cust",
            "CREATE VIEW shop.mcat_other AS SELECT id, card FROM shop.mcat_known",
        )
        sql = "SELECT card, name FROM mcat_same WHERE id = 1"
        assert run(agent, sql) == [(LAST4, "Ann")]
        assert run(clerk, sql) == [(CARD, "Ann")]
        # a view of a table no rule names, made since: masked too until the catalog reads it
        assert run(agent, "SELECT card FROM mcat_other WHERE id = 1") == [("******card",)]
    finally:
        agent.close()
        clerk.close()
        mariadb.admin_sql(
            "DROP VIEW IF EXISTS shop.mcat_same, shop.mcat_other, shop.mcat_nudge",
            "DROP TABLE IF EXISTS shop.mcat_known",
        )


def test_the_catalog_knows_every_column_named_like_a_masked_one(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """What the catalog reads (and so what is not taken for a new view's column): the
    columns named like a rule's column, a pattern's by LIKE with its ``_`` and ``%``
    taken literally, and like a masked view column; no other."""
    from appliance.catalog import _load
    from appliance.config import MaskingRuleConfig, MaskStrategy, TargetConfig, TargetTLS
    from appliance.policy.masking import MaskingPolicy

    mariadb.admin_sql(
        "CREATE DATABASE IF NOT EXISTS mcat_names",
        "CREATE OR REPLACE TABLE mcat_names.t (id INT, card VARCHAR(19), ssn_us CHAR(11), "
        "ssn_eu CHAR(11), ssnXus CHAR(11), `tax%id` INT, taxid INT, other INT)",
        "CREATE OR REPLACE VIEW mcat_names.v AS SELECT card AS shown FROM mcat_names.t",
    )
    rules = [
        MaskingRuleConfig("*.*.card", "*", "*", "card", MaskStrategy.LAST4),
        MaskingRuleConfig("*.*.ssn_*", "*", "*", "ssn_*", MaskStrategy.REDACT),
        MaskingRuleConfig("*.*.tax%*", "*", "*", "tax%*", MaskStrategy.REDACT),
        MaskingRuleConfig("mcat_names.t.*", "mcat_names", "t", "*", MaskStrategy.NULL),
    ]
    secret = tmp_path / "pw"
    secret.write_text(mariadb.native_password)
    target = TargetConfig(
        "orders",
        mariadb.host,
        mariadb.port,
        mariadb.native_user,
        secret,
        mariadb.native_password.encode(),
        tls=TargetTLS.DISABLED,
    )
    derived, known = _load(target, 5.0, 0, MaskingPolicy(rules, b"k" * 32).column_rules)
    try:
        assert [r.label for r in derived if r.label.startswith("mcat_")] == ["mcat_names.v.shown"]
        assert {(t, c) for s, t, c in known if s == "mcat_names"} == {
            ("t", "card"),
            ("t", "ssn_us"),
            ("t", "ssn_eu"),
            ("t", "tax%id"),
            ("v", "shown"),
        }
    finally:
        mariadb.admin_sql("DROP DATABASE mcat_names")
