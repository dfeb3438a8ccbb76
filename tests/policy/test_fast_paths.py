"""The shortcuts of the uncached decision read a text exactly as the long way does: the
outline from shape()'s matches, the comments blanked without default_mode_text(), and
the gate's caches keeping few objects for the garbage collector to walk."""

from __future__ import annotations

import gc
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp as sqlglot_exp

from appliance.config import PolicyConfig
from appliance.mysql.constants import Command
from appliance.mysql.relay import ClientCommand
from appliance.policy import classify as classify_module
from appliance.policy.classify import _parse_text, _View, classify
from appliance.policy.gate import Policy, SessionPolicy
from appliance.policy.lexer import LexError, LexMode, default_mode_text, outline, shape
from appliance.policy.rules import Subject

MODES = [LexMode(), LexMode(ansi_quotes=True), LexMode(no_backslash_escapes=True)]

_FRAGMENTS = [
    " ",
    "\n",
    "SELECT",
    "a",
    "t.",
    "5",
    ".5",
    "1abc",
    "'x'",
    "'y\\''",
    '"q"',
    "`i`",
    "@v",
    "?",
    ";",
    ",",
    "(",
    ")",
    "-",
    "--",
    "-- c\n",
    "# c\n",
    "/* c */",
    "/*c*/",
    "/*! x */",
    "/*+ h */",
    "*",
    "/",
    "X'0A'",
    "N",
    "$",
    "\\",
    "BEGIN",
    "END",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=25), st.sampled_from(MODES))
def test_outline_after_shape_is_the_outline(parts: list[str], mode: LexMode) -> None:
    sql = "".join(parts).encode()
    fresh = bytes(bytearray(sql))  # another object: no match of shape() to reuse
    try:
        expected = outline(fresh, mode)
    except LexError as err:
        shape(sql, mode)
        try:
            outline(sql, mode)
        except LexError as again:
            assert str(again) == str(err)
        else:
            raise AssertionError("outline() after shape() read what does not lex")
        return
    shape(sql, mode)
    assert outline(sql, mode) == expected


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=25), st.sampled_from(MODES))
def test_blanked_comments_are_the_default_mode_text(parts: list[str], mode: LexMode) -> None:
    sql = "".join(parts).encode()
    try:
        outlines = outline(sql, mode)
    except LexError:
        return
    for o in outlines:
        if o.comments is None:
            continue
        assert not o.plain
        raw = sql[o.start : o.end]
        view = _View(raw, o.skeleton, o.plain, o.executable_comment, mode)
        view.comments = tuple((s - o.start, e - o.start) for s, e in o.comments)
        assert _parse_text(view) == default_mode_text(raw, mode).decode("utf-8", "replace")


def test_a_trailing_dash_dash_is_left_to_default_mode_text() -> None:
    # '--' before ';' is two minus signs in the text, a comment in the statement alone
    sql = b"SELECT 1 /* c */ --;SELECT 2"
    assert outline(sql, LexMode())[0].comments is None
    assert outline(b"SELECT 1 /* c */ -- x", LexMode())[0].comments == ((9, 16), (17, 21))


def _join(n: int) -> bytes:
    return (
        f"SELECT o.id, c.name AS name{n} FROM orders o JOIN customers c "
        f"ON c.id = o.customer_id WHERE o.total > {n} /* request {n} */"
    ).encode()


def test_a_comment_changes_nothing_the_classifier_reads() -> None:
    plain = classify(
        b"SELECT o.id, c.name AS name7 FROM orders o JOIN customers c "
        b"ON c.id = o.customer_id WHERE o.total > 7",
        LexMode(),
    )
    commented = classify(_join(7), LexMode())
    assert [(c.kind, c.reads, c.functions, c.flags, c.problem) for c in commented] == [
        (c.kind, c.reads, c.functions, c.flags, c.problem) for c in plain
    ]


