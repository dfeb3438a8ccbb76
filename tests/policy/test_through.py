"""What a write reaches through views, foreign keys and triggers (``WriteThrough``,
``body_writes``), and the refusing rules that see it (``decide`` with the target's
``WriteThrough``)."""

from __future__ import annotations

import pytest

from appliance.config import PolicyConfig, PolicyMode, RuleAction, RuleConfig
from appliance.mysql.constants import Command
from appliance.mysql.relay import ClientCommand
from appliance.policy.classify import Classification, classify
from appliance.policy.gate import Policy, SessionPolicy, Verdict
from appliance.policy.lexer import LexMode
from appliance.policy.rules import Decision, Subject, decide
from appliance.policy.through import ForeignKey, Reached, Trigger, ViewBases, WriteThrough
from appliance.policy.trigger_body import body_writes
from appliance.through_catalog import trigger_of, view_bases

AGENT = Subject("agent", frozenset(), "db1")

# shop.orders.v references shop.customers(id) ON DELETE CASCADE ON UPDATE CASCADE
CASCADE = ForeignKey("shop.fk_x", "shop.orders", "shop.customers", "CASCADE", "CASCADE")
V_ORDERS = ViewBases("shop.v_orders", frozenset({"shop.orders"}))
SHOP = WriteThrough([CASCADE], [V_ORDERS])
# the same key with its columns known: orders.v references customers.id
KEYED = ForeignKey(
    "shop.fk_x", "shop.orders", "shop.customers", "CASCADE", "CASCADE",
    frozenset({"v"}), frozenset({"id"}),
)  # fmt: skip

PROTECT = RuleConfig("protect-orders", ("DELETE", "UPDATE"), RuleAction.BLOCK, ("shop.orders",))
HOLD = RuleConfig("hold-orders", ("DELETE", "UPDATE"), RuleAction.REVIEW, ("shop.orders",))


def reached(through: WriteThrough, kind: str, table: str) -> set[tuple[str, str | None]]:
    return {(r.kind, r.table) for r in through.reached(kind, table)}


def one(sql: str) -> Classification:
    (c,) = classify(sql.encode(), LexMode())
    return c


# ------------------------------------------------------------------- WriteThrough


def test_a_view_passes_each_write_kind_to_its_base_tables() -> None:
    for kind in ("INSERT", "UPDATE", "DELETE", "REPLACE"):
        assert reached(SHOP, kind, "shop.v_orders") >= {(kind, "shop.orders")}
    assert SHOP.reached("SELECT", "shop.v_orders") == ()


def test_a_cascading_delete_and_update_reach_the_child() -> None:
    assert reached(SHOP, "DELETE", "shop.customers") == {("DELETE", "shop.orders")}
    assert reached(SHOP, "UPDATE", "shop.customers") == {("UPDATE", "shop.orders")}
    assert reached(SHOP, "REPLACE", "shop.customers") == {("DELETE", "shop.orders")}
    assert reached(SHOP, "INSERT", "shop.customers") == set()
    (how,) = SHOP.reached("DELETE", "shop.customers")
    assert how == Reached("DELETE", "shop.orders", "foreign key shop.fk_x ON DELETE CASCADE")


def test_on_update_acts_only_when_a_referenced_column_is_set() -> None:
    """An UPDATE that leaves the parent's referenced key as it is changes no child row:
    refusing every UPDATE of every parent of a protected table would refuse
    `UPDATE customers SET name = ...` for a rule on orders."""
    # orders.v is itself referenced by lines.order_v, ON UPDATE CASCADE too
    lines = ForeignKey(
        "shop.fk_l", "shop.lines", "shop.orders", "CASCADE", "RESTRICT",
        frozenset({"order_v"}), frozenset({"v"}),
    )  # fmt: skip
    through = WriteThrough([KEYED, lines])
    assert reached(through, "UPDATE", "shop.customers") == {  # columns not known
        ("UPDATE", "shop.orders"),
        ("UPDATE", "shop.lines"),
    }
    assert through.reached("UPDATE", "shop.customers", frozenset({"name"})) == ()
    both = through.reached("UPDATE", "shop.customers", frozenset({"name", "id"}))
    assert {(r.kind, r.table) for r in both} == {
        ("UPDATE", "shop.orders"),
        ("UPDATE", "shop.lines"),
    }
    # an update of orders that leaves v as it is reaches no line
    assert through.reached("UPDATE", "shop.orders", frozenset({"total"})) == ()
    # a key whose columns are not known acts on any update
    assert reached(SHOP, "UPDATE", "shop.customers") == {("UPDATE", "shop.orders")}
    assert {r.table for r in SHOP.reached("UPDATE", "shop.customers", frozenset({"name"}))} == {
        "shop.orders"
    }


def test_a_rule_sees_the_columns_an_update_sets() -> None:
    through = WriteThrough([KEYED])
    rules = (PROTECT,)
    name_only = one("UPDATE customers SET name = 'z' WHERE id = 3")
    assert not decide(name_only, AGENT, "shop", rules, through).refused
    for sql in (
        "UPDATE customers SET id = 9 WHERE id = 3",
        "UPDATE customers c SET c.ID = 9, name = 'z' WHERE c.id = 3",
        "INSERT INTO customers VALUES (2, 'b') ON DUPLICATE KEY UPDATE id = 9",
        "UPDATE customers SET (id) = (9)",  # not `column = value`: not known, so any
    ):
        assert decide(one(sql), AGENT, "shop", rules, through).rule == "protect-orders", sql


