"""The rules the view catalog derives for view columns (``derive_rules``) and how a
session's masker applies them to the column definitions MariaDB sends for views: views
in other schemas, columns without a usable origin, layered rules and view columns
computed from several masked columns."""

from __future__ import annotations

import pytest

from appliance.catalog import View, derive_rules
from appliance.config import MaskingRuleConfig, MaskStrategy
from appliance.mysql.constants import FieldType
from appliance.mysql.packets import ColumnDefinition
from appliance.policy.masking import MaskingPolicy, SessionMasker

KEY = b"k" * 32
CARD = b"4111111111111111"


def rule(column: str, strategy: str, *exempt: str) -> MaskingRuleConfig:
    schema, table, name = column.split(".")
    return MaskingRuleConfig(column, schema, table, name, MaskStrategy(strategy), tuple(exempt))


def coldef(db: str, table: str, org_table: str, name: str) -> ColumnDefinition:
    """A column definition as MariaDB sends it: the table field is the view (or its
    alias), org_table what the server could tell of the origin (maybe nothing)."""
    return ColumnDefinition(
        b"def", db.encode(), table.encode(), org_table.encode(),
        name.encode(), name.encode(), 45, 80, FieldType.VAR_STRING, 0, 0,
    )  # fmt: skip


def view(schema: str, name: str, select: str, *columns: str) -> View:
    return View(schema, name, select, columns)


def policy(rules: list[MaskingRuleConfig], views: list[View]) -> MaskingPolicy:
    p = MaskingPolicy(rules, KEY)
    p.set_derived(derive_rules(views, p.column_rules))
    return p


def masker(p: MaskingPolicy, *groups: str) -> SessionMasker:
    m = p.for_groups(groups)
    assert m is not None
    return m


def masked(
    m: SessionMasker,
    column: ColumnDefinition,
    value: bytes = CARD,
    statement: bytes | None = None,
) -> bytes | None:
    """What the session gets of ``value`` in ``column`` (the value itself: not masked),
    as a result of ``statement`` (None: a text not known)."""
    plan = m.plan([column], statement=statement)
    if plan is None or plan[0] is None:
        return value
    mask = plan[0]
    out = mask(value)
    assert out is None or isinstance(out, bytes)
    return out


LAYERED = [
    rule("shop.cust.card", "redact", "pii-readers"),
    rule("shop.cust.card", "last4"),
    rule("shop.cust.secret", "redact"),
]
CL = view(
    "shop",
    "v_cl",
    "select `shop`.`cust`.`id` AS `a`,`shop`.`cust`.`card` AS `b` from `shop`.`cust`",
    "a",
    "b",
)
REV = view("shop", "v_rev", "select reverse(`shop`.`cust`.`card`) AS `r` from `shop`.`cust`", "r")


def test_a_view_in_another_schema_is_masked_whatever_schema_the_server_reports() -> None:
    """CREATE VIEW o2.vx AS SELECT card FROM shop.cust: MariaDB reports db 'shop' (the
    base table's), table and org_table 'vx'; the rule derived was o2.vx.card only."""
    vx = view("o2", "vx", "select `shop`.`cust`.`card` AS `card` from `shop`.`cust`", "card")
    p = policy(LAYERED, [vx])
    assert [r.label for r in p.derived] == ["o2.vx.card"]
    agent = masker(p, "agents")
    assert masked(agent, coldef("shop", "vx", "vx", "card")) == b"****"
    assert masked(agent, coldef("o2", "vx", "vx", "card")) == b"****"
    assert agent.is_masked("o2", "vx", "card")


def test_each_matching_rule_of_a_source_applies_through_a_view_in_order() -> None:
    """Layered rules (redact exempting pii-readers, then last4): the view column took the
    first rule only, so a pii-reader, exempt from it, saw the clear card through a view."""
    p = policy(LAYERED, [CL, REV])
    reader, agent = masker(p, "agents", "pii-readers"), masker(p, "agents")
    for column in (coldef("shop", "v_cl", "v_cl", "b"), coldef("", "v_rev", "v_rev", "r")):
        assert masked(reader, column) == b"************1111"
        assert masked(agent, column) == b"****"
    assert masked(reader, coldef("shop", "v_cl", "v_cl", "a"), b"1") == b"1"