def test_uncached_decisions_keep_few_objects_alive() -> None:
    session = SessionPolicy(
        Policy(PolicyConfig(), ()), Subject("agent", frozenset({"agents"}), "orders"), "shop", 45
    )
    for n in range(50):  # the caches' first entries, the shared verdict and name sets
        session.decide(ClientCommand(n, 3, b"\x03" + _join(n), b""), 0, {})
    gc.collect()
    before = len(gc.get_objects())
    for n in range(50, 250):
        verdict = session.decide(ClientCommand(n, 3, b"\x03" + _join(n), b""), 0, {})
        assert verdict.refusal is None
    gc.collect()
    # an entry, its classifications' tuple and the classification: the keys are bytes,
    # the verdict and the sets of names are shared, the parsed trees freed
    assert (len(gc.get_objects()) - before) / 200 <= 3.5


def test_a_new_comment_is_decided_by_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents and ORMs put a request id or a trace in a comment; the statement is still
    decided from the cached classification of its shape, not parsed again."""
    import appliance.policy.gate as gate

    parsed: list[bytes] = []
    real = gate.classify_uncertain

    def counting(sql: bytes, *args: object, **kwargs: object) -> object:
        parsed.append(sql)
        return real(sql, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gate, "classify_uncertain", counting)
    session = SessionPolicy(
        Policy(PolicyConfig(), ()), Subject("agent", frozenset({"agents"}), "orders"), "shop", 45
    )
    texts = [
        b"SELECT c FROM t WHERE id = 5 /* traceparent='00-4bf92f-01' */",
        b"SELECT c FROM t WHERE id = 6 /* traceparent='00-a3ce92-01' */",
        b"SELECT c FROM t WHERE id = 7 -- request 3",
        b"SELECT c FROM t WHERE id = 8 /*+ NO_BKA(t) */",  # a hint is read: a new shape
    ]
    for n, sql in enumerate(texts):
        verdict = session.decide(ClientCommand(n, 3, b"\x03" + sql, b""), 0, {})
        assert verdict.refusal is None
    assert parsed == [texts[0], texts[3]]


@pytest.mark.parametrize("comments", [("/* a */\n", "-- b\n"), ("# it's\n", "/*c*/\n")])
def test_texts_of_one_shape_read_alike_whatever_their_comments_say(
    comments: tuple[str, str],
) -> None:
    """The by-shape cache hands one classification to every text of a shape: across the
    whole corpus, a comment's contents never change what the classifier reads."""
    from tests.policy.corpus import CORPUS

    checked = 0
    for case in CORPUS:
        head, sep, tail = case.sql.partition(" ")
        if not sep:
            continue
        a, b = (f"{head} {c} {tail}".encode() for c in comments)
        shape_a, shape_b = shape(a, LexMode()), shape(b, LexMode())
        if shape_a is None or shape_a != shape_b:
            continue
        first, second = classify(a, LexMode()), classify(b, LexMode())
        assert [replace(c, text="") for c in first] == [replace(c, text="") for c in second]
        checked += 1
    assert checked > 250


def test_the_text_caches_hold_a_bounded_amount_of_text() -> None:
    """Distinct large statements (each up to max_statement_bytes) must not grow the
    caches by gigabytes: they are emptied before they hold more than their budget."""
    from appliance.policy import gate

    cache = gate._Cache()
    table = cache.table((LexMode(), False))
    entry = gate._Entry(())
    for n in range(200):
        cache.put(table, str(n).encode() + b"x" * (1 << 20), entry)
        assert cache.bytes <= gate._CACHE_BYTES
    assert sum(len(key) for key in table) <= gate._CACHE_BYTES


def test_a_shape_shared_with_hex_literals_keeps_an_always_true_where_refused() -> None:
    """DELETE ... WHERE id = 0x1 OR id <> 0x2 was read as selective (its hex literals
    compared by value) and cached by shape, which the shape shares with WHERE id = 1 OR
    id <> 1: that DELETE of every row was then allowed from the cache."""
    policy = Policy(PolicyConfig(), ())
    session = SessionPolicy(policy, Subject("agent", frozenset({"agents"}), "orders"), "shop", 45)
    for i, sql in enumerate(
        (b"DELETE FROM t WHERE id = 0x1 OR id <> 0x2", b"DELETE FROM t WHERE id = 1 OR id <> 1")
    ):
        payload = bytes([Command.QUERY]) + sql
        verdict = session.decide(ClientCommand(i + 1, Command.QUERY, payload, payload), 0, {})
        assert verdict.refusal is not None and verdict.refusal.rule == "delete-without-where"