def test_the_columns_set_are_read_as_the_session_lexes_the_update() -> None:
    """The set columns were read from the text parsed again with the parser's lexing:
    under NO_BACKSLASH_ESCAPES `'a\\'` ends at its second quote and the server set id
    (its ON UPDATE CASCADE changed shop.orders) where the parser read one string up to
    the quote after `--` and only `name`. And UPDATE IGNORE, which the parser reads only
    without its modifier, was taken to set every column."""
    through = WriteThrough([KEYED])
    rules = (PROTECT,)
    sql = "UPDATE customers SET name = 'a\\', id = 9 WHERE id = 1 -- '"
    (c,) = classify(sql.encode(), LexMode(no_backslash_escapes=True))
    assert decide(c, AGENT, "shop", rules, through).rule == "protect-orders"
    for modified in (
        "UPDATE IGNORE customers SET name = 'z' WHERE id = 3",
        "INSERT HIGH_PRIORITY INTO customers VALUES (2, 'b') ON DUPLICATE KEY UPDATE name = 'c'",
    ):
        assert not decide(one(modified), AGENT, "shop", rules, through).refused, modified


def test_set_null_and_set_default_update_the_child_restrict_changes_nothing() -> None:
    keys = [
        ForeignKey("s.a", "s.nulled", "s.p", "RESTRICT", "SET NULL"),
        ForeignKey("s.b", "s.defaulted", "s.p", "SET DEFAULT", "NO ACTION"),
        ForeignKey("s.c", "s.kept", "s.p", "RESTRICT", "RESTRICT"),
    ]
    through = WriteThrough(keys)
    assert reached(through, "DELETE", "s.p") == {("UPDATE", "s.nulled")}
    assert reached(through, "UPDATE", "s.p") == {("UPDATE", "s.defaulted")}


def test_views_of_views_and_chains_of_keys_are_followed_and_cycles_end() -> None:
    through = WriteThrough(
        [
            ForeignKey("s.k1", "s.b", "s.a", "CASCADE", "CASCADE"),
            ForeignKey("s.k2", "s.c", "s.b", "CASCADE", "CASCADE"),
            ForeignKey("s.k3", "s.a", "s.c", "CASCADE", "CASCADE"),  # a cycle
        ],
        [ViewBases("s.v2", frozenset({"s.v1"})), ViewBases("s.v1", frozenset({"s.a"}))],
    )
    assert reached(through, "DELETE", "s.v2") == {
        ("DELETE", "s.v1"),
        ("DELETE", "s.a"),
        ("DELETE", "s.b"),
        ("DELETE", "s.c"),
    }
    hows = {r.table: r.how for r in through.reached("DELETE", "s.v2")}
    assert hows["s.b"] == "view s.v2, then view s.v1, then foreign key s.k1 ON DELETE CASCADE"


def test_names_match_in_any_case_and_a_bare_name_in_any_schema() -> None:
    assert reached(SHOP, "DELETE", "Shop.Customers") == {("DELETE", "shop.orders")}
    assert reached(SHOP, "DELETE", "customers") == {("DELETE", "shop.orders")}
    assert reached(SHOP, "DELETE", "other.customers") == set()


def test_an_unread_view_or_target_reaches_any_table() -> None:
    """A target not read yet may have a trigger that deletes where the write inserts:
    every write reaches any table in every way."""
    through = WriteThrough(views=[ViewBases("shop.v_secret", None)])
    assert reached(through, "UPDATE", "shop.v_secret") == {("UPDATE", None)}
    unread = WriteThrough(unread="not read yet")
    assert reached(unread, "INSERT", "shop.anything") == {
        (kind, None) for kind in ("INSERT", "UPDATE", "DELETE", "REPLACE")
    }
    assert unread.reached("SELECT", "shop.anything") == ()


def test_equal_facts_make_equal_write_throughs() -> None:
    assert WriteThrough([CASCADE], [V_ORDERS]) == SHOP
    assert WriteThrough([CASCADE]) != SHOP
    restrict = ForeignKey("shop.fk_r", "shop.orders", "shop.customers", "RESTRICT", "RESTRICT")
    assert WriteThrough([restrict]) == WriteThrough()  # it changes nothing: not kept
    assert not WriteThrough([restrict])


def test_view_bases_from_a_mariadb_definition() -> None:
    text = "select `shop`.`orders`.`id` AS `id`,`shop`.`orders`.`v` AS `v` from `shop`.`orders`"
    assert view_bases("shop", "v_orders", text) == V_ORDERS
    assert view_bases("shop", "v_hidden", "") == ViewBases("shop.v_hidden", None)
    assert view_bases("shop", "v_odd", "garbage ((") == ViewBases("shop.v_odd", None)


# ------------------------------------------------------------------- decide


def test_a_delete_through_a_view_meets_the_rule_on_its_base_table() -> None:
    c = one("DELETE FROM shop.v_orders WHERE id = 1")
    assert not decide(c, AGENT, "shop", (PROTECT,)).refused  # without: not seen
    decision = decide(c, AGENT, "shop", (PROTECT,), SHOP)
    assert decision.action is RuleAction.BLOCK and decision.rule == "protect-orders"
    assert decision.reason.startswith(
        "DELETE FROM shop.v_orders also deletes rows of shop.orders (through view shop.v_orders)"
    )