def test_a_view_column_of_several_masked_columns_takes_the_strictest_rule() -> None:
    """CONCAT of columns masked differently took the rule of whichever source a
    frozenset gave first (last4 showed four characters of a redacted column)."""
    names = [f"l{i}" for i in range(7)]
    rules = [rule(f"shop.t.{n}", "last4") for n in names]
    rules += [rule("shop.t.r", "redact"), rule("shop.t.h", "hash"), rule("shop.t.n", "null")]

    def concat(*columns: str) -> str:
        return "concat(" + ",".join(f"`shop`.`t`.`{c}`" for c in columns) + ")"

    definition = (
        f"select {concat('r', *names)} AS `x`,{concat(*names, 'h')} AS `y`,"
        f"{concat('h', 'n', *names)} AS `z`,{concat(*names)} AS `w` from `shop`.`t`"
    )
    p = policy(rules, [view("shop", "v", definition, "x", "y", "z", "w")])
    agent = masker(p, "agents")
    strategies = {r.label: r.strategy for r in p.derived}
    assert strategies == {
        "shop.v.x": MaskStrategy.REDACT,
        "shop.v.y": MaskStrategy.HASH,
        "shop.v.z": MaskStrategy.NULL,
        "shop.v.w": MaskStrategy.LAST4,
    }
    assert masked(agent, coldef("shop", "v", "v", "x")) == b"****"
    assert masked(agent, coldef("shop", "v", "v", "z")) is None


def test_the_strictest_rule_is_taken_per_session() -> None:
    """card (redact, exempting pii-readers, then last4) with secret (redact): redact for
    everyone; card with name (unmasked): last4 for a pii-reader, redact for others."""
    cat = view(
        "shop",
        "v_cat",
        "select concat(`shop`.`cust`.`card`,'|',`shop`.`cust`.`secret`) AS `cs`,"
        "concat(`shop`.`cust`.`card`,`shop`.`cust`.`name`) AS `cn` from `shop`.`cust`",
        "cs",
        "cn",
    )
    p = policy(LAYERED, [cat])
    reader, agent = masker(p, "pii-readers"), masker(p, "agents")
    assert masked(reader, coldef("", "v_cat", "v_cat", "cs")) == b"****"
    assert masked(reader, coldef("", "v_cat", "v_cat", "cn")) == b"************1111"
    assert masked(agent, coldef("", "v_cat", "v_cat", "cn")) == b"****"


UNION = view(
    "shop",
    "v_union",
    "select `shop`.`cust`.`card` AS `u` from `shop`.`cust` "
    "union select `shop`.`cust`.`name` AS `name` from `shop`.`cust`",
    "u",
)
GROUPED = view(
    "shop",
    "v_gc",
    "select group_concat(`shop`.`cust`.`secret` separator ',') AS `g` from `shop`.`cust`",
    "g",
)
TEMPTABLE = view("shop", "v_tmp", "select `shop`.`cust`.`secret` AS `z` from `shop`.`cust`", "z")
JSON_TABLE = view(
    "shop",
    "v_jt",
    "select `j`.`c` AS `c` from (`shop`.`cust` join JSON_TABLE(json_array("
    "`shop`.`cust`.`card`), '$[*]' COLUMNS (`c` varchar(40) PATH '$')) `j`)",
    "c",
)


def test_view_columns_without_a_usable_origin_are_masked() -> None:
    """UNION, aggregate, window function and subquery views come with schema '' and
    org_table ''; a TEMPTABLE view with a column list with org_table the base table and
    org_name the view's column; a JSON_TABLE view with schema '*any*'. No rule matched."""
    p = policy(LAYERED, [UNION, GROUPED, TEMPTABLE, JSON_TABLE])
    agent = masker(p, "agents")
    assert masked(agent, coldef("", "v_union", "", "u")) == b"****"
    assert masked(agent, coldef("", "v_gc", "", "g")) == b"****"
    assert masked(agent, coldef("", "v_tmp", "cust", "z")) == b"****"
    assert masked(agent, coldef("*any*", "v_jt", "v_jt", "c")) == b"****"
    reader = masker(p, "pii-readers")
    assert masked(reader, coldef("", "v_union", "", "u")) == b"************1111"


