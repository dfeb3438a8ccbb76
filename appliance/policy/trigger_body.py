"""Which tables a trigger's body writes, and how, as far as the gateway can read it.

A trigger runs its body on every row its table's write changes: what the body writes,
a rule on that table must see (``through.Trigger``). The body is one statement or a
compound statement (``BEGIN ... END``, ``IF ... THEN ... END IF``) of several; each
statement is read with the classifier, its tables in the trigger's schema when written
bare. Statements that only read or set variables (``SELECT ... INTO``, ``SET``,
``DECLARE``, ``SIGNAL``) write nothing; every branch of an IF counts.

Fail closed: a body holding anything else (CALL, dynamic SQL, a loop, a CASE statement,
a handler, a stored function call, an executable comment, a text the classifier does not
understand, an sql_mode the gateway does not read) gives None: it may write any table.
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.policy.classify import Classification, classify
from appliance.policy.lexer import LexError, LexMode, Tok, Token, punct_at, tokenize, word_at
from appliance.policy.rules import unreadable_modes
from appliance.policy.through import WRITE_KINDS

__all__ = ["body_writes"]

#: Kinds that change no table but the sequences they take values of: they read, or set
#: a variable (NEW.x too).
_READS_ONLY = frozenset({"SELECT", "SET", "DO"})

#: Statements the classifier does not know that change no table.
_NO_CHANGE = frozenset({"SIGNAL", "RESIGNAL", "LEAVE", "ITERATE"})


class _Unread(Exception):
    """The body holds something the gateway cannot read."""


def body_writes(schema: str, body: bytes, sql_mode: str = "") -> frozenset[tuple[str, str]] | None:
    """The (kind, "schema.table") writes of a trigger body of ``schema`` created under
    ``sql_mode`` (as ``information_schema.TRIGGERS`` says them); None when the gateway
    cannot read the body whole."""
    modes = {m.strip().upper() for m in sql_mode.split(",")}
    if unreadable_modes(sql_mode) or b"/*!" in body or b"/*M!" in body:
        return None
    mode = LexMode(
        ansi_quotes="ANSI_QUOTES" in modes, no_backslash_escapes="NO_BACKSLASH_ESCAPES" in modes
    )
    try:
        tokens = tokenize(body, mode)
    except LexError:
        return None
    reader = _Body(body, tokens, mode, schema)
    try:
        end = reader.statement(0)
        if punct_at(tokens, end, ";"):
            end += 1
        if end != len(tokens) or not tokens:
            return None
    except _Unread:
        return None
    return frozenset(reader.writes)


class _Body:
    """Reads a body's statements from its tokens, gathering what they write."""

    def __init__(self, text: bytes, tokens: Sequence[Token], mode: LexMode, schema: str) -> None:
        self.text = text
        self.tokens = tokens
        self.mode = mode
        self.schema = schema
        self.writes: set[tuple[str, str]] = set()

    def statement(self, i: int) -> int:
        """Read the statement at ``i``; the index after it (its ';' not included)."""
        tokens = self.tokens
        labelled = i < len(tokens) and tokens[i].kind in (Tok.WORD, Tok.IDENT)
        if labelled and punct_at(tokens, i + 1, ":"):
            i += 2
            if word_at(tokens, i) != "BEGIN":
                raise _Unread  # a labelled loop
        w = word_at(tokens, i)
        if w == "BEGIN":
            i += 1
            if word_at(tokens, i) == "NOT" and word_at(tokens, i + 1) == "ATOMIC":
                i += 2
            i = self._until(i, ("END",)) + 1
            if i < len(tokens) and tokens[i].kind in (Tok.WORD, Tok.IDENT):
                i += 1  # END label
            return i
        if w == "IF":
            return self._if(i)
        if w in ("CASE", "LOOP", "WHILE", "REPEAT", "FOR"):
            raise _Unread
        end = i
        while end < len(tokens) and not punct_at(tokens, end, ";"):
            end += 1
        self._simple(i, end)
        return end

    def _until(self, i: int, ends: tuple[str, ...]) -> int:
        """Read statements, each ended by ';', up to one of ``ends``; its index."""
        while True:
            if i >= len(self.tokens):
                raise _Unread  # a block left open
            if word_at(self.tokens, i) in ends:
                return i
            i = self.statement(i)
            if not punct_at(self.tokens, i, ";"):
                raise _Unread
            i += 1

    def _if(self, i: int) -> int:
        """IF cond THEN ... [ELSEIF cond THEN ...] [ELSE ...] END IF: every branch."""
        tokens = self.tokens
        while True:
            then = self._then(i + 1)
            self._expression(i + 1, then)
            i = self._until(then + 1, ("ELSEIF", "ELSE", "END"))
            if word_at(tokens, i) != "ELSEIF":
                break
        if word_at(tokens, i) == "ELSE":
            i = self._until(i + 1, ("END",))
        if word_at(tokens, i + 1) != "IF":
            raise _Unread
        return i + 2

    def _then(self, i: int) -> int:
        """The THEN that ends an IF's condition starting at ``i`` (not a CASE's)."""
        depth = 0  # CASE expressions and parentheses open
        for j in range(i, len(self.tokens)):
            t = self.tokens[j]
            if t.kind == Tok.PUNCT:
                if t.text == ";":
                    break
                depth += {"(": 1, ")": -1}.get(t.text, 0)
            elif t.kind == Tok.WORD:
                if t.text == "THEN" and depth == 0:
                    return j
                depth += {"CASE": 1, "END": -1}.get(t.text, 0)
        raise _Unread

    def _simple(self, start: int, end: int) -> None:
        """One statement of tokens ``start`` to ``end`` (excluded): its writes."""
        if start >= end:
            raise _Unread  # an empty statement is not one MariaDB reads here
        w = word_at(self.tokens, start)
        if w in _NO_CHANGE:
            return
        if w == "DECLARE":
            self._declare(start, end)
            return
        c = self._one(start, end, b"")
        if c.kind not in _READS_ONLY and (c.kind not in WRITE_KINDS or not c.writes):
            raise _Unread
        for table in c.writes:
            name = table if "." in table else f"{self.schema}.{table}"
            if table in c.reads:  # a sequence it takes a value of (NEXTVAL) changes
                self.writes.add(("UPDATE", name))
            if c.kind in _READS_ONLY:
                continue
            self.writes.add((c.kind, name))
            if c.kind == "REPLACE":  # it deletes the rows it collides with, and inserts
                self.writes.update({("DELETE", name), ("INSERT", name)})
            if c.kind == "INSERT" and "on_duplicate_update" in c.flags:
                self.writes.add(("UPDATE", name))

    def _declare(self, start: int, end: int) -> None:
        """DECLARE of variables (their DEFAULT read as an expression) or a condition;
        a cursor or a handler is not read."""
        words = {word_at(self.tokens, j) for j in range(start + 1, min(start + 4, end))}
        if words & {"CURSOR", "HANDLER"}:
            raise _Unread
        for j in range(start + 1, end):
            if word_at(self.tokens, j) == "DEFAULT":
                self._expression(j + 1, end)
                return

    def _expression(self, start: int, end: int) -> None:
        """An expression (a condition, a default) must only read."""
        if start >= end:
            raise _Unread
        if self._one(start, end, b"SELECT ").kind != "SELECT":
            raise _Unread

    def _one(self, start: int, end: int, prefix: bytes) -> Classification:
        """The classification of tokens ``start`` to ``end`` (excluded) after ``prefix``,
        when the gateway understands it and it calls no stored function."""
        text = prefix + self.text[self.tokens[start].start : self.tokens[end - 1].end]
        found = classify(text, self.mode)
        if len(found) != 1:
            raise _Unread
        c = found[0]
        if c.problem is not None or c.inner is not None or c.stored_functions:
            raise _Unread
        if "prepare_from_variable" in c.flags:
            raise _Unread
        return c