def test_a_cascading_delete_or_update_meets_the_rule_on_the_child() -> None:
    delete = decide(one("DELETE FROM customers WHERE id = 1"), AGENT, "shop", (PROTECT,), SHOP)
    assert delete.rule == "protect-orders"
    assert "DELETE FROM customers also deletes rows of shop.orders (through foreign key " in (
        delete.reason
    )
    update = one("UPDATE customers SET id = 20 WHERE id = 2")
    assert decide(update, AGENT, "shop", (HOLD,), SHOP).action is RuleAction.REVIEW
    upsert = one("INSERT INTO customers (id) VALUES (2) ON DUPLICATE KEY UPDATE id = 20")
    assert decide(upsert, AGENT, "shop", (PROTECT,), SHOP).rule == "protect-orders"
    replace = one("REPLACE INTO customers (id) VALUES (2)")
    assert decide(replace, AGENT, "shop", (PROTECT,), SHOP).rule == "protect-orders"


def test_writes_that_reach_nothing_protected_and_allow_rules_are_unchanged() -> None:
    insert = one("INSERT INTO customers (id) VALUES (3)")
    assert not decide(insert, AGENT, "shop", (PROTECT,), SHOP).refused
    other = one("DELETE FROM shop.invoices WHERE id = 1")
    assert not decide(other, AGENT, "shop", (PROTECT,), SHOP).refused
    # an allow for DELETE on customers still allows it: it names what it allows
    allow = RuleConfig("customers", ("DELETE",), RuleAction.ALLOW, ("shop.customers",))
    c = one("DELETE FROM customers WHERE id = 1")
    assert decide(c, AGENT, "shop", (allow, PROTECT), SHOP).rule == "customers"


def test_a_write_to_an_unread_view_meets_every_refusing_rule_with_tables() -> None:
    through = WriteThrough(views=[ViewBases("shop.v_secret", None)])
    c = one("UPDATE shop.v_secret SET v = 1 WHERE id = 1")
    decision = decide(c, AGENT, "shop", (PROTECT,), through)
    assert decision.rule == "protect-orders"
    assert "may also change rows of the tables this rule protects" in decision.reason


def test_a_new_write_through_is_not_hidden_by_a_cached_verdict() -> None:
    policy = Policy(PolicyConfig(), (PROTECT,))
    session = SessionPolicy(policy, AGENT, "shop", None)
    payload = bytes([Command.QUERY]) + b"DELETE FROM customers WHERE id = 1"

    def refused(n: int) -> bool:
        cmd = ClientCommand(n, Command.QUERY, payload, payload)
        return session.decide(cmd, 0, {}).refusal is not None

    assert not refused(1)
    policy.set_through("db1", SHOP)
    assert refused(2)
    policy.set_through("db1", WriteThrough())
    assert not refused(3)


def test_an_execute_is_decided_again_when_its_prepare_reached_less() -> None:
    """A statement prepared before a view or a foreign key existed kept the decision of
    its prepare: with the key added by an operator, its executes deleted the orders a
    rule protects while a new DELETE (or prepare) was refused."""
    policy = Policy(PolicyConfig(), (PROTECT,))
    session = SessionPolicy(policy, AGENT, "shop", None)
    text = b"DELETE FROM customers WHERE id = ?"
    prepare = bytes([Command.STMT_PREPARE]) + text
    execute = bytes([Command.STMT_EXECUTE]) + (7).to_bytes(4, "little") + bytes(5)

    def decided(n: int, payload: bytes) -> str | None:
        cmd = ClientCommand(n, payload[0], payload, payload)
        refusal = session.decide(cmd, 0, {7: text}).refusal
        return None if refusal is None else refusal.reason

    assert decided(1, prepare) is None
    assert decided(2, execute) is None
    policy.set_through("db1", SHOP)  # the key is read: a DELETE of a customer deletes orders
    why = decided(3, execute)
    assert why is not None and "also deletes rows of shop.orders" in why
    assert why.endswith("prepare it again to have it decided")
    assert decided(4, prepare) is not None  # a new prepare is refused as it stands
    assert decided(5, execute) is not None  # and does not vouch for the old statement
    # a statement prepared while the key was known is decided as it was (a review
    # approved then is not asked again), and one that reaches nothing protected runs
    reads = b"SELECT name FROM customers WHERE id = ?"
    assert decided(6, bytes([Command.STMT_PREPARE]) + reads) is None
    policy.set_through("db1", WriteThrough([CASCADE], [V_ORDERS, ViewBases("s.v", None)]))
    cmd = ClientCommand(7, Command.STMT_EXECUTE, execute, execute)
    assert session.decide(cmd, 0, {7: reads}).refusal is None


# ------------------------------------------------------------------- triggers

# shop.trg_x: AFTER DELETE ON shop.customers, DELETE FROM orders WHERE v = OLD.id
TRG_X = Trigger(
    "shop.trg_x", "shop.customers", "DELETE", "AFTER", frozenset({("DELETE", "shop.orders")})
)
HIDDEN = Trigger("shop.trg_h", "shop.customers", "INSERT", "AFTER", None)  # body not read