def test_an_aliased_view_column_without_origin_is_masked_by_its_name() -> None:
    """SELECT u AS q FROM v_union x: table 'x', org_table '', org_name 'u'."""
    p = policy(LAYERED, [UNION, TEMPTABLE])
    agent = masker(p, "agents")
    assert masked(agent, coldef("", "x", "", "u")) == b"****"
    assert masked(agent, coldef("", "t", "cust", "z")) == b"****"
    assert masked(agent, coldef("", "x", "", "other"), b"v") == b"v"
    assert masked(agent, coldef("", "", "", "u"), b"1") == b"1"  # an expression's column


def test_views_of_views_keep_every_source() -> None:
    outer = view(
        "o2",
        "v_outer",
        "select `shop`.`v_cl`.`b` AS `b`,`shop`.`v_union`.`u` AS `u` "
        "from (`shop`.`v_cl` join `shop`.`v_union`)",
        "b",
        "u",
    )
    p = policy(LAYERED, [outer, CL, UNION])  # the outer view first
    reader = masker(p, "pii-readers")
    assert masked(reader, coldef("shop", "v_outer", "v_outer", "b")) == b"************1111"
    assert masked(reader, coldef("", "v_outer", "", "u")) == b"************1111"


def test_a_view_the_gateway_cannot_read_is_masked_whole() -> None:
    unread = view("shop", "v_secret", "", "a")
    over_it = view("shop", "v_over", "select ((( from `shop`.`v_secret`", "a")
    harmless = view("shop", "v_other", "select ((( from `shop`.`other`", "a")
    p = policy(LAYERED, [unread, over_it, harmless])
    assert sorted(r.label for r in p.derived) == ["shop.v_over.a", "shop.v_secret.a"]
    reader = masker(p, "pii-readers")
    assert masked(reader, coldef("shop", "v_over", "v_over", "a")) == b"****"


PLAIN = view("shop", "v_plain", "select `shop`.`cust`.`card` AS `c` from `shop`.`cust`", "c")
#: What the catalog read of the target "db": the columns named like a masked view
#: column (t and T, two tables under lower_case_table_names=0, have a column c of their
#: own).
KNOWN = [("shop", "t", "c"), ("shop", "T", "c"), ("shop", "v_plain", "c")]


def known_policy(rules: list[MaskingRuleConfig], views: list[View]) -> MaskingPolicy:
    p = policy(rules, views)
    p.set_known("db", KNOWN)
    return p


def test_a_view_read_under_an_alias_is_masked() -> None:
    """SELECT c FROM shop.v_plain v: MariaDB sends db 'shop', table 'v', org_table 'v',
    org_name 'c', like a column of a base table v, and the card came in the clear."""
    p = known_policy(LAYERED, [PLAIN])
    agent = p.for_groups(["agents"], "db")
    assert agent is not None
    assert masked(agent, coldef("shop", "v_plain", "v_plain", "c")) == b"****"
    assert masked(agent, coldef("shop", "v", "v", "c")) == b"****"
    assert masked(agent, coldef("shop", "V", "V", "c")) == b"****"
    # in a join MariaDB may send the base table with the view's column name
    assert masked(agent, coldef("shop", "v", "cust", "c")) == b"****"
    reader = p.for_groups(["pii-readers"], "db")
    assert reader is not None
    assert masked(reader, coldef("shop", "v", "v", "c")) == b"************1111"
    # the catalog has not read the target yet: no table is known
    assert masked(masker(p, "agents"), coldef("shop", "v", "v", "c")) == b"****"