def test_a_literal_of_another_type_is_not_decided_by_shape() -> None:
    """SHOW VARIABLES LIKE 0x41 has the shape of SHOW VARIABLES LIKE 'x', but another
    parse (the gateway does not understand it): it took the cached verdict of the first
    text when that came first. The shape cache is keyed by the literals' types too."""
    policy = Policy(PolicyConfig(), ())
    session = SessionPolicy(policy, Subject("agent", frozenset({"agents"}), "orders"), "shop", 45)
    texts = (b"SHOW VARIABLES LIKE 'x'", b"SHOW VARIABLES LIKE 0x41")
    rules = []
    for i, sql in enumerate(texts):
        payload = bytes([Command.QUERY]) + sql
        verdict = session.decide(ClientCommand(i + 1, Command.QUERY, payload, payload), 0, {})
        rules.append(None if verdict.refusal is None else verdict.refusal.rule)
    assert rules == [None, "not-understood"]


# The first look of _keyword_before_dot as it was written before it read the text
# backwards: every word it found, the backward scan must find too.
_FORWARD_WORD_BEFORE_DOT = re.compile(r"\b([A-Z_][A-Z0-9_$]*+)\.(?=[\w$]|[^\x00-\x7f])")

_DOT_FRAGMENTS = [
    " ",
    "FROM",
    "from",
    "select",
    "current_date",
    "int8",
    "t",
    "o",
    "x1",
    "_",
    "$",
    "é",
    "9",
    ".",
    "(",
    "`",
    "@",
    "\u00a0",
]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(_DOT_FRAGMENTS), max_size=12))
def test_the_backward_look_misses_no_keyword_before_a_dot(parts: list[str]) -> None:
    text = "".join(parts)
    forward = set(_FORWARD_WORD_BEFORE_DOT.findall(text.upper()))
    if forward & classify_module._GLOT_KEYWORDS:
        assert classify_module._keyword_before_dot(text)


@pytest.mark.parametrize(
    "text",
    [
        "SELECT from.x FROM t",
        "(select.a)",
        "SELECT $ FROM t WHERE x=select.y",
        "é FROM.x",
        "SELECT current_date.x",
        "SELECT INT8.x",
    ],
)
def test_a_keyword_before_a_dot_is_found(text: str) -> None:
    assert classify_module._keyword_before_dot(text)


def test_a_statement_without_one_is_not_looked_at_twice() -> None:
    assert not classify_module._keyword_before_dot(
        "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id"
    )


def test_the_walk_of_a_tree_unlinks_every_node() -> None:
    """Parent links make a parsed tree a cycle the garbage collector must find; after
    _Tree's walk, identifiers included, none is left, and the walk meets the other nodes
    in bfs()'s order."""
    text = (
        "WITH w AS (SELECT id FROM a) SELECT o.id, c.name AS n, f(o.x) FROM orders o "
        "JOIN customers c ON c.id = o.customer_id JOIN p USING (id, k) "
        "WHERE o.total > (SELECT MAX(id) FROM w) ORDER BY o.created_at DESC LIMIT 5"
    )
    root = classify_module._parse(text)
    everything = list(root.bfs())
    inner = [n for n in everything if type(n) is not sqlglot_exp.Identifier]
    assert any(type(n) is sqlglot_exp.Identifier for n in everything)
    assert [id(n) for n in classify_module._inner_nodes(root)] == [id(n) for n in inner]
    root = classify_module._parse(text)
    everything = list(root.bfs())
    tree = classify_module._Tree(root, text)
    assert [n for n in everything if n.parent is not None] == []
    assert {classify_module._table_name(t) for t in tree.tables} == {
        "a",
        "orders",
        "customers",
        "w",
        "p",
    }