COMPOUND = b"""BEGIN
  DECLARE n INT DEFAULT 0;
  DECLARE gone CONDITION FOR SQLSTATE '45000';
  SELECT COUNT(*) INTO n FROM orders WHERE v = OLD.id;
  SET NEW.total = NEW.total + n, @seen = OLD.`id`;
  IF n > 0 AND NEW.name <> OLD.name THEN
    UPDATE orders SET v = NEW.id WHERE v = OLD.id;
  ELSEIF n IS NULL THEN
    SIGNAL gone SET MESSAGE_TEXT = 'no orders';
  ELSE
    INSERT INTO `archive`.`log` (what) VALUES (CONCAT('customer ', OLD.id));
  END IF;
  check_it: BEGIN
    REPLACE INTO audit SET id = OLD.id;
    LEAVE check_it;
  END check_it;
END"""


def test_a_trigger_fired_by_a_write_reaches_what_its_body_writes() -> None:
    through = WriteThrough(triggers=[TRG_X])
    assert through.reached("DELETE", "shop.customers") == (
        Reached("DELETE", "shop.orders", "trigger shop.trg_x AFTER DELETE"),
    )
    assert reached(through, "DELETE", "customers") == {("DELETE", "shop.orders")}  # bare
    assert reached(through, "INSERT", "shop.customers") == set()  # another event
    assert reached(through, "UPDATE", "shop.customers") == set()
    assert through and WriteThrough(triggers=[TRG_X]) == through != WriteThrough()
    # one that writes no table (SET NEW.ts = NOW()) changes nothing: not kept
    stamp = Trigger("shop.t_ts", "shop.customers", "UPDATE", "BEFORE", frozenset())
    assert WriteThrough(triggers=[stamp]) == WriteThrough()
    assert not WriteThrough(triggers=[stamp])


def test_a_trigger_on_several_events_or_one_not_known_fires_on_each() -> None:
    """A trigger whose event the gateway does not know was left out: it fired unseen."""
    writes = frozenset({("DELETE", "shop.orders")})
    several = Trigger("shop.t_s", "shop.customers", "INSERT,UPDATE", "AFTER", writes)
    odd = Trigger("shop.t_o", "shop.invoices", "TRUNCATE", "AFTER", writes)
    through = WriteThrough(triggers=[several, odd])
    assert reached(through, "INSERT", "shop.customers") == {("DELETE", "shop.orders")}
    assert reached(through, "UPDATE", "shop.customers") == {("DELETE", "shop.orders")}
    assert reached(through, "DELETE", "shop.customers") == set()
    for kind in ("INSERT", "UPDATE", "DELETE"):
        assert reached(through, kind, "shop.invoices") == {("DELETE", "shop.orders")}


def test_a_compound_body_writes_each_of_its_statements_tables_in_its_schema() -> None:
    """Every statement of a BEGIN ... END body counts, every branch of an IF, nested
    blocks too; bare names are the trigger's schema's (not the session's), NEW and OLD
    are no tables, and what only reads or sets variables writes nothing."""
    assert body_writes("shop", COMPOUND) == {
        ("UPDATE", "shop.orders"),
        ("INSERT", "archive.log"),
        ("REPLACE", "shop.audit"),
        ("DELETE", "shop.audit"),  # a REPLACE deletes the rows it collides with
        ("INSERT", "shop.audit"),
    }
    assert body_writes("crm", b"DELETE FROM orders WHERE v = OLD.id") == {("DELETE", "crm.orders")}
    assert body_writes("shop", b"SET NEW.ts = NOW()") == frozenset()
    assert body_writes("shop", b"BEGIN NOT ATOMIC SELECT 1 INTO @x; END") == frozenset()
    upsert = b"INSERT INTO totals VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE n = n + 1"
    assert body_writes("shop", upsert) == {("INSERT", "shop.totals"), ("UPDATE", "shop.totals")}
    # a sequence it takes a value of changes
    assert body_writes("shop", b"SET NEW.id = NEXTVAL(ids)") == {("UPDATE", "shop.ids")}
    # a multi-table DELETE writes its targets only
    multi = b"DELETE o FROM orders o JOIN lines l ON l.o = o.id WHERE o.v = OLD.id"
    assert body_writes("shop", multi) == {("DELETE", "shop.orders")}


def test_a_body_is_read_as_its_sql_mode_lexes_it() -> None:
    """Under ANSI_QUOTES "x" names a table; under NO_BACKSLASH_ESCAPES 'a\\' ends at its
    second quote, and the DELETE after it runs."""
    assert body_writes("shop", b'INSERT INTO "audit" VALUES (1)', "ANSI_QUOTES") == {
        ("INSERT", "shop.audit")
    }
    text = b"BEGIN SET @a = 'a\\'; DELETE FROM orders; -- ';\nEND"
    assert body_writes("shop", text, "NO_BACKSLASH_ESCAPES") == {("DELETE", "shop.orders")}