def test_a_known_table_is_not_taken_for_an_aliased_view() -> None:
    p = known_policy(LAYERED, [PLAIN])
    agent = p.for_groups(["agents"], "db")
    assert agent is not None
    sql = b"SELECT c FROM t"
    assert masked(agent, coldef("shop", "t", "t", "c"), b"1", sql) == b"1"
    assert masked(agent, coldef("shop", "x", "t", "c"), b"1", b"SELECT c FROM t x") == b"1"
    assert masked(agent, coldef("shop", "v", "v", "other"), b"1", sql) == b"1"
    assert masked(agent, coldef("shop", "v_plain", "v_plain", "other"), b"1", sql) == b"1"
    # names are compared as the server spells them: shop.t and shop.T are two tables,
    # and a table the catalog does not know (temporary, made since) has c masked
    assert masked(agent, coldef("shop", "T", "T", "c"), b"1", b"SELECT c FROM T") == b"1"
    assert masked(agent, coldef("SHOP", "t", "t", "c"), statement=sql) == b"****"
    assert masked(agent, coldef("shop", "tmp", "tmp", "c"), statement=sql) == b"****"
    # another target's tables are not this one's
    other = p.for_groups(["agents"], "other")
    assert other is not None
    assert masked(other, coldef("shop", "t", "t", "c"), statement=sql) == b"****"


@pytest.mark.parametrize(
    "sql",
    [
        b"SELECT c FROM v_plain AS t",
        b"SELECT c FROM shop.`V_PLAIN` t",
        b"SELECT c FROM /*!v_plain*/ t",
        b"EXECUTE s",  # a prepared text the gateway does not see here
        b"call p()",
        None,  # a text not known
    ],
)
def test_a_known_table_is_taken_for_a_masked_view_the_statement_may_read(
    sql: bytes | None,
) -> None:
    """SELECT c FROM v_plain AS t, with a table t (c) the agent made itself: MariaDB
    reports the view's column exactly as the table's (shop.t.c), and the card came in the
    clear. A statement that may read a masked view has a known column named like a
    masked view column masked."""
    p = known_policy(LAYERED, [PLAIN])
    agent = p.for_groups(["agents"], "db")
    assert agent is not None
    assert masked(agent, coldef("shop", "t", "t", "c"), statement=sql) == b"****"
    # in a join, as the base table's column with the view's column name
    assert masked(agent, coldef("shop", "v", "t", "c"), statement=sql) == b"****"
    assert masked(agent, coldef("shop", "t", "t", "other"), b"1", sql) == b"1"
    reader = p.for_groups(["pii-readers"], "db")
    assert reader is not None
    assert masked(reader, coldef("shop", "t", "t", "c"), statement=sql) == b"************1111"


def test_a_view_named_outside_ascii_is_taken_as_named_by_any_text_outside_ascii() -> None:
    """The text comes in the session's character set: in latin1 the view kärten is
    b"k\xe4rten", which its UTF-8 name does not find."""
    kaerten = view("shop", "kärten", "select `shop`.`cust`.`card` AS `c` from `shop`.`cust`", "c")
    p = known_policy(LAYERED, [kaerten])
    agent = p.for_groups(["agents"], "db")
    assert agent is not None
    for sql in ("SELECT c FROM kärten t".encode(), "SELECT c FROM kärten t".encode("latin1")):
        assert masked(agent, coldef("shop", "t", "t", "c"), statement=sql) == b"****"
    assert masked(agent, coldef("shop", "t", "t", "c"), b"1", b"SELECT c FROM t") == b"1"


@pytest.mark.parametrize(
    "sql", [b"SELECT c FROM v_plain2 AS t", b"SELECT c FROM xv_plain t", b"SELECT executed"]
)
def test_a_name_that_only_contains_a_views_is_not_the_view(sql: bytes) -> None:
    p = known_policy(LAYERED, [PLAIN])
    agent = p.for_groups(["agents"], "db")
    assert agent is not None
    assert masked(agent, coldef("shop", "t", "t", "c"), b"1", sql) == b"1"


def test_an_exempt_group_sees_an_aliased_view_as_the_view() -> None:
    p = known_policy(
        [rule("shop.cust.card", "redact", "pii-readers"), rule("shop.cust.secret", "redact")],
        [PLAIN],
    )
    reader = p.for_groups(["pii-readers"], "db")
    assert reader is not None
    assert masked(reader, coldef("shop", "v_plain", "v_plain", "c")) == CARD
    assert masked(reader, coldef("shop", "v", "v", "c")) == CARD
