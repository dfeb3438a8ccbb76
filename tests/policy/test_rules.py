"""How configured ``[[rules]]`` match a statement (``decide``), pure: what a rule on a
kind covers besides statements of that kind, and who an allow covers."""

from __future__ import annotations

import pytest

from appliance.config import RuleAction, RuleConfig
from appliance.policy.classify import classify
from appliance.policy.lexer import LexMode
from appliance.policy.rules import Decision, Subject, decide

AGENT = Subject("agent", frozenset({"agents"}), "orders")

SECRET_UNREAD = RuleConfig(
    name="secret-unread",
    statements=("SELECT",),
    action=RuleAction.BLOCK,
    tables=("shop.secret",),
)


def decided(sql: str, rules: tuple[RuleConfig, ...], who: Subject = AGENT) -> Decision:
    (c,) = classify(sql.encode(), LexMode())
    return decide(c, who, "shop", rules)


@pytest.mark.parametrize(
    "sql",
    [
        "SET @x = (SELECT card FROM shop.secret LIMIT 1)",
        "INSERT INTO shop.pub SELECT id, card FROM secret",
        "INSERT INTO shop.pub VALUES (1, (SELECT card FROM secret LIMIT 1))",
        "CREATE TABLE shop.leak AS SELECT * FROM shop.secret",
        "CREATE TEMPORARY TABLE leak SELECT * FROM SHOP.Secret",
        "UPDATE shop.pub SET v = (SELECT card FROM secret WHERE id = 1) WHERE id = 1",
        "DELETE FROM shop.pub WHERE v IN (SELECT card FROM secret)",
        "UPDATE shop.pub JOIN secret s ON s.id = pub.id SET pub.v = s.card WHERE pub.id = 1",
        "EXECUTE IMMEDIATE 'INSERT INTO shop.pub SELECT id, card FROM secret'",
    ],
)
def test_a_rule_on_select_refuses_every_statement_that_reads_its_tables(sql: str) -> None:
    """A rule refusing SELECT of a table let other kinds read it: SET @x = (SELECT ...),
    INSERT ... SELECT or CREATE TABLE ... AS SELECT copied its rows where a SELECT
    could read them."""
    d = decided(sql, (SECRET_UNREAD,))
    assert (d.action, d.rule) == (RuleAction.BLOCK, "secret-unread")
    assert "shop.secret (as a select would)" in d.reason.lower()


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO shop.secret VALUES (2, 'x')",  # writes it, reads nothing
        "UPDATE shop.secret SET card = 'x' WHERE id = 1",
        "SHOW CREATE TABLE shop.secret",  # its definition, not its rows
        "DESCRIBE shop.secret",
        "INSERT INTO shop.pub SELECT id, v FROM shop.other",
    ],
)
def test_a_rule_on_select_leaves_statements_that_do_not_read_its_rows(sql: str) -> None:
    assert decided(sql, (SECRET_UNREAD,)).rule != "secret-unread"


DBA_ALL = RuleConfig(
    name="dba-all", statements=("*",), action=RuleAction.ALLOW, identities=("dba*",)
)
NO_DBA_DELETE = RuleConfig(
    name="no-dba-delete", statements=("DELETE",), action=RuleAction.BLOCK, identities=("dba",)
)


def test_an_allow_covers_an_identity_only_in_its_own_case() -> None:
    """Accounts are told apart by their case: an allow for `dba` allowed `DBA` too."""
    sql = "DELETE FROM shop.pub"
    assert decided(sql, (DBA_ALL,), Subject("dba", frozenset(), "orders")).rule == "dba-all"
    other = decided(sql, (DBA_ALL,), Subject("DBA", frozenset(), "orders"))
    assert (other.action, other.rule) == (RuleAction.BLOCK, "delete-without-where")
    # a refusal still matches it in any case
    refused = decided(sql, (NO_DBA_DELETE,), Subject("DBA", frozenset(), "orders"))
    assert refused.rule == "no-dba-delete"


SANDBOX = RuleConfig(
    name="scratch-sandbox", statements=("*",), action=RuleAction.ALLOW, tables=("scratch.*",)
)


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        ("SELECT LOAD_FILE('/etc/hostname') FROM scratch.t", "load-file"),
        ("SELECT * FROM scratch.t INTO OUTFILE '/tmp/out.txt'", "into-outfile"),
        ("LOAD DATA INFILE '/etc/hostname' INTO TABLE scratch.t", "load-data"),
        (
            "CREATE TABLE scratch.f (a TEXT) ENGINE=CONNECT TABLE_TYPE=DOS "
            "FILE_NAME='/etc/hostname'",
            "storage-engine",
        ),
        (
            "CREATE TABLE scratch.r (a INT) ENGINE=FEDERATED "
            "CONNECTION='mysql://u:p@10.0.0.9:3306/db/t'",
            "storage-engine",
        ),
        (
            "CREATE TABLE scratch.p (a INT) PARTITION BY HASH (a) "
            "(PARTITION p0 DATA DIRECTORY = '/tmp/elsewhere')",
            "data-directory",
        ),
    ],
)
def test_an_allow_on_tables_does_not_reach_the_servers_files(sql: str, rule: str) -> None:
    """`*` on scratch.* let LOAD_FILE(), INTO OUTFILE and LOAD DATA read and write files
    of the database server, and a table of scratch keep its rows in a file or on another
    server (CONNECT, FEDERATED) or in a directory of its own: files are no tables of
    scratch."""
    assert decided("DELETE FROM scratch.t", (SANDBOX,)).rule == "scratch-sandbox"
    d = decided(sql, (SANDBOX,))
    assert (d.action, d.rule) == (RuleAction.BLOCK, rule)