def test_a_body_the_gateway_cannot_read_whole_writes_any_table() -> None:
    unread = [
        b"CALL shop.archive(OLD.id)",
        b"BEGIN INSERT INTO a VALUES (1); CALL p(); END",
        b"BEGIN PREPARE s FROM @q; EXECUTE s; END",
        b"BEGIN EXECUTE IMMEDIATE 'DELETE FROM orders'; END",
        b"BEGIN WHILE @n > 0 DO DELETE FROM orders LIMIT 1; END WHILE; END",
        b"CASE NEW.k WHEN 1 THEN DELETE FROM orders; END CASE",
        b"BEGIN DECLARE CONTINUE HANDLER FOR SQLEXCEPTION DELETE FROM orders; END",
        b"BEGIN DECLARE c CURSOR FOR SELECT id FROM orders; END",
        b"INSERT INTO a VALUES (shop.stamp(NEW.id))",  # a stored function
        b"IF is_gone(OLD.id) THEN SET @x = 1; END IF",  # in a condition
        b"BEGIN DECLARE n INT DEFAULT counted(1); END",  # in a default
        b"BEGIN /*!DELETE FROM orders*/; END",
        b"BEGIN INSERT INTO a VALUES (1) END",  # no ';'
        b"BEGIN INSERT INTO a VALUES (1);",  # left open
        b"INSERT INTO a VALUES (1); DELETE FROM orders",
        b"garbage ((",
        b"",
    ]
    for body in unread:
        assert body_writes("shop", body) is None, body
    # under a mode the gateway does not read (|| is a concatenation, PL/SQL)
    assert body_writes("shop", b"INSERT INTO a VALUES (1)", "PIPES_AS_CONCAT") is None
    assert body_writes("shop", b"INSERT INTO a VALUES (1)", "ORACLE") is None


def test_an_unread_body_reaches_any_table_in_any_way() -> None:
    through = WriteThrough(triggers=[HIDDEN])
    assert reached(through, "INSERT", "shop.customers") == {
        (kind, None) for kind in ("INSERT", "UPDATE", "DELETE", "REPLACE")
    }
    insert = one("INSERT INTO customers (id) VALUES (3)")
    decision = decide(insert, AGENT, "shop", (PROTECT,), through)  # a rule on DELETE
    assert decision.rule == "protect-orders"
    assert (
        "may also change rows of the tables this rule protects (trigger shop.trg_h AFTER "
        "INSERT, whose body the gateway cannot read)" in decision.reason
    )


def test_triggers_chain_with_keys_and_triggers_and_cycles_end() -> None:
    through = WriteThrough(
        [ForeignKey("s.k1", "s.b", "s.a", "RESTRICT", "CASCADE")],
        triggers=[
            # a DELETE of s.b (the key's cascade) fires a trigger that updates s.c ...
            Trigger("s.t1", "s.b", "DELETE", "BEFORE", frozenset({("UPDATE", "s.c")})),
            # ... whose trigger inserts into s.d, whose trigger deletes from s.a: a cycle
            Trigger("s.t2", "s.c", "UPDATE", "AFTER", frozenset({("INSERT", "s.d")})),
            Trigger("s.t3", "s.d", "INSERT", "AFTER", frozenset({("DELETE", "s.a")})),
        ],
    )
    assert reached(through, "DELETE", "s.a") == {
        ("DELETE", "s.b"),
        ("UPDATE", "s.c"),
        ("INSERT", "s.d"),
        ("DELETE", "s.a"),
    }
    hows = {r.table: r.how for r in through.reached("DELETE", "s.a")}
    assert hows["s.d"] == (
        "foreign key s.k1 ON DELETE CASCADE, then trigger s.t1 BEFORE DELETE, "
        "then trigger s.t2 AFTER UPDATE"
    )


def test_a_replace_fires_the_insert_and_the_delete_triggers() -> None:
    inserted = Trigger(
        "shop.t_i", "shop.customers", "INSERT", "AFTER", frozenset({("INSERT", "shop.log")})
    )
    through = WriteThrough(triggers=[TRG_X, inserted])
    assert reached(through, "REPLACE", "shop.customers") == {
        ("DELETE", "shop.orders"),
        ("INSERT", "shop.log"),
    }
    replace = decide(
        one("REPLACE INTO customers (id) VALUES (2)"), AGENT, "shop", (PROTECT,), through
    )
    assert replace.rule == "protect-orders"
    assert "also deletes rows of shop.orders (through trigger shop.trg_x AFTER DELETE)" in (
        replace.reason
    )
    # a body's REPLACE fires them too, on its own table
    chained = WriteThrough(
        triggers=[
            Trigger("s.t1", "s.a", "UPDATE", "AFTER", frozenset({("REPLACE", "s.b")})),
            Trigger("s.t2", "s.b", "DELETE", "AFTER", frozenset({("DELETE", "s.c")})),
        ]
    )
    assert ("DELETE", "s.c") in reached(chained, "UPDATE", "s.a")


def test_an_upsert_fires_the_update_triggers_a_plain_insert_does_not() -> None:
    updated = Trigger(
        "shop.t_u", "shop.customers", "UPDATE", "AFTER", frozenset({("DELETE", "shop.orders")})
    )
    through = WriteThrough(triggers=[updated])
    upsert = one("INSERT INTO customers (id) VALUES (2) ON DUPLICATE KEY UPDATE name = 'x'")
    assert decide(upsert, AGENT, "shop", (PROTECT,), through).rule == "protect-orders"
    insert = one("INSERT INTO customers (id) VALUES (2)")
    assert not decide(insert, AGENT, "shop", (PROTECT,), through).refused
    # an UPDATE fires it whatever columns it sets (a key's ON UPDATE would not)
    name_only = one("UPDATE customers SET name = 'z' WHERE id = 3")
    assert decide(name_only, AGENT, "shop", (PROTECT,), through).rule == "protect-orders"


def test_a_write_through_a_view_fires_its_base_tables_triggers() -> None:
    v_customers = ViewBases("shop.v_customers", frozenset({"shop.customers"}))
    through = WriteThrough(views=[v_customers], triggers=[TRG_X])
    c = one("DELETE FROM v_customers WHERE id = 1")
    decision = decide(c, AGENT, "shop", (PROTECT,), through)
    assert decision.rule == "protect-orders"
    assert decision.reason.startswith(
        "DELETE FROM v_customers also deletes rows of shop.orders (through view "
        "shop.v_customers, then trigger shop.trg_x AFTER DELETE)"
    )
    # a view the gateway cannot read may be over any table: every known trigger fires
    hidden = WriteThrough(views=[ViewBases("shop.v_any", None)], triggers=[TRG_X])
    assert ("DELETE", "shop.orders") in reached(hidden, "DELETE", "shop.v_any")


def test_a_trigger_delete_meets_the_rule_and_a_harmless_trigger_does_not() -> None:
    harmless = Trigger(
        "shop.t_log", "shop.invoices", "DELETE", "AFTER", frozenset({("INSERT", "shop.log")})
    )
    through = WriteThrough(triggers=[TRG_X, harmless])
    delete = decide(one("DELETE FROM customers WHERE id = 1"), AGENT, "shop", (HOLD,), through)
    assert delete.action is RuleAction.REVIEW and delete.rule == "hold-orders"
    assert (
        "DELETE FROM customers also deletes rows of shop.orders (through trigger "
        "shop.trg_x AFTER DELETE)" in delete.reason
    )
    other = one("DELETE FROM invoices WHERE id = 1")
    assert not decide(other, AGENT, "shop", (PROTECT,), through).refused


def test_trigger_of_reads_a_row_of_information_schema_triggers() -> None:
    row = ("shop", "trg_x", "DELETE", "shop.customers", "AFTER")
    body = "BEGIN DELETE FROM orders WHERE v = OLD.id; END"
    assert trigger_of(*row, body, "STRICT_TRANS_TABLES") == TRG_X
    assert trigger_of(*row, "CALL p()", "").writes is None


def test_a_new_trigger_is_not_hidden_by_a_cached_verdict_nor_a_prepare() -> None:
    policy = Policy(PolicyConfig(), (PROTECT,))
    session = SessionPolicy(policy, AGENT, "shop", None)
    text = b"DELETE FROM customers WHERE id = ?"
    query = bytes([Command.QUERY]) + b"DELETE FROM customers WHERE id = 1"
    prepare = bytes([Command.STMT_PREPARE]) + text
    execute = bytes([Command.STMT_EXECUTE]) + (7).to_bytes(4, "little") + bytes(5)

    def decided(n: int, payload: bytes) -> str | None:
        cmd = ClientCommand(n, payload[0], payload, payload)
        refusal = session.decide(cmd, 0, {7: text}).refusal
        return None if refusal is None else refusal.reason

    policy.set_through("db1", WriteThrough())
    assert decided(1, query) is None
    assert decided(2, prepare) is None
    policy.set_through("db1", WriteThrough(triggers=[TRG_X]))  # made outside the gateway
    assert decided(3, query) is not None
    why = decided(4, execute)
    assert why is not None and "(through trigger shop.trg_x AFTER DELETE)" in why
    assert why.endswith("prepare it again to have it decided")


def test_a_statement_making_a_trigger_has_what_writes_reach_read_again() -> None:
    allow = RuleConfig("stored-code-ok", ("CREATE TRIGGER", "DROP TRIGGER"), RuleAction.ALLOW)
    policy = Policy(PolicyConfig(), (allow, PROTECT))
    session = SessionPolicy(policy, AGENT, "shop", None)
    for n, sql in enumerate(
        (
            b"CREATE TRIGGER t AFTER DELETE ON customers FOR EACH ROW DELETE FROM orders",
            b"DROP TRIGGER t",
        )
    ):
        payload = bytes([Command.QUERY]) + sql
        verdict = session.decide(ClientCommand(n, Command.QUERY, payload, payload), 0, {})
        assert verdict.refusal is None and verdict.parts[0].catalog, sql


# ------------------------------------------------- SQL-level PREPARE and EXECUTE name


class Named:
    """A session that sends texts (COM_QUERY) and has them answered, numbering them."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.session = SessionPolicy(policy, AGENT, "shop", None)
        self.n = 0

    def send(self, sql: str, error: int | None = None) -> Verdict:
        """The verdict on ``sql``; what runs is answered (``error``: with that error)."""
        self.n += 1
        payload = bytes([Command.QUERY]) + sql.encode()
        cmd = ClientCommand(self.n, Command.QUERY, payload, payload)
        verdict = self.session.decide(cmd, 0, {})
        if not verdict.refused:
            self.session.completed(cmd, error, 0)
        return verdict

    def refusal(self, sql: str) -> Decision | None:
        return self.send(sql).refusal


DELETE_ONE = "PREPARE s FROM 'DELETE FROM customers WHERE id = 1'"


def test_an_execute_of_a_name_is_decided_again_when_its_prepare_reached_less() -> None:
    """`PREPARE s FROM 'DELETE FROM customers ...'` before an operator added a foreign
    key ON DELETE CASCADE into a protected table: each later `EXECUTE s` kept the
    decision of the PREPARE and deleted the protected orders, while a new DELETE was
    refused."""
    named = Named(Policy(PolicyConfig(), (PROTECT,)))
    assert named.refusal(DELETE_ONE) is None  # nothing cascades yet
    assert named.refusal("EXECUTE s") is None
    named.policy.set_through("db1", SHOP)
    for sql in (
        "EXECUTE s",
        "EXECUTE S USING @a, 2",  # the server ignores a name's case
        "SET STATEMENT max_statement_time = 1 FOR EXECUTE s",  # at any depth
    ):
        verdict = named.send(sql)
        refusal = verdict.refusal
        assert verdict.refused and refusal is not None, sql
        assert refusal.action is RuleAction.BLOCK and refusal.rule == "protect-orders"
        assert "DELETE FROM customers also deletes rows of shop.orders" in refusal.reason
        assert refusal.reason.endswith(
            "The statement `s` was prepared before the gateway knew this: PREPARE s again to "
            "have it decided"
        )
        assert verdict.ledger_fields(0)[:3] == ("blocked", "protect-orders", refusal.message)
    # a name prepared before a later view: an UPDATE through it
    assert named.refusal("PREPARE u FROM 'UPDATE v_orders SET v = 1 WHERE id = 1'") is not None
    named.policy.set_through("db1", WriteThrough())
    assert named.refusal("PREPARE u FROM 'UPDATE v_orders SET v = 1 WHERE id = 1'") is None
    named.policy.set_through("db1", SHOP)
    assert named.refusal("EXECUTE u") is not None
    # a PREPARE that failed on the server leaves no text that vouches for the name
    assert named.send("PREPARE s FROM 'SELECT 1'", error=1064).refusal is None
    assert named.send("EXECUTE s").refusal is not None


def test_an_execute_decided_under_what_writes_reach_now_is_not_decided_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing changed since the PREPARE: its EXECUTEs are not read again; nor after
    one was decided again and found to reach nothing protected."""
    policy = Policy(PolicyConfig(), (PROTECT,))
    named = Named(policy)
    policy.set_through("db1", SHOP)
    read: list[bytes] = []
    classify_text = policy.classify

    def counted(sql: bytes, mode: LexMode, backslash_unknown: bool) -> tuple[Classification, ...]:
        read.append(sql)
        return classify_text(sql, mode, backslash_unknown)

    monkeypatch.setattr(policy, "classify", counted)
    reads = b"SELECT name FROM customers WHERE id = 1"
    assert named.refusal("PREPARE r FROM '" + reads.decode() + "'") is None
    assert named.refusal("EXECUTE r") is None
    assert reads not in read  # decided under this very WriteThrough
    policy.set_through("db1", WriteThrough([CASCADE], [V_ORDERS, ViewBases("s.v", None)]))
    assert named.refusal("EXECUTE r") is None  # read again: it reaches nothing protected
    assert read.count(reads) == 1
    assert named.refusal("EXECUTE r") is None
    assert read.count(reads) == 1  # vouched for as things are now


def test_a_name_prepared_again_after_the_change_is_decided_as_it_is_now() -> None:
    named = Named(Policy(PolicyConfig(), (PROTECT,)))
    assert named.refusal(DELETE_ONE) is None
    assert named.refusal("PREPARE t FROM 'DELETE FROM invoices WHERE id = 1'") is None
    named.policy.set_through("db1", SHOP)
    assert named.refusal("EXECUTE s") is not None
    assert named.refusal("EXECUTE t") is None  # decided again: it reaches nothing protected
    refusal = named.refusal(DELETE_ONE)  # its PREPARE is decided as it stands: refused
    assert refusal is not None and refusal.rule == "protect-orders"
    assert not refusal.reason.endswith("again to have it decided")
    assert named.refusal("EXECUTE s") is not None  # (that PREPARE never ran)
    assert named.refusal("PREPARE s FROM 'SELECT name FROM customers WHERE id = 1'") is None
    assert named.refusal("EXECUTE s") is None


HOLD_CUSTOMERS = RuleConfig("hold-customers", ("DELETE",), RuleAction.REVIEW, ("shop.customers",))


def test_a_rule_that_matched_at_the_prepare_does_not_hide_one_that_matches_only_now() -> None:
    """In shadow mode a prepare held by a rule on customers runs; a foreign key made
    since cascades its DELETE into orders, which a later rule blocks. The execute was
    recorded as allowed: the first rule, matching then and now, hid the one that matches
    only now (at the SQL level and in the binary protocol)."""
    named = Named(Policy(PolicyConfig(mode=PolicyMode.SHADOW), (HOLD_CUSTOMERS, PROTECT)))
    held = named.send(DELETE_ONE).refusal
    assert held is not None and held.rule == "hold-customers"
    session = named.session
    text = b"DELETE FROM customers WHERE id = ?"
    prepare = bytes([Command.STMT_PREPARE]) + text
    execute = bytes([Command.STMT_EXECUTE]) + (7).to_bytes(4, "little") + bytes(5)
    held = session.decide(ClientCommand(90, prepare[0], prepare, prepare), 0, {}).refusal
    assert held is not None and held.rule == "hold-customers"
    named.policy.set_through("db1", SHOP)
    verdict = named.send("EXECUTE s")
    assert verdict.shadow and verdict.refusal is not None
    assert verdict.refusal.rule == "protect-orders"
    cmd = ClientCommand(91, execute[0], execute, execute)
    verdict = session.decide(cmd, 0, {7: text})
    assert verdict.shadow and verdict.refusal is not None
    assert verdict.refusal.rule == "protect-orders"


def test_a_name_prepared_again_earlier_in_the_same_text_runs_that() -> None:
    named = Named(Policy(PolicyConfig(), (PROTECT,)))
    assert named.refusal(DELETE_ONE) is None
    named.policy.set_through("db1", SHOP)
    # the EXECUTE before the new PREPARE runs the DELETE prepared before the key
    refusal = named.refusal("EXECUTE s; PREPARE s FROM 'SELECT 1'")
    assert refusal is not None and refusal.rule == "protect-orders"
    assert named.refusal("PREPARE s FROM 'SELECT 1'; EXECUTE s") is None
    assert named.refusal("EXECUTE s") is None  # the name holds the SELECT now


def test_an_execute_in_the_middle_of_a_text_refuses_the_text() -> None:
    named = Named(Policy(PolicyConfig(), (PROTECT,)))
    assert named.refusal(DELETE_ONE) is None
    named.policy.set_through("db1", SHOP)
    verdict = named.send("SELECT 1; EXECUTE s; SELECT 2")
    assert verdict.refused
    assert [p.decision.rule for p in verdict.parts] == [
        "default-allow",
        "protect-orders",
        "default-allow",
    ]
    decision, rule, reason, _ = verdict.ledger_fields(0)
    assert (decision, rule) == ("blocked", "protect-orders")
    assert reason is not None and reason.startswith("not run: statement 2 of the same text")
    assert verdict.ledger_fields(1)[:2] == ("blocked", "protect-orders")


def test_a_deallocated_or_reset_name_holds_no_text_that_is_decided_again() -> None:
    """DEALLOCATE forgets what a name was prepared from: an EXECUTE of it after a change
    is refused as unknown (the server holds nothing under it, unless the DEALLOCATE
    did not run), not decided by the old text; COM_RESET_CONNECTION forgets all names."""
    named = Named(Policy(PolicyConfig(), (PROTECT,)))
    assert named.refusal(DELETE_ONE) is None
    assert named.refusal("DEALLOCATE PREPARE s") is None
    named.policy.set_through("db1", SHOP)
    refusal = named.refusal("EXECUTE s")
    assert refusal is not None and refusal.rule == "prepared-unknown"
    assert refusal.reason.endswith("PREPARE s again to have it decided")
    assert named.refusal("PREPARE s FROM 'SELECT 1'") is None
    assert named.refusal("EXECUTE s") is None
    named.policy.set_through("db1", WriteThrough())
    assert named.refusal(DELETE_ONE) is None
    named.n += 1
    reset = bytes([Command.RESET_CONNECTION])
    cmd = ClientCommand(named.n, Command.RESET_CONNECTION, reset, reset)
    named.session.decide(cmd, 0, {})
    named.session.completed(cmd, None, 0)
    named.policy.set_through("db1", SHOP)
    assert named.refusal("EXECUTE s") is None  # the server's to refuse: nothing is prepared


def test_names_beyond_those_kept_and_texts_too_long_to_keep_are_refused_after_a_change() -> None:
    named = Named(Policy(PolicyConfig(), (PROTECT,)))
    assert named.refusal("PREPARE first FROM 'SELECT 1'") is None
    for i in range(256):
        assert named.refusal(f"PREPARE n{i} FROM 'SELECT 1'") is None
    long = "SELECT 1" + " " * (16 * 1024) + "FROM customers"
    assert named.refusal(f"PREPARE long FROM '{long}'") is None
    assert named.refusal("EXECUTE first; EXECUTE long") is None  # nothing changed since
    named.policy.set_through("db1", SHOP)
    for name in ("first", "long"):
        refusal = named.refusal(f"EXECUTE {name}")
        assert refusal is not None and refusal.rule == "prepared-unknown", name
    assert named.refusal("EXECUTE n255") is None


def test_in_shadow_mode_an_execute_decided_again_is_recorded_not_refused() -> None:
    named = Named(Policy(PolicyConfig(mode=PolicyMode.SHADOW), (PROTECT,)))
    assert named.refusal(DELETE_ONE) is None
    named.policy.set_through("db1", SHOP)
    verdict = named.send("EXECUTE s")
    assert verdict.shadow and not verdict.refused
    assert verdict.refusal is not None and verdict.refusal.rule == "protect-orders"
    decision, rule, reason, extra = verdict.ledger_fields(0)
    assert (decision, rule, extra) == ("allowed", "protect-orders", {"shadow_decision": "blocked"})
    assert reason is not None and reason.startswith("shadow mode: sqlgate: blocked by rule")
