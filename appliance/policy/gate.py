"""The policy as a session sees it: one verdict per client command, pure.

``Policy`` is the gateway-wide part (rules, caches, the runaway-agent guard);
``SessionPolicy`` follows what one session's server reads statements with (client
character set, ``NO_BACKSLASH_ESCAPES`` from the server's status flags, the default
schema) and turns each command into a ``Verdict``: a decision for every statement of
its text. The whole command is refused when any statement is.

Session state that changes lexing is followed, not guessed: ANSI_QUOTES is never known
(a text with a double quote is read both ways, see ``classify_uncertain``);
NO_BACKSLASH_ESCAPES is taken from every answer's status flags, and is unknown while a
statement that may change ``sql_mode`` is on its way; a statement that changes the
character set or ``sql_mode`` must be the last of its text, so nothing after it is
read with the old rules.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from itertools import repeat
from typing import TypeVar

from appliance.config import (
    DEFAULT_MAX_PREPARED,
    OversizedAction,
    PolicyConfig,
    PolicyMode,
    RuleAction,
    RuleConfig,
)
from appliance.mysql.charsets import ASCII_CHANGING, UNREADABLE_NAMES, collation_charset, read_text
from appliance.mysql.constants import Command, ServerStatus
from appliance.mysql.params import MAX_VALUE, ExecuteParams, literal_text
from appliance.mysql.relay import ClientCommand
from appliance.policy.classify import (
    MAX_STATEMENTS,
    NOT_UNDERSTOOD,
    Classification,
    Readings,
    bind,
    classify_uncertain,
    is_percent_only,
    mask_rewrite,
    masked_uses,
    reference_readings,
    shown_values,
    sql_string,
    unreadable,
    using_shown,
    using_values,
    with_bound,
)
from appliance.policy.lexer import (
    LexError,
    LexMode,
    Statement,
    Tok,
    Token,
    literal_types,
    punct_at,
    shape,
    split_statements,
    string_bytes,
    tokenize,
    word_at,
)
from appliance.policy.masking import SessionMasker
from appliance.policy.rules import (
    ALLOW,
    CHARSET_VARIABLES,
    STORED_CODE,
    UNSAFE_CHARSETS,
    WITHOUT_WHERE,
    Decision,
    Subject,
    decide,
    unreadable_modes,
)
from appliance.policy.through import WriteThrough

__all__ = [
    "MAX_STATEMENTS",
    "OFFLOAD_BYTES",
    "Classified",
    "Part",
    "Policy",
    "SessionPolicy",
    "TextJob",
    "Verdict",
    "classify_text",
    "unclassified",
]


OFFLOAD_BYTES = 8 * 1024
"""Texts at least this long, when not decided before, are classified by ``classify_text``
in a worker process (see ``appliance.offload``): parsing takes about 2 µs a byte, so a
megabyte of SQL would hold the event loop, and every other session, for seconds. Some
shapes take 6 to 8 µs a byte (``SELECT ----...1``, deep parentheses): at 32 KiB one
text held the loop 0.2 s, at 8 KiB 25 to 50 ms."""

_NO_BACKSLASH_ESCAPES = int(ServerStatus.NO_BACKSLASH_ESCAPES)

#: Login collation ids of utf8mb3 and utf8mb4 (MariaDB's ``information_schema.collations``
#: below 256, the ids a handshake can carry): text in them is read as it is.
_UTF8_COLLATIONS = frozenset({33, 45, 46, 83, *range(192, 216), *range(223, 248)})

#: Login collation ids of the single-byte character sets (latin1, ascii, binary, cp1251,
#: ...): bytes >= 0x80 are read only inside quotes and comments. Every other id (big5,
#: sjis, gbk, cp932, an id the server does not know and replaces with its own default)
#: leaves the session ASCII only.
_EIGHT_BIT_COLLATIONS = frozenset(
    {
        *range(2, 12), 14, 15, 16, 18, *range(20, 24), 25, 26, 27, 29, 30, 31, 32, 34,
        *range(36, 45), *range(47, 54), 57, 58, 59, *range(63, 76), *range(77, 83), 89, 92,
        93, 94, 99,
    }
)  # fmt: skip

#: Variables whose change alters how the server reads the next statement's bytes.
_LEXING_VARIABLES = CHARSET_VARIABLES | {"sql_mode"}
#: Variables that set the character set of result names (masking reads them).
_RESULTS_VARIABLES = frozenset({"names", "character set", "character_set_results"})
#: Variables the session follows: a statement that sets one is decided by the session.
_SESSION_VARIABLES = _LEXING_VARIABLES | _RESULTS_VARIABLES
# The word SET, which every statement that sets a variable has (SET, SET STATEMENT ...
# FOR); in a string or a quoted name it only costs a parse.
_MAY_SET = re.compile(rb"(?i)(?<![a-z_$])set(?![a-z0-9_$])")
_MAY_CALL = re.compile(rb"(?i)(?<![a-z_$])call(?![a-z0-9_$])")

_CACHE_LIMIT = 50_000
_CACHE_BYTES = 64 << 20

#: Commands that name a prepared statement by its id.
_NAMES_A_STATEMENT = frozenset(
    {
        Command.STMT_EXECUTE,
        Command.STMT_FETCH,
        Command.STMT_RESET,
        Command.STMT_CLOSE,
        Command.STMT_SEND_LONG_DATA,
    }
)

_RELAYED = RuleAction.ALLOW


@dataclass(frozen=True, slots=True)
class Part:
    """One statement of a command, as the ledger records it."""

    sql: str | None  # None: the command's whole text (a text of one statement)
    kind: str
    decision: Decision
    functions: frozenset[str] = frozenset()  # what it calls (the row estimate checks)
    # it may create, change, rename or drop a view, a table or a trigger (masking's view
    # catalog and what writes reach are read again): CREATE VIEW, CREATE TABLE, RENAME
    # TABLE, CREATE TRIGGER... itself, or run by EXECUTE IMMEDIATE, EXECUTE or a prepared
    # statement
    catalog: bool = False
    span: tuple[int, int] | None = None  # of a text of several: its bytes in the text
    # ``sql_hex`` and ``sql_charset`` of a text read from bytes other than the command's
    # whole text (an execute's prepared text, COM_INIT_DB's schema, an oversized text
    # cut short), where ``sql`` as UTF-8 is not those bytes
    exact: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    # its answer is a procedure's (result sets, then an OK): True when it runs a CALL
    # (``CALL p()``, ``EXECUTE IMMEDIATE 'CALL p()'``), None when it may (``EXECUTE s``
    # after an SQL-level PREPARE of a CALL), False when it does not; the ledger splits a
    # text's answer among its statements by it
    calls: bool | None = False
    # what the record of a command on a prepared statement carries besides its text: an
    # execute's values (``ExecuteParams.fields``), and ``rewritten``, the text the
    # statement was prepared with when the policy rewrote the client's
    carried: tuple[tuple[str, str | int | list[str]], ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the gateway does with one command."""

    command: str  # e.g. COM_QUERY
    parts: tuple[Part, ...]
    refusal: Decision | None = None  # the first refused statement's decision
    shadow: bool = False  # the refusal is recorded, not enforced
    rewritten: str | None = None  # the text forwarded instead (masked by construction)

    @property
    def refused(self) -> bool:
        return self.refusal is not None and not self.shadow

    def ledger_fields(self, index: int) -> tuple[str, str | None, str | None, dict[str, str]]:
        """``decision``, ``rule``, ``reason`` and extra fields of statement ``index``."""
        part = self.parts[index]
        d = part.decision
        if self.rewritten is not None:
            return "allowed", d.rule, d.reason, {"rewritten": self.rewritten}
        if self.refusal is None:
            return "allowed", d.rule, None, {}
        if self.shadow:
            if not d.refused:
                return "allowed", d.rule, None, {}
            would = "blocked" if d.action is RuleAction.BLOCK else "review"
            return "allowed", d.rule, f"shadow mode: {d.message}", {"shadow_decision": would}
        if d.refused:
            return "blocked", d.rule, d.message, {}
        refused_at = next(i for i, p in enumerate(self.parts) if p.decision.refused)
        return (
            "blocked",
            self.refusal.rule,
            f"not run: statement {refused_at + 1} of the same text was refused "
            f"({self.refusal.message})",
            {},
        )


_MAX_REWRITE = 16 * 1024 * 1024 - 2  # a rewritten command must fit in one packet


_CARRIED_BYTES = 4096


Exact = tuple[tuple[str, str], ...]


def _read(sql: bytes, charset: str | None) -> tuple[str, Exact]:
    """``sql`` read as the server reads it, in the client character set ``charset``, and
    the record fields that keep its bytes where that text as UTF-8 is not them."""
    text, exact = read_text(sql, charset)
    return text, tuple(exact.items())


def _carried(sql: bytes, charset: str | None) -> tuple[str, Exact]:
    """The prepared text as the record of an execute, fetch, reset, close or long data
    carries it, read in ``charset`` (the session's at its prepare): whole up to 4 KiB; a
    longer one is cut and names the prepare's record by its ``sql_sha256`` (a 7-byte
    execute must not write a megabyte to the ledger)."""
    if len(sql) <= _CARRIED_BYTES:
        return _read(sql, charset)
    digest = hashlib.sha256(bytes([Command.STMT_PREPARE]) + sql).hexdigest()
    head, exact = _read(sql[:_CARRIED_BYTES], charset)
    return (
        f"{head} ... [{len(sql)} bytes in all: the whole text is in the record of its "
        f"prepare, sql_sha256 {digest}]"
    ), exact


def _refused_unread(sql: bytes, charset: str | None) -> tuple[str, Exact]:
    """The text of a command refused whole for its size, as its record carries it, read
    in ``charset``: whole up to 4 KiB, else cut there (it never reaches the server, and
    a 60 MB text must not write 60 MB to the ledger at every try). The record's
    ``sql_sha256`` is still that of the whole command."""
    if len(sql) <= _CARRIED_BYTES:
        return _read(sql, charset)
    head, exact = _read(sql[:_CARRIED_BYTES], charset)
    return (
        f"{head} ... [{len(sql)} bytes in all, refused unread: the record keeps the first "
        f"{_CARRIED_BYTES}; sql_sha256 is that of the whole command]"
    ), exact


def _protocol_kind(label: str) -> str:
    """The statement kind the ledger shows for a protocol command: COM_STMT_FETCH is
    STMT FETCH."""
    return label.removeprefix("COM_").replace("_", " ")


#: The word VIEW, TABLE, SEQUENCE or TRIGGER in a prepared text (CREATE, ALTER or DROP
#: VIEW, CREATE or RENAME TABLE, CREATE TRIGGER...): executing it may change a view, the
#: names of tables or what a write to one also writes.
_CATALOG_WORD = re.compile(rb"view|\btable\b|\bsequence\b|\btrigger\b", re.IGNORECASE)

#: Statements that may give a table a name the view catalog does not know yet (a
#: temporary table is never known: it is not read again for one).
_TABLE_NAMING = frozenset({"CREATE TABLE", "ALTER TABLE", "RENAME TABLE", "CREATE SEQUENCE"})
#: Statements that change what a write to a table also writes (the through catalog).
_TRIGGER_KINDS = frozenset({"CREATE TRIGGER", "DROP TRIGGER"})
_TEMPORARY = re.compile(r"\s*CREATE\s+(?:OR\s+REPLACE\s+)?TEMPORARY\b", re.IGNORECASE)


def _changes_catalog(c: Classification) -> bool:
    """Whether a statement may change what the view catalog or the through catalog read
    (views, table names, triggers)."""
    if "VIEW" in c.kind or c.kind in _TRIGGER_KINDS:
        return True
    return c.kind in _TABLE_NAMING and _TEMPORARY.match(c.text) is None


def _part(sql: str | None, kind: str, rule: str = "protocol") -> Part:
    return Part(sql, kind, Decision(_RELAYED, rule, ""))


@dataclass(slots=True)
class _Usage:
    """One identity's recent statements and changed rows, for the runaway guard."""

    statements: deque[float] = field(default_factory=deque)
    changed: deque[tuple[float, int]] = field(default_factory=deque)
    changed_total: int = 0
    # statements that may change rows, let through and not completed yet: each counts as
    # one row changed (the least one that changes any changes) until its answer says
    # how many it changed, so that commands decided while it runs (pipelined, or in the
    # identity's other sessions) do not pass the limit together
    in_flight: int = 0
    alerted_at: dict[str, float] = field(default_factory=dict)  # rule -> its last alert


# who, schema, command, and the version of what writes reach (Policy.through_version)
_VerdictKey = tuple[Subject, str | None, str, int]
_AllowedKey = tuple[str, str, str, str, frozenset[str]]  # command, kind, rule, reason, functions


class _Entry:
    """A cached classification, and the verdicts already reached on it per subject,
    schema and command (those that no session state can change).

    The first verdict sits in two slots, any further ones in a dict made when needed:
    nearly every text is decided for one (subject, schema, command), and of the tens of
    thousands of entries the cache keeps, every object is one more for each full
    collection of the garbage collector to walk."""

    __slots__ = ("found", "key", "verdict", "more")

    def __init__(self, found: tuple[Classification, ...]) -> None:
        self.found = found
        self.key: _VerdictKey | None = None
        self.verdict: Verdict | None = None
        self.more: dict[_VerdictKey, Verdict] | None = None

    def get(self, key: _VerdictKey) -> Verdict | None:
        if self.key is key or self.key == key:
            return self.verdict
        return self.more.get(key) if self.more is not None else None

    def put(self, key: _VerdictKey, verdict: Verdict) -> None:
        if self.key is None:
            self.key = key
            self.verdict = verdict
        elif self.more is None:
            self.more = {key: verdict}
        else:
            self.more[key] = verdict


class _Cache:
    """Entries by text (or shape), in one dict per (mode, backslash_unknown): keyed by
    the bytes alone, its keys are objects the garbage collector never walks. Emptied
    whole when it holds ``_CACHE_LIMIT`` entries or about ``_CACHE_BYTES`` of text (an
    agent sending distinct 1 MiB statements must not grow it by gigabytes)."""

    __slots__ = ("_tables", "_count", "bytes")

    def __init__(self) -> None:
        self._tables: dict[tuple[LexMode, bool], dict[bytes, _Entry]] = {}
        self._count = 0
        self.bytes = 0  # the keys' length, twice: each entry also holds its text

    def table(self, reading: tuple[LexMode, bool]) -> dict[bytes, _Entry]:
        found = self._tables.get(reading)
        if found is None:
            found = self._tables[reading] = {}
        return found

    def put(self, table: dict[bytes, _Entry], key: bytes, entry: _Entry, text: int = -1) -> None:
        """``text``: the length of the text the entry's classifications keep, when not
        the key's (a shape): counted, or distinct 8 KB texts of one short shape each
        (a comment apart) held 424 MB when the count emptied it, not the bytes."""
        size = len(key) + (len(key) if text < 0 else text)
        if self._count >= _CACHE_LIMIT or self.bytes + size > _CACHE_BYTES:
            for cached in self._tables.values():
                cached.clear()
            self._count = 0
            self.bytes = 0
        table[key] = entry
        self._count += 1
        self.bytes += size


class Policy:
    """The gateway's rules and caches, shared by all sessions."""

    def __init__(
        self,
        settings: PolicyConfig,
        rules: tuple[RuleConfig, ...],
        max_prepared: int = DEFAULT_MAX_PREPARED,
    ) -> None:
        self.settings = settings
        self.rules = rules
        # statements one session may hold prepared on its target ([appliance]
        # max_prepared_per_session): the server's max_prepared_stmt_count is shared by
        # every session of the gateway's one backend user
        self.max_prepared = max_prepared
        self.shadow = settings.mode is PolicyMode.SHADOW
        self._exact = _Cache()  # entries by text
        self._by_shape = _Cache()  # entries shared by texts of one shape
        # Allowed verdicts of one statement, shared by every text that reaches them.
        self._allowed: dict[_AllowedKey, Verdict] = {}
        self._usage: dict[str, _Usage] = {}
        self.alerts: list[tuple[str, str]] = []  # (identity, message): taken by the shell
        # target -> the modes of its server's global sql_mode the gateway cannot read
        # (kept by server_mode.GlobalModes): its statements are refused
        self.unreadable_modes: dict[str, str] = {}
        # target -> its views, foreign keys and triggers (kept by
        # through_catalog.ThroughCatalog): the writes that reach a table under another
        # name, for the refusing rules.
        # Every change bumps ``through_version``, part of each cached verdict's key.
        self.through: dict[str, WriteThrough] = {}
        self.through_version = 0

    def set_through(self, target: str, through: WriteThrough) -> None:
        """What writes to ``target`` reach now; the verdicts cached before no longer
        count when it differs from what it was."""
        if self.through.get(target) != through:
            self.through[target] = through
            self.through_version += 1

    def login_schema(
        self, who: Subject, schema: str, collation: int | None = None, masked: bool = False
    ) -> Decision:
        """The decision on the default schema a client names in its login (decoded as
        UTF-8, ``collation`` the login's): that on the text ``USE `schema``` with no
        schema current yet (the rules, then the built-ins); a name the gateway cannot
        read as the server does is refused (``_unreadable_name``), and so is a schema of
        other sessions' statement texts when the session may have masked columns."""
        unreadable = _unreadable_name("schema", schema, _login_reading(collation))
        if unreadable is not None:
            return unreadable
        if masked and schema.lower() in _STATEMENT_SCHEMAS:
            return _statement_schema_use(schema)
        return decide(_use_of(schema), who, None, self.rules)

    def decided_before(self, sql: bytes, mode: LexMode, backslash_unknown: bool) -> bool:
        """Whether the exact text has its classification in the cache."""
        return sql in self._exact.table((mode, backslash_unknown))

    def classify(
        self, sql: bytes, mode: LexMode, backslash_unknown: bool
    ) -> tuple[Classification, ...]:
        """Classifications of a text: by exact text, then by shape, then parsed."""
        return self.entry(sql, mode, backslash_unknown).found

    def entry(
        self,
        sql: bytes,
        mode: LexMode,
        backslash_unknown: bool,
        found: tuple[Classification, ...] | None = None,
    ) -> _Entry:
        """The cached entry of a text, made now if needed (``found``: its classification,
        made by ``classify_text`` in a worker process)."""
        reading = (mode, backslash_unknown)
        texts = self._exact.table(reading)
        hit = texts.get(sql)
        if hit is not None:
            return hit
        if found is not None:
            entry = _Entry(found)
            self._exact.put(texts, sql, entry)
            return entry
        # Texts that read differently under a sql_mode the gateway cannot know share
        # nothing by shape: two such texts with one shape may still split differently.
        form = None if b'"' in sql or b"\\" in sql else shape(sql, mode, typed=True)
        shapes = self._by_shape.table(reading)
        if form is not None:
            hit = shapes.get(form)
            if hit is not None:
                return hit
        # This cache is the only one kept of these classifications. The classifier
        # outlines the text from the matches shape() just found (see lexer._last_scan).
        entry = _Entry(classify_uncertain(sql, mode, True, backslash_unknown, cached=False))
        self._exact.put(texts, sql, entry)
        found = entry.found
        if form is not None and len(found) == 1 and found[0].literal_independent:
            self._by_shape.put(shapes, form, entry, len(sql))
        return entry

    def allowed_verdict(self, label: str, part: Part) -> Verdict:
        """The verdict of a command of one allowed statement, the very one an earlier
        text got if equal: the exact-text cache keeps one per text, mostly the same few.
        """
        decision = part.decision
        # All such a verdict holds (its part's action is ALLOW, its text None).
        key = (label, part.kind, decision.rule, decision.reason, part.functions)
        verdict = self._allowed.get(key)
        if verdict is None:
            if len(self._allowed) >= _CACHE_LIMIT:
                self._allowed.clear()
            verdict = self._allowed[key] = Verdict(label, (part,))
        return verdict

    # ------------------------------------------------------------- runaway guard

    def guard(
        self, identity: str, writes: int, now: float, count: int = 1, runs: bool = True
    ) -> Decision | None:
        """A refusal when ``identity`` is over its limits, else None (and it is counted).

        ``count``: the statements of the text, each counted toward the rate (a text is
        refused whole when they would pass the limit); ``writes``: how many of them may
        change rows (``_writes``). Under a rows limit, those of a command let through
        that ``runs`` them (not a COM_STMT_PREPARE) count as rows changed until
        ``rows_changed`` gives them back with the rows it changed."""
        s = self.settings
        if not s.statements_per_second and not s.rows_changed_per_minute:
            return None
        usage = self._usage.setdefault(identity, _Usage())
        limit = s.statements_per_second
        if limit:
            recent = usage.statements
            while recent and recent[0] <= now - 1.0:
                recent.popleft()
            if len(recent) + count > limit:
                if count > limit:
                    reason = (
                        f"a text of {count} statements counts as {count}, more than the "
                        f"{limit} statements {identity} may send in one second. Send them in "
                        "several texts, or batch them (one INSERT of many rows)"
                    )
                else:
                    reason = (
                        f"{identity} sent more than {limit} statements in one second. Slow "
                        "down: wait a second and send fewer statements, or batch them"
                    )
                return self._tripped(identity, usage, now, "runaway-statements", reason)
            if count == 1:
                recent.append(now)
            else:
                recent.extend(repeat(now, count))
        if writes and s.rows_changed_per_minute:
            changed = usage.changed
            while changed and changed[0][0] <= now - 60.0:
                usage.changed_total -= changed.popleft()[1]
            if usage.changed_total + usage.in_flight >= s.rows_changed_per_minute:
                running = ""
                if usage.in_flight:
                    n = usage.in_flight
                    running = (
                        f" and has {n} statement{'' if n == 1 else 's'} that may change rows "
                        "still running (each counts as one row until its answer says how "
                        "many it changed)"
                    )
                return self._tripped(
                    identity,
                    usage,
                    now,
                    "runaway-rows",
                    f"{identity} changed {usage.changed_total} rows in the last minute"
                    f"{running}, the "
                    f"limit is {s.rows_changed_per_minute}, so statements that may change rows "
                    "(INSERT, UPDATE, DELETE, REPLACE, CALL, DDL, calls of stored "
                    "functions, and any run through PREPARE, EXECUTE or SET STATEMENT) are "
                    "refused until fewer rows changed "
                    "in the last minute. Stop and check what the previous statements did "
                    "before changing more rows",
                )
            if runs:
                usage.in_flight += writes
        return None

    def rows_changed(self, identity: str, rows: int, now: float, in_flight: int = 0) -> None:
        """``identity``'s command changed ``rows``; ``in_flight``: the statements of it
        that ``guard`` counted as running, given back (also when it did not run)."""
        if in_flight:  # (whatever the settings are now: they were counted)
            self._usage[identity].in_flight -= in_flight
        if self.settings.rows_changed_per_minute and rows > 0:
            usage = self._usage.setdefault(identity, _Usage())
            usage.changed.append((now, rows))
            usage.changed_total += rows

    def rows_counted(self, identity: str) -> tuple[int, int]:
        """``identity``'s rows changed in the last minute as the guard last counted them,
        and its statements that may change rows still running (each one row more)."""
        usage = self._usage.get(identity)
        return (0, 0) if usage is None else (usage.changed_total, usage.in_flight)

    def _tripped(
        self, identity: str, usage: _Usage, now: float, rule: str, reason: str
    ) -> Decision:
        # one alert a minute per identity and limit
        if now - usage.alerted_at.get(rule, -1e9) >= 60.0:
            usage.alerted_at[rule] = now
            self.alerts.append((identity, reason))
        return Decision(RuleAction.BLOCK, rule, reason)


#: Kinds that change rows, for the rows limit. CALL too: a procedure's statements change
#: rows the gateway never sees one by one.
_WRITE_KINDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "CALL"})


def _writes(c: Classification) -> bool:
    """Whether a statement may change rows, for the rows limit: a write kind, a statement
    that writes a table (DDL, ``CREATE TABLE ... SELECT``), one that calls a stored
    function (``SELECT f()``, ``SET @x = f()``: its body may change rows), or one that
    runs such a statement (PREPARE, EXECUTE IMMEDIATE, SET STATEMENT ... FOR, ANALYZE).
    ``EXECUTE name`` may run anything: the gateway does not follow the names SQL-level
    PREPARE binds. EXPLAIN does not run its statement."""
    while True:
        if c.kind in _WRITE_KINDS or c.writes or c.stored_functions:
            return True
        inner = c.inner
        if inner is None:
            return c.kind == "EXECUTE"
        if c.kind == "EXPLAIN":
            return False
        c = inner


#: The commands whose text may hold a write that returns the rows it changed.
_RETURNS_ROWS = frozenset({Command.QUERY, Command.STMT_EXECUTE})

#: INSERT, REPLACE and DELETE ... RETURNING (MariaDB) answer with a result set of the rows
#: they changed. A text of a write with the word anywhere counts the rows its answer
#: returns (a string or a name that holds the word counts too: more, never fewer).
_RETURNING_WORD = re.compile(rb"returning", re.IGNORECASE)


def _executes_by_name(found: tuple[Classification, ...]) -> bool:
    """Whether a text runs an SQL-level ``EXECUTE name`` (at any depth), whose statement
    the text does not hold."""
    return any(s.kind == "EXECUTE" and s.inner is None for c in found for s in _chain(c))


#: A session remembers the texts it prepared that change no rows (so that executing them
#: passes the rows limit) up to these bounds, then forgets them all: an execute of a
#: text it does not remember counts as a write.
_PREPARED_READS_LIMIT = 4096
_PREPARED_READS_BYTES = 8 << 20

#: ``ClientCommand.label`` of each known command, looked up rather than built from the
#: enum on every command (a microsecond of every decision).
_LABELS = {int(c): c.label for c in Command}
_PREPARES_KEPT = 256
"""Prepared texts a session keeps facts of (``_prepared_under``, ``_rewrites``): the
client's text of a rewritten one older than those is recorded as rewritten, and an
execute of one is decided again as if nothing reached anywhere at its prepare."""


K = TypeVar("K")
V = TypeVar("V")


def _keep_last(kept: dict[K, V], key: K, value: V) -> None:
    """``kept[key] = value``, the oldest entry going first past ``_PREPARES_KEPT``."""
    if key not in kept and len(kept) >= _PREPARES_KEPT:
        del kept[next(iter(kept))]
    kept[key] = value


_NAMED_TEXT_BYTES = 16 * 1024
"""The longest text an SQL-level PREPARE is kept with for deciding its EXECUTEs again:
a session keeps ``_PREPARES_KEPT`` names, and 256 texts of a megabyte would be a quarter
of a gigabyte per session. A longer one is kept without its text (see ``_NamedText``)."""


@dataclass(frozen=True, slots=True)
class _NamedText:
    """What an SQL-level ``PREPARE name FROM '...'`` prepared, for its ``EXECUTE``s to
    be decided again when what writes reach changed since (``_named_now``): its text
    (None when it is not a string literal or is too long to keep: then it cannot be
    decided again, and is refused instead), how that was read, and what writes reached
    and the schema its names were read in when it was decided."""

    text: bytes | None
    mode: LexMode
    backslash_unknown: bool
    through: WriteThrough | None
    schema: str | None


@dataclass(frozen=True, slots=True)
class _Bindable:
    """An SQL-level ``PREPARE name FROM '...'`` of a text whose WHERE values bound to it
    may make true for every row (``where_bindable``), for its ``EXECUTE ... USING``s: the
    text (None: not kept, too long, which refuses them unless every value is read) and
    how it was read, and the schema it was decided in."""

    text: bytes | None
    mode: LexMode
    backslash_unknown: bool
    schema: str | None


_TOUCHES_PARAMS = frozenset(
    {Command.STMT_SEND_LONG_DATA, Command.STMT_CLOSE, Command.STMT_RESET, Command.RESET_CONNECTION}
)
"""Commands that change what an execute's parameter block holds (``ExecuteParams.note``)."""

_ANSWERED_WITH_STATUS = frozenset(
    {
        Command.QUERY,
        Command.STMT_EXECUTE,
        Command.STMT_FETCH,
        Command.STMT_RESET,
        Command.INIT_DB,
        Command.PING,
        Command.PROCESS_KILL,
        Command.RESET_CONNECTION,
    }
)
"""Commands whose answer, when it succeeds, ends with the server's status flags, which
the core takes for the session's (``Session.server_status``): an OK, or the EOF or OK
that ends a result. The others leave the flags of an earlier answer in place: a
COM_STMT_CLOSE or COM_STMT_SEND_LONG_DATA has no answer, and the core reads none from
the answers of COM_STMT_PREPARE, COM_FIELD_LIST, COM_SET_OPTION and COM_STATISTICS."""


class SessionPolicy:
    """Decides one session's commands in the order the client sent them."""

    def __init__(
        self,
        policy: Policy,
        who: Subject,
        db: str | None,
        charset: int | None,
        sql_mode: str | None = "",
    ) -> None:
        self.policy = policy
        self.who = who
        self.db = db
        # the refusal of every statement while the sql_mode the server started the
        # session in cannot be read, or is not known (see started_in)
        self._start_mode: Decision | None = None
        self.started_in(sql_mode)
        self._login_reading = _login_reading(charset)
        self._reading = self._login_reading  # how the client character set is read
        self._mode_changes: set[int] = set()  # commands in flight that may change sql_mode
        # it set a variable that may change what an expression reads (a user variable,
        # timestamp, time_zone, lc_time_names, a collation, sql_mode...): another
        # connection no longer reads its WHERE as it does (the row estimate)
        self.state_changed = False
        # the collation it compares literals in (collation_connection) as a collation id:
        # the login's, None after a SET NAMES utf8mb4 (that character set's default, the
        # row estimate's own connection's): the estimate compares in it too
        self.count_collation: int | None = charset
        # SET STATEMENT sql_mode = ... FOR: its answer's status flags are those of the
        # statement's own mode, not the session's; until a later answer, not known
        self._statement_modes: set[int] = set()
        self._stale_status = False
        # Stored code ran (a procedure, a function, perhaps a trigger): one that sets
        # sql_mode leaves the answers' NO_BACKSLASH_ESCAPES flag at its own mode after it
        # ends (MariaDB restores the mode, not the flag), until the session sets sql_mode
        # again. ``_mode_sets``: the commands on their way that do.
        self._status_untrusted = False
        self._mode_sets: set[int] = set()
        # an SQL-level PREPARE of a CALL went through: EXECUTE name may run one
        self._prepared_calls = False
        self._params = ExecuteParams()  # the parameter types and long data of its statements
        # the texts prepares were rewritten to (masking), and the client's: the records of
        # the prepared statement's commands show what the client prepared
        self._rewrites: dict[bytes, bytes] = {}
        # each prepared text: what writes reached when it was decided, and the schema it
        # was read in (its executes are decided again when that changed, ``_reaches_now``)
        self._prepared_under: dict[bytes, tuple[WriteThrough | None, str | None]] = {}
        # names whose SQL-level PREPARE the gateway refused: the server still holds what
        # they were prepared from before, where a failed PREPARE would have dropped it
        self._unprepared: set[str] = set()
        self._prepared_names: set[str] = set()  # names that may hold a statement there
        # names that hold a statement there, as far as the answers tell (one that may is
        # counted), for [appliance] max_prepared_per_session; command id -> the names its
        # text added to them and took from them, and whether it is one statement
        self._named_open: set[str] = set()
        self._opening: dict[int, tuple[frozenset[str], frozenset[str], bool]] = {}
        # COM_STMT_CLOSEs decided and not sent yet: command id -> the statement id (it
        # is prepared there until its close goes)
        self._closing: dict[int, int] = {}
        # resets of the connection on their way: command id -> the names they dropped
        # (as they are decided: the prepares sent behind one are the server's after it)
        self._resetting: dict[int, frozenset[str]] = {}
        # names last prepared from a text that is not ASCII -> the client character set
        # it was read in: the server reads the text again in the current one whenever it
        # prepares it anew (a table it names changed), so an EXECUTE in another is refused
        self._named_charsets: dict[str, str | None] = {}
        self._naming: dict[int, list[str]] = {}  # command id -> the names it prepares
        # names -> what their last SQL-level PREPARE prepared, and under what it was
        # decided: their EXECUTEs are decided again when what writes reach changed since
        # (``_named_now``); a name prepared beyond those kept has nothing (see there)
        self._named: dict[str, _NamedText] = {}
        # command id -> the schema it makes current, and whether a failure of the command
        # means the schema stayed (a lone USE, COM_INIT_DB) or may have changed
        self._uses: dict[int, tuple[str | None, bool]] = {}
        self._charsets: dict[int, str] = {}  # command id -> character set it sets
        # resets of the connection on their way that bring the login's character set back
        # (with _charsets: until answered, only ASCII reads alike before and after)
        self._resets: set[int] = set()
        self._preparing: set[int] = set()  # prepares sent on whose answer (the id) it waits
        # the last COM_STMT_PREPARE decided: its command id and the text it sends (None:
        # refused), what an execute of statement id 0xFFFFFFFF right after it runs
        self._last_prepare: tuple[int, bytes | None] = (0, None)
        self._last_prepare_charset: str | None = None  # the client's, at that prepare
        # the character set of result names (masking reads them): from the login, then
        # each SET that succeeded; command id -> the one it sets, and whether a failure
        # of the command means it was not set (else: not known)
        self._login_results = collation_charset(charset)
        self._results = self._login_results
        # the character set the server reads the client's texts in (the records show them
        # read in it): from the login, then each SET NAMES that succeeded
        self._login_client = collation_charset(charset)
        self._client = self._login_client
        self._results_sets: dict[int, tuple[str | None, bool]] = {}
        self._masker: SessionMasker | None = None
        # whether a backend thread id is one of this identity's live sessions on this
        # target (the gateway knows them); until it is told, none is
        self.owns_thread: Callable[[int], bool] = _no_thread
        # The key of this session's verdicts per command, made once: an entry compares
        # it by identity first (see _Entry.get).
        self._keys: dict[str, _VerdictKey] = {}
        # prepared texts that change no rows (kept only under a rows limit), and their bytes
        self._prepared_reads: set[bytes] = set()
        # commands that may change rows and return them (DELETE ... RETURNING): the rows
        # of their answers count toward the rows limit (see completed)
        self._returning: set[int] = set()
        # commands let through that may change rows, not completed yet -> how many of
        # their statements the guard counts as running (given back in completed, or when
        # the session ends)
        self._in_flight: dict[int, int] = {}
        self._over = False  # the session ended: nothing it decides now counts as running
        # SQL-level names last prepared from a text that may return the rows it changes
        # (the word RETURNING, or a text not read): an EXECUTE's rows count while any is
        self._named_returning: set[str] = set()
        self._prepared_reads_bytes = 0
        # hashes of the texts it prepared that may change rows: the same bytes read in
        # another sql_mode (NO_BACKSLASH_ESCAPES) may be a read, and an execute of the
        # statement prepared as a write must not pass as one (a collision: a read
        # counted as a write). None: more than it keeps, and no text is a read any more
        self._prepared_writes: set[int] | None = set()
        # prepared texts (the client's) whose WHERE values bound to their placeholders may
        # make true for every row (``where_bindable``) -> how they were read: their
        # executes are decided with their values. Empty for most sessions: an execute
        # then pays one truth test
        self._bindable: dict[bytes, tuple[LexMode, bool]] = {}
        # SQL-level names prepared from such a text, for their EXECUTEs
        self._bindable_names: dict[str, _Bindable] = {}

    def started_in(self, sql_mode: str | None) -> None:
        """The ``sql_mode`` the server started the session in (as it reports it; None: not
        known). Under a mode the gateway cannot read, or one it does not know, every
        statement of the session is refused (``sql-mode``)."""
        if sql_mode is None:
            self._start_mode = _START_MODE_UNKNOWN
            return
        modes = unreadable_modes(sql_mode)
        self._start_mode = _start_mode_refusal(modes) if modes else None

    def started_with(self, client: str | None, results: str | None) -> None:
        """The ``character_set_client`` and ``character_set_results`` the server started
        the session in (as it reports them; None: not known). The target's
        ``init_connect`` may set others than the login named (``SET NAMES gbk``): the
        server then reads the client's texts in its own, where a multibyte character
        may take the backslash that escapes a quote. Texts are read in the one the
        server reports. A reset of the connection brings back the login's (the server
        does not run ``init_connect`` again) or the server's own default (when it
        ignores the login's): until a later SET NAMES, only ASCII reads alike in both."""
        client = _canonical_charset(client)
        if client != _canonical_charset(self._login_client):
            self.state_changed = True  # its collation is not the login's (the estimate)
        if client in UNREADABLE_NAMES or client in ASCII_CHANGING:
            if self._start_mode is None:  # (a mode it cannot read says so first)
                self._start_mode = _start_charset_refusal(client)
            return
        if client != _canonical_charset(self._login_client):
            self._client = client
            self._reading = _Reading.ASCII_ONLY if client is None else _named_reading(client)
            self._login_client = None
            self._login_reading = _Reading.ASCII_ONLY
        results = _canonical_charset(results)
        if results != _canonical_charset(self._login_results):
            self._results = results
            self._login_results = None

    @property
    def masker(self) -> SessionMasker | None:
        """What this session may not see."""
        return self._masker

    @masker.setter
    def masker(self, masker: SessionMasker | None) -> None:
        self._masker = masker
        self._tell_masker()

    def _tell_masker(self) -> None:
        """The masker reads result names in the session's results character set; while
        a SET of it is on its way, that is not known (names that depend on it are then
        masked whole)."""
        if self._masker is not None:
            self._masker.results_charset = None if self._results_sets else self._results

    # ------------------------------------------------------------------ decide

    def decide(
        self,
        cmd: ClientCommand,
        server_status: int,
        prepared: dict[int, bytes],
        classified: Classified | None = None,
        prepared_charsets: dict[int, str | None] | None = None,
        param_counts: Mapping[int, int] | None = None,
    ) -> Verdict:
        """The verdict on one command. ``classified``: what ``classify_text`` made of its
        ``text_job`` (used if the session still reads the text the same way).
        ``prepared_charsets``: the client character set each prepared statement's text
        was read in by the server (its records show it read so; UTF-8 when not known).
        ``param_counts``: each prepared statement's number of parameters, with which an
        execute's values are read for its record."""
        code = cmd.command
        label = _LABELS.get(code) or cmd.label
        if code in _TOUCHES_PARAMS:
            self._params.note(cmd.payload)
        if code == Command.QUERY:
            # (the payload as it is: its text's copy and cmd.sql's look at the command
            # would double what this costs every statement; an EXECUTE is looked for only
            # when a name was prepared and writes may reach other tables, which they never
            # do without a block or review rule on tables)
            if self._unprepared or self._named_charsets:
                follow = True
            else:
                upper = cmd.payload.upper()
                follow = b"PREPARE" in upper or (
                    bool(self._prepared_names)
                    and (bool(self.policy.through) or bool(self._bindable_names))
                    and b"EXECUTE" in upper
                )
            if not follow:
                return self._decide_text(cmd, label, server_status, classified)
            # how the text is read as it is sent (deciding it may change that)
            mode = _MODES[bool(server_status & _NO_BACKSLASH_ESCAPES), self._current_reading]
            backslash_unknown = self._backslash_unknown
            verdict = self._decide_text(cmd, label, server_status, classified)
            opened = self._prepared_open(param_counts)
            return self._follow_names(
                cmd, verdict, cmd.payload[1:], mode, backslash_unknown, opened
            )
        if code == Command.STMT_PREPARE:
            mode = _MODES[bool(server_status & _NO_BACKSLASH_ESCAPES), self._current_reading]
            backslash_unknown = self._backslash_unknown
            verdict = self._decide_text(cmd, label, server_status, classified)
            if verdict.refusal is None or verdict.shadow:
                held = self._prepared_open(param_counts) + len(self._named_open)
                if held >= self.policy.max_prepared:
                    refusal = _too_many_prepared(held, self.policy.max_prepared, None)
                    parts = tuple(replace(p, decision=refusal) for p in verdict.parts)
                    verdict = Verdict(verdict.command, parts, refusal)  # (shadow mode too)
            sent: bytes | None = None
            if verdict.refusal is None or verdict.shadow:
                self._note_bindable(cmd.payload[1:], mode, backslash_unknown, prepared)
                # (a refused one prepares nothing, and must not vouch for a statement
                # prepared from the same text before)
                under = (self.policy.through.get(self.who.target), self.schema)
                _keep_last(self._prepared_under, cmd.payload[1:], under)
                self._preparing.add(cmd.id)  # its statement id comes with its answer
                rewritten = verdict.rewritten
                sent = cmd.payload[1:] if rewritten is None else rewritten.encode()
                if rewritten is not None:
                    _keep_last(self._rewrites, sent, cmd.payload[1:])
            self._last_prepare = (cmd.id, sent)
            self._last_prepare_charset = self.client_charset
            return verdict
        if code in _NAMES_A_STATEMENT:  # the record carries the prepared statement's text
            if cmd.stands_for is not None:  # id 0xFFFFFFFF: the prepare just before it
                prepare, last = self._last_prepare
                if prepare != cmd.stands_for or last is None:
                    part = Part(None, "EXECUTE", _LAST_PREPARED_REFUSED)
                    return self._verdict(label, (part,))
                sql, charset = last, self._last_prepare_charset
            else:
                statement_id = int.from_bytes(cmd.payload[1:5], "little")
                sql = prepared.get(statement_id, b"")
                charset = (prepared_charsets or {}).get(statement_id)
            carried: tuple[tuple[str, str | int | list[str]], ...] = ()
            original = self._rewrites.get(sql) if self._rewrites else None
            if original is not None:  # what the client prepared, and what runs
                carried = (("rewritten", _carried(sql, charset)[0]),)
                sql = original
            text, exact = _carried(sql, charset)
            if code != Command.STMT_EXECUTE:
                if code == Command.STMT_CLOSE and cmd.stands_for is None:
                    self._closing[cmd.id] = int.from_bytes(cmd.payload[1:5], "little")
                part = replace(_part(text, _protocol_kind(label)), exact=exact, carried=carried)
                return Verdict(label, (part,))
            if not sql and self._preparing:
                return self._verdict(label, (Part(None, "EXECUTE", _EXECUTE_BEFORE_PREPARED),))
            if not sql.isascii() and charset != self.client_charset:
                reread = _prepared_in_other_charset(charset, self.client_charset)
                return self._verdict(label, (Part(text, "EXECUTE", reread, exact=exact),))
            since = self._reaches_now(sql, server_status)
            if since is not None:
                return self._verdict(
                    label, (Part(text, "EXECUTE", since, exact=exact, carried=carried),)
                )
            if self._changes_lexing(sql, server_status):
                self._mode_changes.add(cmd.id)
            if self._runs_call(sql, server_status):
                self._uses[cmd.id] = (None, False)  # see decide(): the schema is not known
                self._after_call(cmd)
            catalog = _CATALOG_WORD.search(sql) is not None  # CREATE VIEW prepared, run now
            statement_id = int.from_bytes(cmd.payload[1:5], "little")
            count = None if param_counts is None else param_counts.get(statement_id)
            if count is None and cmd.stands_for is not None:
                # its prepare has not been answered yet: its placeholders are its count
                count = _placeholders(sql, server_status)
            fields = self._params.fields(cmd.payload, count, cmd.id)
            carried += tuple(fields.items())
            part = replace(
                _part(text, "EXECUTE", "prepared"), catalog=catalog, exact=exact, carried=carried
            )
            verdict = Verdict(label, (part,))
            if self._bindable and sql in self._bindable:  # (empty for most sessions)
                bound = self._bound_refusal(sql, fields)
                if bound is not None:
                    verdict = self._verdict(label, (replace(part, decision=bound),))
            verdict = self._guarded(verdict, cmd, prepared=sql)
            if verdict.refused:  # (before a command behind it is read with its types)
                self._params.not_sent(cmd.id)
            return verdict
        if code == Command.INIT_DB:  # decided and recorded as the text USE `schema`
            schema = cmd.payload[1:].decode("utf-8", "replace")
            use = _use_of(schema)
            # recorded as the server reads the name, in the client character set (with
            # the command's bytes where that is not them in UTF-8)
            name, exact = _read(cmd.payload[1:], self.client_charset)
            unreadable = _unreadable_name("schema", schema, self._current_reading, name)
            if unreadable is not None:
                decision = unreadable
            elif "." in schema:  # the rules would misread its tables (see schema)
                decision = _dotted_schema(schema)
            elif self.masker is not None and schema.lower() in _STATEMENT_SCHEMAS:
                decision = _statement_schema_use(schema)
            else:
                decision = decide(use, self.who, self.schema, self.policy.rules)
            shown = use.text if name == schema else _use_of(name).text
            part = Part(shown, "USE", decision, exact=exact)
            verdict = self._guarded(self._verdict(label, (part,)), cmd)
            if verdict.refusal is None or self.may_run(verdict.refusal):
                self._uses[cmd.id] = (name, True)  # the name the server reads
            return verdict
        if code == Command.FIELD_LIST:  # decided and recorded as SHOW COLUMNS FROM `table`
            return self._guarded(self._field_list(cmd, label), cmd)
        if code == Command.RESET_CONNECTION:
            if self._named_open:  # back unless it succeeds (see completed)
                self._resetting[cmd.id] = frozenset(self._named_open)
                self._named_open = set()
            self._mode_changes.add(cmd.id)
            self._mode_sets.add(cmd.id)
            if self._reading is not self._login_reading:
                # the commands sent behind it are read by the server in the login's
                # character set, unless the reset fails
                self._resets.add(cmd.id)
            return Verdict(label, (_part("", "RESET CONNECTION"),))
        if code == Command.PROCESS_KILL:  # the KILL statement's command: decided as one
            thread = int.from_bytes(cmd.payload[1:5], "little")
            decision = decide(_KILL, self.who, self.schema, self.policy.rules)
            if decision == ALLOW:  # not a configured rule's allow: only its own sessions
                decision = self._kill_check(thread)
            return self._verdict(label, (Part(f"KILL {thread}", "KILL", decision),))
        return Verdict(label, (_part("", _protocol_kind(label)),))

    def _prepared_open(self, param_counts: Mapping[int, int] | None) -> int:
        """Statements of the protocol (COM_STMT_PREPARE) this session holds prepared on
        the target, or will once the prepares on their way are answered, less those
        whose close is on its way."""
        held = len(self._preparing)
        if param_counts is not None:
            held += len(param_counts)
            if self._closing:
                held -= len({i for i in self._closing.values() if i in param_counts})
        return held

    def _field_list(self, cmd: ClientCommand, label: str) -> Verdict:
        """COM_FIELD_LIST (a table name up to a NUL, then a wildcard) gives the column
        definitions of a table of the current schema, as ``SHOW COLUMNS FROM `table` LIKE
        'wildcard'`` does: it is decided and recorded as that text. The server reads the
        whole name as one table's (a dot is part of it; the classifier refuses a name
        with one) in the client character set; a name the gateway cannot read as the
        server does is refused (``_unreadable_name``)."""
        raw, _, rest = cmd.payload[1:].partition(b"\0")
        table = raw.decode("utf-8", "replace")
        wildcard = rest.partition(b"\0")[0]  # the server reads it up to a NUL
        text = _show_columns(table, wildcard.decode("utf-8", "replace"))
        # recorded as the server reads it, in the client character set, with the
        # command's bytes where that is not them in UTF-8
        charset = self.client_charset
        _, exact = _read(cmd.payload[1:], charset)
        shown, name = text, table
        if exact:
            name = _read(raw, charset)[0]
            shown = _show_columns(name, _read(wildcard, charset)[0])
        decision = _unreadable_name("table", table, self._current_reading, name)
        if decision is not None:
            return self._verdict(label, (Part(shown, "SHOW", decision, exact=exact),))
        found = self.policy.classify(text.encode(), _DEFAULT_MODE, False)
        if len(found) != 1:  # cannot be: one quoted name, one quoted string
            return self._verdict(label, (Part(shown, "SHOW", _NOT_ONE_TABLE, exact=exact),))
        (c,) = found
        decision = decide(c, self.who, self.schema, self.policy.rules)
        return self._verdict(label, (Part(shown, c.kind, decision, c.functions, exact=exact),))

    def fingerprint(self, cmd: ClientCommand, server_status: int, verdict: Verdict) -> str | None:
        """What an approval grant binds: the text's shape as this session reads it now,
        hashed with how it reads it (a grant given for a text read with backslash
        escapes does not cover the same bytes read without them). None, so no grant, when
        there is no text, it does not lex, a ``sql_mode`` change is on its way, a double
        quote may be a name (ANSI_QUOTES is never known: the shape would make any
        table's name a '?'), the text holds its statement in a string (PREPARE,
        EXECUTE IMMEDIATE, SET STATEMENT: there the literal is the statement), it is
        stored code (its body may run a string as SQL, and runs later, unseen), it calls
        a stored routine at any depth (a CALL, or a call of a stored function: the
        routine's arguments may be SQL it runs, ``CALL run('DROP TABLE t')``), a literal
        is read as a name or an option rather than a value (``ENGINE = 'MEMORY'``, see
        ``_literals_are_values``), or the current schema is not known. The current
        schema is part of it: a grant to drop ``orders`` in a scratch schema is not one
        to drop ``orders`` after ``USE shop``. So is each literal's type (a '?' of the
        shape given for a string does not cover a number: ``WHERE code = 'A-1'`` is not
        ``WHERE code = 0``, which with sql_mode '' matches every code that does not
        start with a digit)."""
        sql = cmd.sql
        if sql is None or self._backslash_unknown or self.schema is None or b'"' in sql:
            return None
        if any(p.kind in _HOLDS_A_STATEMENT or p.kind in STORED_CODE for p in verdict.parts):
            return None
        mode = _MODES[bool(server_status & _NO_BACKSLASH_ESCAPES), self._current_reading]
        found = self._found_again(sql, mode)
        if found is None or any(_calls_routines(c) for c in found):
            return None
        form = shape(sql, mode)
        if form is None:
            return None
        try:
            statements = split_statements(sql, mode)
        except LexError:
            return None
        if len(statements) != len(found):
            return None
        types = bytearray()
        for c, statement in zip(found, statements, strict=True):
            if not _literals_are_values(c.kind, statement.tokens):
                return None
            types += literal_types(statement.tokens)
        # the types first: letters only, so the first newline ends them
        form = bytes(types) + b"\n" + form
        if mode != _DEFAULT_MODE:
            form = repr(mode).encode() + b"\n" + form
        where = (self.db or "").encode("utf-8", "surrogateescape")
        return hashlib.sha256(where + b"\n" + form).hexdigest()

    def _found_again(self, sql: bytes, mode: LexMode) -> tuple[Classification, ...] | None:
        """The classifications decide() read a text with, again: from the policy's
        caches (by text or by shape; parsed again if they were emptied meanwhile), and
        for a text over ``max_statement_bytes`` the INSERT read from its shape (None: it
        was not one)."""
        limit = self.policy.settings.max_statement_bytes
        if len(sql) <= limit:
            return self.policy.classify(sql, mode, False)
        return _large_insert(sql, mode, False, limit)

    def _kill_check(self, thread: int | None) -> Decision:
        """KILL reaches only a thread of this identity's own sessions on this target: all
        sessions share the backend account, so the server alone would let an agent end
        any other agent's session."""
        if thread is not None and self.owns_thread(thread):
            return Decision(RuleAction.ALLOW, "default-allow", "")
        if thread is None:
            why = (
                "the gateway reads only KILL [HARD | SOFT] [CONNECTION | QUERY] <thread id> "
                "with a plain number (KILL USER, KILL QUERY ID and an expression are refused)"
            )
        else:
            why = f"thread {thread} is not one of them"
        return Decision(
            RuleAction.BLOCK,
            "kill-other",
            f"KILL may end only this identity's own sessions through the gateway, and {why}. "
            "Give the id one of its sessions was given at login, CONNECTION_ID()",
        )

    def db_of(self, cmd: ClientCommand) -> str | None:
        """The schema a command runs in, for its records and an approval request: None
        while an earlier USE or COM_INIT_DB is on its way (pipelined before it, the
        server may be in either schema)."""
        if self._uses and any(other != cmd.id for other in self._uses):
            return None
        return self.db

    @property
    def schema(self) -> str | None:
        """The schema unqualified table names are read in: None (any schema) while a USE
        or COM_INIT_DB is on its way, since the server may already be in the new one, and
        after a text whose USE may or may not have run. None too for a schema whose name
        holds a dot (the login's: USE and COM_INIT_DB of one are refused), which the rules
        would misread: table t of schema `a.b` is not a.b.t."""
        db = self.db
        if self._uses or (db is not None and "." in db):
            return None
        return db

    @property
    def client_charset(self) -> str | None:
        """The ``character_set_client`` the server reads the next text in, which its
        record shows it read in; None while a change of it is on its way, or when the
        login named a collation the gateway does not know."""
        return None if self._charsets or self._resets else self._client

    @property
    def _current_reading(self) -> _Reading:
        """How the client's text is read now: only ASCII while a change of the client
        character set is on its way (the server reads what is sent behind it in the new
        one, or in the old one should the change fail)."""
        return _Reading.ASCII_ONLY if self._charsets or self._resets else self._reading

    def backslash_escapes(self, server_status: int) -> bool:
        """Whether the session reads a backslash in a string as an escape, as a new
        connection under the server's default ``sql_mode`` does and as the row estimate's
        count is written (False under NO_BACKSLASH_ESCAPES, or while that is not known)."""
        return not self._backslash_unknown and not server_status & _NO_BACKSLASH_ESCAPES

    @property
    def _backslash_unknown(self) -> bool:
        """Whether the server's last status flags may not tell its NO_BACKSLASH_ESCAPES:
        a change of sql_mode is on its way, or the last answer came under a SET
        STATEMENT's mode."""
        return bool(self._mode_changes) or self._stale_status or self._status_untrusted

    def may_run(self, decision: Decision) -> bool:
        """Whether a statement so decided may reach the server: allowed, held for a person
        who may approve it, or refused only in the records (shadow mode). What it does
        to the session is followed then, or an approved one would leave the gateway
        reading later statements in the wrong schema or character set."""
        return decision.action is not RuleAction.BLOCK or self.policy.shadow

    def text_job(self, cmd: ClientCommand, server_status: int) -> TextJob | None:
        """A statement text long enough to be classified away from the event loop, and
        not decided before (None: decide it now)."""
        code = cmd.command
        if (code != Command.QUERY and code != Command.STMT_PREPARE) or len(
            cmd.payload
        ) <= OFFLOAD_BYTES:
            return None
        sql = cmd.payload[1:]
        mode = _MODES[bool(server_status & _NO_BACKSLASH_ESCAPES), self._current_reading]
        backslash_unknown = self._backslash_unknown
        limit = self.policy.settings.max_statement_bytes
        if len(sql) <= limit and self.policy.decided_before(sql, mode, backslash_unknown):
            return None
        return TextJob(sql, mode, backslash_unknown, limit, self.masker is not None)

    def _decide_text(
        self, cmd: ClientCommand, label: str, server_status: int, classified: Classified | None
    ) -> Verdict:
        sql = cmd.payload[1:]
        policy = self.policy
        settings = policy.settings
        mode = _MODES[bool(server_status & _NO_BACKSLASH_ESCAPES), self._current_reading]
        backslash_unknown = self._backslash_unknown
        if classified is not None and classified.reading != (mode, backslash_unknown):
            classified = None  # an answer in between changed how the text reads
        if len(sql) <= settings.max_statement_bytes:
            found = None if classified is None else classified.found
            entry = policy.entry(sql, mode, backslash_unknown, found)
        else:
            if classified is not None:
                large = classified.found
            else:
                large = _large_insert(sql, mode, backslash_unknown, settings.max_statement_bytes)
            if large is None:  # forwarded unread (oversized = "allow"): it may write
                return self._guarded(self._oversized(sql, label), cmd, None)
            entry = _Entry(large)
        if len(entry.found) > MAX_STATEMENTS:
            return self._too_many(sql, label, len(entry.found))
        verdict = self._decide_found(cmd, label, entry)
        if not verdict.parts:  # only blanks, comments or ';': nothing runs
            return Verdict(label, (_EMPTY,))
        if self._start_mode is not None:
            modes = self._start_mode
            return self._verdict(label, tuple(replace(p, decision=modes) for p in verdict.parts))
        if policy.unreadable_modes and self.who.target in policy.unreadable_modes:
            modes = _server_mode_refusal(policy.unreadable_modes[self.who.target])
            return self._verdict(label, tuple(replace(p, decision=modes) for p in verdict.parts))
        refusal = verdict.refusal
        if self.masker is not None and (refusal is None or refusal.action is RuleAction.REVIEW):
            shadow = self._masked_name(entry.found)
            if shadow is not None:
                return self._verdict(
                    verdict.command,
                    tuple(replace(p, decision=shadow) for p in verdict.parts),
                )
            # a statement for review is checked too: an approval must not copy masked
            # values out in the clear (it is refused, never rewritten, then)
            readings = None if classified is None else classified.readings
            schema = self._reading_schema(cmd, verdict)
            return self._masking(
                verdict, sql, mode, backslash_unknown, schema, refusal is None, readings
            )
        return verdict

    def _masked_name(self, found: tuple[Classification, ...]) -> Decision | None:
        """A table created under a name a masking rule names (a temporary table that
        shadows a masked one, a name a rule with a wildcard schema matches) would mask
        what is written into it: chosen values would come back as their digests or last
        digits, which tells what the masked values are. (A rule for a column of every
        table, ``shop.*.ssn``, is not about names: docs/masking.md says what writers of
        such a column can learn.)"""
        masker = self.masker
        assert masker is not None
        for c in found:
            if c.inner is not None:  # EXECUTE IMMEDIATE 'CREATE TABLE ...', at any depth
                c = _innermost(c)
            if c.kind == "USE":
                target = _use_target(c)
                if target is not None and target.lower() in _STATEMENT_SCHEMAS:
                    return _statement_schema_use(target)
            if c.kind != "CREATE TABLE":
                continue
            for name in sorted(c.writes):
                schema, _, table = name.rpartition(".")
                schema = schema or self.schema or ""
                if masker.names_table(schema, table):
                    return Decision(
                        RuleAction.BLOCK,
                        "masking",
                        f"a table named {schema}.{table} would be masked like the one with "
                        f"masked columns for {self.who.identity} (what is written into it "
                        "would come back masked, a way to learn masked values). Use "
                        "another name",
                    )
        return None

    def _reading_schema(self, cmd: ClientCommand, verdict: Verdict) -> str | None:
        """The schema the unqualified names of a text are read in for masking. A text of
        one statement runs in the schema the session is in as it starts: a ``CALL`` (or
        an ``EXECUTE`` of one) may leave the session in another schema, but only once it
        has run, so its own entry in ``_uses`` does not count (it did, and every ``CALL``
        was read in no schema, where any rule with a wildcard table matched its name).
        A text of several is read in ``schema`` (None when a part of it moves)."""
        if len(verdict.parts) != 1 or cmd.id not in self._uses:
            return self.schema
        db = self.db_of(cmd)
        return None if db is not None and "." in db else db

    def _masking(
        self,
        verdict: Verdict,
        sql: bytes,
        mode: LexMode,
        backslash_unknown: bool,
        schema: str | None,
        rewrite: bool = True,
        readings: Readings | None = None,
    ) -> Verdict:
        """Layer one of masking: a masked column used other than as a plain projected
        value is rewritten so the value is masked by construction (rules with
        ``on_use = "rewrite"``) or the statement is refused. ``schema``: where its
        unqualified names are read (``_reading_schema``). ``readings``: the text's
        column references, read by ``classify_text``."""
        masker = self.masker
        assert masker is not None
        if readings is None:  # read once for both below (a text over 2 kB is not cached)
            readings = reference_readings(sql, mode, True, backslash_unknown)
        uses = masked_uses(
            sql,
            schema,
            masker.is_masked,
            mode,
            backslash_unknown=backslash_unknown,
            readings=readings,
        )
        if not uses:
            return verdict
        rules = [masker.rule_for(*use.origin) for use in uses]
        if rewrite and len(verdict.parts) == 1 and all(r is not None and r.rewrite for r in rules):
            text = mask_rewrite(
                sql,
                schema,
                masker.strategy_for,
                mode,
                backslash_unknown=backslash_unknown,
                readings=readings,
            )
            if text is not None and text.encode() != sql and len(text) < _MAX_REWRITE:
                columns = ", ".join(sorted({use.column for use in uses}))
                decision = Decision(
                    RuleAction.ALLOW, "masking", f"rewritten so that {columns} stay masked"
                )
                part = verdict.parts[0]
                return Verdict(
                    verdict.command,
                    (replace(part, decision=decision),),
                    rewritten=text,
                )
        first = uses[0]
        more = f" (and {len(uses) - 1} more such uses)" if len(uses) > 1 else ""
        if first.where == NOT_UNDERSTOOD:
            # its column is a word of the text a rule matches (`shop.create.*` under a
            # rule for `shop.*.ssn`), not a column the statement uses
            message = (
                "the gateway cannot read this statement the way the server will, and a "
                f"name in it may be a table with columns masked for {self.who.identity} "
                f"({first.column}), whose values it might show. Write it in a form the "
                "gateway reads (SELECT, INSERT, UPDATE or DELETE, with masked columns only "
                "selected as plain columns), leave the masked table out, or ask an "
                "operator to run it"
            )
        else:
            message = (
                f"{first.column} is masked for {self.who.identity}: it may only be selected "
                f"as a plain column, and here it is used {first.where}{more}. Select the "
                "column itself (its value comes back masked), or leave it out"
            )
        decision = Decision(RuleAction.BLOCK, "masking", message)
        parts = tuple(replace(p, decision=decision) for p in verdict.parts)
        return self._verdict(verdict.command, parts)

    def _too_many(self, sql: bytes, label: str, count: int) -> Verdict:
        decision = Decision(
            RuleAction.BLOCK,
            "too-many-statements",
            f"the text holds {count} statements, more than the {MAX_STATEMENTS} the gateway "
            "decides and records in one text. Send them in several texts",
        )
        text = sql.decode("utf-8", "replace")
        return self._verdict(label, (Part(text, "MULTI", decision, span=(0, len(sql))),))

    def _oversized(self, sql: bytes, label: str) -> Verdict:
        settings = self.policy.settings
        size = f"{len(sql)} bytes, more than the {settings.max_statement_bytes} the gateway reads"
        # recorded as the server reads it, in the client character set, with its bytes
        # where that is not them in UTF-8
        charset = self.client_charset
        if settings.oversized is OversizedAction.ALLOW:
            text, exact = _read(sql, charset)
            relayed = Decision(_RELAYED, "oversized", "")
            return Verdict(label, (Part(text, "UNCLASSIFIED", relayed, exact=exact),))
        if self.policy.shadow:
            text, exact = _read(sql, charset)
        else:
            text, exact = _refused_unread(sql, charset)
        decision = Decision(
            RuleAction.BLOCK,
            "oversized",
            f"the statement text is {size}. Send smaller statements (for example insert "
            "rows in batches), or pass large values as prepared-statement parameters",
        )
        return self._verdict(label, (Part(text, "UNKNOWN", decision, exact=exact),))

    def _decide_found(self, cmd: ClientCommand, label: str, entry: _Entry) -> Verdict:
        found = entry.found
        key = self._keys.get(label)
        schema = self.schema
        version = self.policy.through_version
        if key is None or key[1] != schema or key[0] is not self.who or key[3] != version:
            key = self._keys[label] = (self.who, schema, label, version)
        verdict = entry.get(key)
        if verdict is not None:
            return self._guarded(verdict, cmd, found)
        db = schema
        uses = False
        parts: list[Part] = []
        last = len(found) - 1
        single = last == 0
        stateful = False  # the verdict depends on the session: not cached
        calls = False  # a procedure runs: it may change the schema, then fail
        through = self.policy.through.get(self.who.target)
        for index, c in enumerate(found):
            touches_lexing = _touches_session(c)
            decision = decide(c, self.who, db, self.policy.rules, through)
            if self.may_run(decision) and _prepares_a_use(c, label):
                decision = _PREPARED_USE
            runs = c if c.inner is None else _innermost(c)  # EXECUTE IMMEDIATE 'KILL 5'
            if runs.kind == "KILL":
                stateful = True  # whose thread it is changes from session to session
                if decision == ALLOW:  # not a configured rule's allow
                    decision = self._kill_check(_kill_target(runs.text))
            if (c.variables or c.inner is not None) and self.may_run(decision):
                if _sets_state(c):
                    self.state_changed = True
                elif _names_utf8mb4(c):
                    self.count_collation = None
            if touches_lexing and self.may_run(decision):
                checked = self._session_checks(cmd, c, index, last, label)
                if checked is not None:
                    decision = checked
            if _sets_statement_mode(c):
                stateful = True
                if self.may_run(decision):
                    self._mode_changes.add(cmd.id)
                    self._statement_modes.add(cmd.id)
            catalog = _changes_catalog(runs) or (c.kind == "EXECUTE" and c.inner is None)
            prepares = any(s.kind == "PREPARE" for s in _chain(c))
            answers_as_call: bool | None = runs.kind == "CALL" and not prepares
            if not answers_as_call and c.kind == "EXECUTE" and c.inner is None:
                answers_as_call = None if self._prepared_calls else False
            parts.append(
                Part(
                    None if single else c.text,
                    c.kind,
                    decision,
                    c.functions,
                    catalog,
                    None if single else c.span,
                    calls=answers_as_call,
                )
            )
            if c.kind == "USE" or touches_lexing:
                stateful = True
                if c.kind == "USE" and self.may_run(decision) and label == "COM_QUERY":
                    db = _use_target(c)  # None when it cannot be read: any schema then
                    uses = True
            if runs.kind == "CALL" or c.kind == "EXECUTE":
                stateful = True  # what it does to the schema depends on the session
            if runs.stored_functions and self.may_run(decision):
                stateful = True
                calls = True  # a function may set character_set_results or sql_mode
            if self.may_run(decision) and (runs.kind == "CALL" or c.kind == "EXECUTE"):
                if any(s.kind == "PREPARE" for s in _chain(c)):
                    self._prepared_calls = self._prepared_calls or runs.kind == "CALL"
                elif runs.kind == "CALL" or (c.inner is None and self._prepared_calls):
                    # a procedure may leave the session in another schema (a USE it runs
                    # as dynamic SQL lasts when it is of the current schema): not known
                    # after it, for the rest of the text too; nor the character set of
                    # result names, which one it runs may set
                    db = None
                    uses = True
                    calls = True
        if stateful:
            verdict = self._verdict(label, tuple(parts))
        else:
            if single and not parts[0].decision.refused:
                verdict = self.policy.allowed_verdict(label, parts[0])
            else:
                verdict = self._verdict(label, tuple(parts))
            entry.put(key, verdict)
        verdict = self._guarded(verdict, cmd, found)
        if uses and (verdict.refusal is None or self.may_run(verdict.refusal)):
            self._uses[cmd.id] = (db, single and not calls)
        if calls and (verdict.refusal is None or self.may_run(verdict.refusal)):
            self._after_call(cmd)
        return verdict

    def _after_call(self, cmd: ClientCommand) -> None:
        """Stored code runs (a procedure, a function): the character set of result names
        is not known from now on (it may ``SET character_set_results``, which lasts after
        it), nor what the answers' NO_BACKSLASH_ESCAPES flag says (see _status_untrusted)."""
        self._results_sets[cmd.id] = (None, False)
        self._status_untrusted = True
        self._tell_masker()

    def _session_checks(
        self, cmd: ClientCommand, c: Classification, index: int, last: int, label: str
    ) -> Decision | None:
        """What only the session can know: statements that change how text is read, or
        the character set of result names."""
        if not _touches_session(c):
            return None
        # a statement run by another one, at any depth, is a prepared one
        assigned = c.variables if c.inner is None else _nested_variables(c.inner)
        changed = {name for name, _ in assigned if name in _LEXING_VARIABLES}
        results = {name for name, _ in assigned if name in _RESULTS_VARIABLES}
        prepared = c.inner is not None or label == "COM_STMT_PREPARE"
        if results and not changed and prepared:
            return Decision(
                RuleAction.BLOCK,
                "lexing-state",
                f"a prepared SET of {', '.join(sorted(results))} would change the character "
                "set of result names without the gateway seeing it, and masking reads them. "
                "Send the SET as a plain statement",
            )
        if changed and prepared:
            return Decision(
                RuleAction.BLOCK,
                "lexing-state",
                f"a prepared SET of {', '.join(sorted(changed))} would change how the server "
                "reads later statements without the gateway seeing it. Send the SET as a "
                "plain statement",
            )
        if changed and index != last:
            return Decision(
                RuleAction.BLOCK,
                "lexing-state",
                f"SET {', '.join(sorted(changed))} changes how the server reads the "
                "statements after it, so it must be the last statement of its text. Send it "
                "on its own first",
            )
        if "sql_mode" in changed:
            self._mode_changes.add(cmd.id)
            self._mode_sets.add(cmd.id)
        for name, value in assigned:
            if name in CHARSET_VARIABLES and value:
                self._charsets[cmd.id] = value.lower()
            if name in _RESULTS_VARIABLES and value:
                # a failed text whose SET was not last may have run the SET
                self._results_sets[cmd.id] = (value.lower(), index == last)
        self._tell_masker()
        return None

    def _reaches_now(self, sql: bytes, server_status: int) -> Decision | None:
        """The refusal of an execute of a prepared text that now reaches a table a
        refusing rule protects, through a view, a foreign key or a trigger the gateway did
        not know when the text was decided at its prepare; None when it reaches nothing
        more. A text prepared beyond those this session keeps counts as decided with none
        known."""
        through = self.policy.through.get(self.who.target)
        if not through:
            return None
        then, schema = self._prepared_under.get(sql, (None, self.schema))
        if then is through:
            return None
        mode = LexMode(no_backslash_escapes=bool(server_status & _NO_BACKSLASH_ESCAPES))
        try:
            found = self.policy.classify(sql, mode, backslash_unknown=True)
        except LexError:
            return None  # decided as it was at its prepare
        now = self._refused_since(found, schema, then, through)
        if now is not None:
            return Decision(
                RuleAction.BLOCK,
                now.rule,
                f"{now.reason}. The statement was prepared before the gateway knew this: "
                "prepare it again to have it decided",
            )
        if sql in self._prepared_under:
            self._prepared_under[sql] = (through, schema)  # vouched for as things are now
        return None

    def _refused_since(
        self,
        found: tuple[Classification, ...],
        schema: str | None,
        then: WriteThrough | None,
        through: WriteThrough,
    ) -> Decision | None:
        """The first refusal of a prepared text by a rule that matches it with what
        writes reach now (``through``) and did not when it was decided (``then``). A rule
        that matched then too (the prepare ran in shadow mode) is passed over for the
        rules after it: one of those may match only now (a hold on customers, and a block
        on orders its DELETE now cascades into)."""
        for c in found:
            rules = self.policy.rules
            while True:
                now = decide(c, self.who, schema, rules, through)
                if not now.refused:
                    break
                before = decide(c, self.who, schema, rules, then)
                if not before.refused or before.rule != now.rule:
                    return now
                rest = tuple(rule for rule in rules if rule.name != now.rule)
                if len(rest) == len(rules):
                    break  # a built-in rule: what writes reach is not its concern
                rules = rest
        return None

    def _named_now(self, name: str, through: WriteThrough) -> Decision | None:
        """The refusal of an ``EXECUTE name`` (SQL level) whose PREPARE now reaches a
        table a refusing rule protects, through a view or a foreign key the gateway did
        not know when it decided the PREPARE; None when it reaches nothing more. A name
        the session prepared but keeps nothing of (beyond ``_PREPARES_KEPT`` names, or
        deallocated, perhaps by a text that failed before the DEALLOCATE ran) is refused
        whenever writes may reach other tables, and one kept without its text (too long,
        not a literal) once they changed: neither can be decided again (fail closed)."""
        facts = self._named.get(name)
        if facts is None:
            if name not in self._prepared_names:
                return None  # never prepared here: nothing runs (the server refuses it)
        elif facts.through is through:
            return None
        quoted = "`" + name.replace("`", "``") + "`"
        if facts is None:
            return Decision(
                RuleAction.BLOCK,
                "prepared-unknown",
                f"the gateway no longer keeps the text {quoted} was prepared from (it keeps "
                f"those of a session's last {_PREPARES_KEPT} names, and forgets a name "
                "deallocated), so it cannot tell whether a write it runs now reaches a table "
                "a rule protects through this target's views and foreign keys. PREPARE "
                f"{name} again to have it decided",
            )
        if facts.text is None:
            return Decision(
                RuleAction.BLOCK,
                "prepared-unknown",
                f"the views or foreign keys of this target changed since {quoted} was "
                "prepared, so a write it runs may now reach a table a rule protects, and its "
                f"text was too long for the gateway to keep (over {_NAMED_TEXT_BYTES} bytes) "
                f"to decide it again. PREPARE {name} again to have it decided",
            )
        try:
            found = self.policy.classify(facts.text, facts.mode, facts.backslash_unknown)
        except LexError:
            return None  # decided as it was at its PREPARE
        now = self._refused_since(found, facts.schema, facts.through, through)
        if now is None:
            self._named[name] = replace(facts, through=through)  # vouched for as things are
            return None
        return Decision(
            RuleAction.BLOCK,
            now.rule,
            f"{now.reason}. The statement {quoted} was prepared before the gateway knew "
            f"this: PREPARE {name} again to have it decided",
        )

    def _changes_lexing(self, sql: bytes, server_status: int) -> bool:
        """Whether a prepared statement's text sets a variable that changes lexing."""
        return self._prepared_does(
            sql,
            server_status,
            _MAY_SET,  # no SET: a large text is not parsed again here
            lambda s: any(name in _LEXING_VARIABLES for name, _ in s.variables),
        )

    def _runs_call(self, sql: bytes, server_status: int) -> bool:
        """Whether a prepared statement's text runs a stored procedure."""
        return self._prepared_does(sql, server_status, _MAY_CALL, lambda s: s.kind == "CALL")

    def _prepared_does(
        self,
        sql: bytes,
        server_status: int,
        word: re.Pattern[bytes],
        test: Callable[[Classification], bool],
    ) -> bool:
        """Whether a statement of a prepared text, at any depth, passes ``test``; only
        read when ``word`` is in it; a text that does not lex may do anything."""
        if word.search(sql) is None:
            return False
        mode = LexMode(no_backslash_escapes=bool(server_status & _NO_BACKSLASH_ESCAPES))
        try:
            found = self.policy.classify(sql, mode, backslash_unknown=True)
        except LexError:
            return True
        return any(test(s) for c in found for s in _chain(c))

    def _follow_names(
        self,
        cmd: ClientCommand,
        verdict: Verdict,
        sql: bytes,
        mode: LexMode,
        backslash_unknown: bool,
        opened: int = 0,
    ) -> Verdict:
        """SQL-level prepared statements by name, in a text read in ``mode``. A PREPARE
        that fails on the server drops the statement prepared under its name before; one
        the gateway refuses never reaches it, and EXECUTE of the name would run that
        earlier statement, though the client saw its PREPARE fail. So an EXECUTE (at any
        depth) of a name whose last PREPARE was refused, or failed (the gateway cannot
        tell whether it reached the server), while an earlier one of the name may hold a
        statement, is refused (``prepare-refused``) until the name is prepared again,
        deallocated, or the connection reset. An EXECUTE of a name prepared before a view
        or a foreign key changed what its write reaches is decided again
        (``_named_now``). A PREPARE of a name that holds no statement while the session
        holds ``max_prepared`` (``opened`` of the protocol's among them) is refused."""
        try:
            statements = split_statements(sql, mode)
        except LexError:
            return verdict  # the text is refused as not understood
        prepared: list[str] = []
        dropped: list[str] = []
        executed: str | None = None
        reread: Decision | None = None
        # what writes reach now, when they may reach other tables at all (never without
        # a block or review rule on tables): an EXECUTE is then decided again
        through = self.policy.through.get(self.who.target) if self.policy.through else None
        since: tuple[Decision, Statement] | None = None  # its refusal, and the EXECUTE
        bound: tuple[Decision, Statement] | None = None  # an EXECUTE's values' refusal
        named: list[tuple[str, _NamedText | None]] = []  # in order; None: deallocated
        named_at: list[Statement] = []  # the statement of each
        # names this text prepares (from a where_bindable text, else None) or deallocates
        binds: dict[str, _Bindable | None] = {}
        schema = self.schema  # where a PREPARE's names are read (None: not known)
        for statement in statements:
            tokens = statement.tokens
            for i, token in enumerate(tokens):
                if token.kind != Tok.WORD:
                    continue
                word = token.text
                if word == "PREPARE":
                    name = _statement_name(tokens, i + 1)
                    if name is None:
                        continue
                    if word_at(tokens, i + 2) == "FROM":
                        prepared.append(name)
                        text = _prepared_text(sql, tokens, i + 3, mode)
                        kept = _NamedText(text, mode, backslash_unknown, through, schema)
                        if text is None or _RETURNING_WORD.search(text) is not None:
                            self._named_returning.add(name)
                        else:
                            self._named_returning.discard(name)
                        named.append((name, kept))
                        named_at.append(statement)
                        binds[name] = self._named_bindable(
                            sql, statement, i + 2, mode, backslash_unknown
                        )
                    elif i and word_at(tokens, i - 1) in ("DEALLOCATE", "DROP"):
                        dropped.append(name)
                        named.append((name, None))
                        named_at.append(statement)
                        binds[name] = None
                elif word == "EXECUTE":
                    name = _statement_name(tokens, i + 1)
                    if name is None:
                        continue
                    bindable = binds[name] if name in binds else self._bindable_names.get(name)
                    if bindable is not None and bound is None:
                        refusal = self._named_bound(name, bindable, sql, statement, i)
                        if refusal is not None:
                            bound = (refusal, statement)
                    if name in prepared:
                        continue  # (prepared again earlier in the text: it runs that)
                    if executed is None and name in self._unprepared:
                        executed = name
                    elif reread is None and name in self._named_charsets:
                        charset = self._named_charsets[name]
                        if charset != self.client_charset:
                            reread = _prepared_in_other_charset(charset, self.client_charset)
                    if since is None and through:
                        now = self._named_now(name, through)
                        if now is not None:
                            since = (now, statement)
            first = word_at(tokens, 0)
            if first in ("USE", "CALL") or (first == "EXECUTE" and self._prepared_calls):
                schema = None  # the schema of what follows is not known for certain
        runs = verdict.refusal is None or verdict.shadow
        refusal = _prepare_refused(executed) if executed is not None else reread
        if refusal is not None and runs:
            parts = tuple(replace(p, decision=refusal) for p in verdict.parts)
            verdict = self._verdict(verdict.command, parts)
            runs = verdict.shadow
        elif since is not None and runs:
            verdict = self._refuse_at(verdict, *since)
            runs = verdict.shadow
        elif bound is not None and runs:
            verdict = self._refuse_at(verdict, *bound)
            runs = verdict.shadow
        held = self._named_open
        if runs and named:
            held = set(held)
            for (name, facts), statement in zip(named, named_at, strict=True):
                if facts is None:
                    held.discard(name)
                elif name not in held:
                    if opened + len(held) >= self.policy.max_prepared:
                        refusal = _too_many_prepared(
                            opened + len(held), self.policy.max_prepared, name
                        )
                        # (a limit of the server's resources: in shadow mode too)
                        verdict = self._refuse_at(verdict, refusal, statement)
                        verdict = replace(verdict, shadow=False)
                        runs = False
                        break
                    held.add(name)
        if runs and held is not self._named_open:
            before = self._named_open
            self._opening[cmd.id] = (
                frozenset(held - before),
                frozenset(before - held),
                len(statements) == 1,
            )
            self._named_open = held
        if runs:
            for name, bindable in binds.items():
                if bindable is None:
                    self._bindable_names.pop(name, None)
                    continue
                if name not in self._bindable_names and len(self._bindable_names) >= (
                    _PREPARES_KEPT
                ):
                    bindable = replace(bindable, text=None)  # decided without its text
                self._bindable_names[name] = bindable
            for name, facts in named:
                if facts is None:
                    self._named.pop(name, None)
                else:
                    _keep_last(self._named, name, facts)
            self._unprepared.difference_update(prepared)
            self._unprepared.difference_update(dropped)
            for name in dropped:
                self._named_charsets.pop(name, None)
            for name in prepared:  # (the text as a whole: a name's own may be ASCII)
                if sql.isascii():
                    self._named_charsets.pop(name, None)
                else:
                    self._named_charsets[name] = self.client_charset
            if prepared:  # ... unless it fails (see completed)
                self._prepared_names.update(prepared)
                self._naming[cmd.id] = prepared
        else:  # a name never prepared holds nothing: EXECUTE is the server's to refuse
            self._unprepared.update(n for n in prepared if n in self._prepared_names)
        return verdict

    def _refuse_at(self, verdict: Verdict, refusal: Decision, statement: Statement) -> Verdict:
        """The verdict with the statement of a text at ``statement``'s bytes refused
        (each of them, when the parts cannot be told apart by their bytes): the others
        are recorded as not run for it."""
        where = (statement.start, statement.end)
        parts = verdict.parts
        if len(parts) == 1 or not any(p.span == where for p in parts):
            refused = tuple(replace(p, decision=refusal) for p in parts)
        else:
            refused = tuple(replace(p, decision=refusal) if p.span == where else p for p in parts)
        return self._verdict(verdict.command, refused)

    def _verdict(self, label: str, parts: tuple[Part, ...]) -> Verdict:
        refusal = next((p.decision for p in parts if p.decision.refused), None)
        return Verdict(label, parts, refusal, shadow=refusal is not None and self.policy.shadow)

    def _guarded(
        self,
        verdict: Verdict,
        cmd: ClientCommand,
        found: tuple[Classification, ...] | None = (),
        prepared: bytes | None = None,
    ) -> Verdict:
        """The verdict, or the guard's refusal of the whole command. Each statement of a
        text counts toward the rate; the rows limit refuses a command when any of its
        statements may change rows (``_writes``), and counts each of those of a command it
        lets through as one row changed until ``completed``. ``found`` None: a text
        forwarded unread; ``prepared``: the text a COM_STMT_EXECUTE runs."""
        if verdict.refusal is not None and not verdict.shadow:
            return verdict
        settings = self.policy.settings
        if not settings.statements_per_second and not settings.rows_changed_per_minute:
            return verdict  # the guard is off (what guard() would find, without the clock)
        writes = 0  # its statements that may change rows
        if settings.rows_changed_per_minute:
            if prepared is not None:  # what the prepared text does, if it was read here
                writes = int(prepared not in self._prepared_reads)
            elif found is None:
                writes = 1
            else:
                for c in found:  # a loop, not sum(): no generator per statement
                    if _writes(c):
                        writes += 1
                if cmd.command == Command.STMT_PREPARE:
                    self._prepared(cmd.payload[1:], writes > 0)
        count = len(verdict.parts) or 1
        # (a prepare changes no rows; a command decided after the session's end is not
        # given back by it)
        runs = cmd.command != Command.STMT_PREPARE and not self._over
        tripped = self.policy.guard(self.who.identity, writes, time.monotonic(), count, runs)
        if tripped is None:
            if writes and runs:  # counted as running until it completes
                in_flight = self._in_flight
                in_flight[cmd.id] = in_flight.get(cmd.id, 0) + writes
            if writes and cmd.command in _RETURNS_ROWS:
                text = cmd.payload[1:] if prepared is None else prepared
                if _RETURNING_WORD.search(text) is not None or (
                    self._named_returning and found and _executes_by_name(found)
                ):
                    self._returning.add(cmd.id)
            return verdict
        parts = tuple(replace(p, decision=tripped) for p in verdict.parts)
        return self._verdict(verdict.command, parts)

    def _note_bindable(
        self, sql: bytes, mode: LexMode, backslash_unknown: bool, prepared: dict[int, bytes]
    ) -> None:
        """Remember a prepared text whose WHERE values bound to it may make true for every
        row, for its executes (``_bound_refusal``). Only a text with a placeholder and the
        word LIKE, RLIKE or REGEXP is looked at again (a cache hit: it was just decided);
        the texts kept are those of statements the session still holds."""
        if b"?" not in sql or _PATTERN_WORD.search(sql) is None:
            return
        if len(sql) > self.policy.settings.max_statement_bytes:
            return  # forwarded unread, as configured
        found = self.policy.classify(sql, mode, backslash_unknown)
        if not any(s.where_bindable for c in found for s in _chain(c)):
            return
        if len(self._bindable) >= _BINDABLE_KEPT:
            held = {self._rewrites.get(text, text) for text in prepared.values()}
            self._bindable = {k: v for k, v in self._bindable.items() if k in held}
        self._bindable[sql] = (mode, backslash_unknown)

    def _named_bindable(
        self, sql: bytes, statement: Statement, i: int, mode: LexMode, backslash_unknown: bool
    ) -> _Bindable | None:
        """What an SQL-level ``PREPARE name FROM`` at ``statement.tokens[i]`` (the word
        FROM) of the text ``sql`` prepares, when values bound to it may make its WHERE true
        for every row (None: they cannot). Only a text with a placeholder and the word
        LIKE, RLIKE or REGEXP is read again."""
        text = _prepared_text(sql, statement.tokens, i + 1, mode)
        looked_at = statement.text if text is None else text
        if b"?" not in looked_at or _PATTERN_WORD.search(looked_at) is None:
            return None
        try:
            found = self.policy.classify(looked_at, mode, backslash_unknown)
        except LexError:
            return None  # refused as not understood
        if not any(s.where_bindable for c in found for s in _chain(c)):
            return None
        return _Bindable(text, mode, backslash_unknown, self.schema)

    def _named_bound(
        self, name: str, facts: _Bindable, sql: bytes, statement: Statement, i: int
    ) -> Decision | None:
        """The refusal of ``EXECUTE name [USING ...]`` (the word EXECUTE at
        ``statement.tokens[i]``) of a name prepared from a ``where_bindable`` text whose
        USING values make its WHERE true for every row, or may (a variable, an
        expression: values the gateway does not read); None when they do not."""
        tokens = statement.tokens
        if word_at(tokens, i + 2) == "USING":
            values = using_values(tokens, i + 3, facts.mode)
            shown = shown_values(using_shown(sql, tokens, i + 3), values)
        else:
            values, shown = [], "no USING values (the server refuses that too)"
        if facts.text is None:
            quoted = "`" + name.replace("`", "``") + "`"
            return Decision(
                RuleAction.BLOCK,
                "prepared-unknown",
                f"the WHERE clause of the statement {quoted} was prepared from may be true "
                f"for every row with some values bound to it (a LIKE pattern of only '%'), "
                f"and the gateway does not keep its text (over {_NAMED_TEXT_BYTES} bytes, "
                f"or past the {_PREPARES_KEPT} names it keeps) to decide it with {shown}. "
                "DEALLOCATE the prepared statements no longer needed, and PREPARE "
                f"{name} again from a text under {_NAMED_TEXT_BYTES} bytes",
            )
        size = _bound_size(facts.text, values)
        if size > _BOUND_TEXT_BYTES:
            quoted = "`" + name.replace("`", "``") + "`"
            return _bound_too_long(f"the statement {quoted} was prepared from", size)
        c = bind(facts.text, facts.mode, values, facts.backslash_unknown)
        return self._bound_decision(c, shown, facts.schema)

    def _bound_decision(self, c: Classification, named: str, schema: str | None) -> Decision | None:
        """The refusal of a prepared statement ``bind`` read with the values it binds
        (``named``, as the refusal names them), as the text with those literals would be
        decided (the rules first: a configured allow of the statement allows it); None
        when its WHERE is not true for every row with them."""
        if c.problem is None and not any(s.where_always_true for s in _chain(c)):
            return None
        decision = decide(with_bound(c, named), self.who, schema, self.policy.rules)
        if decision.refused and (c.problem is not None or decision.rule in WITHOUT_WHERE):
            return decision
        return None

    def _bound_refusal(
        self, sql: bytes, fields: Mapping[str, str | int | list[str]]
    ) -> Decision | None:
        """The refusal of an execute of a ``where_bindable`` prepared text whose values
        make its WHERE true for every row (a LIKE pattern of only '%'), or may (a value
        the gateway did not read: long data, over ``MAX_VALUE`` bytes, a block it could
        not read); None when they do not. As the text with literals would be decided
        (the rules first: an allow of the statement allows it)."""
        mode, backslash_unknown = self._bindable[sql]  # as it was read at its prepare
        params = fields.get("params")
        values: list[str | None] = []
        named: list[str] = []
        if isinstance(params, list):
            for i, value in enumerate(params):
                values.append(_param_literal(value, mode))
                if is_percent_only(value):
                    named.append(f"parameter {i + 1} = {value} (a pattern of only '%')")
                elif values[-1] is None:
                    named.append(f"parameter {i + 1}, {_not_read(value)}")
            if not named:  # values that match every row together (LIKE x OR NOT LIKE x)
                named = [f"parameter {i + 1} = {value}" for i, value in enumerate(params)]
            if "params_more" in fields:
                named.append(f"the parameters after the first {len(params)}, not read")
        else:
            why = fields.get("params_error", "not read")
            named.append(f"the values, not read by the gateway ({why})")
        size = _bound_size(sql, values)
        if size > _BOUND_TEXT_BYTES:
            return _bound_too_long("the prepared statement", size)
        c = bind(sql, mode, values, backslash_unknown)
        schema = self._prepared_under.get(sql, (None, self.schema))[1]
        return self._bound_decision(c, "; ".join(named), schema)

    def _prepared(self, sql: bytes, writes: bool) -> None:
        """Remember whether a prepared text changes rows, for the rows limit on its
        executes, which know only the text. A text once prepared as one that may change
        rows stays one: the same bytes may be read otherwise under another sql_mode
        (``'a\\', f() -- '`` calls f only with NO_BACKSLASH_ESCAPES), and the server keeps
        each statement as it was read at its prepare."""
        reads = self._prepared_reads
        if writes:
            if sql in reads:
                reads.discard(sql)
                self._prepared_reads_bytes -= len(sql)
            written = self._prepared_writes
            if written is None:
                return
            if len(written) >= _PREPARED_READS_LIMIT:
                # forgotten, they could be taken for reads again: every execute of this
                # session counts as a write from now on
                self._prepared_writes = None
                reads.clear()
                self._prepared_reads_bytes = 0
                return
            written.add(hash(sql))
            return
        written = self._prepared_writes
        if written is None or sql in reads or hash(sql) in written:
            return
        if len(reads) >= _PREPARED_READS_LIMIT or (
            self._prepared_reads_bytes + len(sql) > _PREPARED_READS_BYTES
        ):
            reads.clear()
            self._prepared_reads_bytes = 0
        reads.add(sql)
        self._prepared_reads_bytes += len(sql)

    # ---------------------------------------------------------------- completed

    @property
    def results_charset(self) -> str | None:
        """The session's ``character_set_results`` as far as it is known now (None: not
        known): the login's, then each SET of it that succeeded."""
        return self._results

    def answer_charset(self, cmd: ClientCommand, statements: int) -> str | None:
        """The ``character_set_results`` the server sends ``cmd``'s column names, error
        messages and OK info in (its results character set when the answer began), for
        the recording: ask before ``completed``. None when it is not known, or when the
        command may change it part way through its answer (stored code, or a text of
        several statements with a SET of it)."""
        pending = self._results_sets.get(cmd.id)
        if pending is not None and (pending[0] is None or statements > 1):
            return None
        return self._results

    def completed(
        self,
        cmd: ClientCommand,
        error: int | None,
        affected: int,
        sent: bool = True,
        rows: int = 0,
    ) -> None:
        """Follow what a finished command changed in the session. ``sent``: it reached
        the server (False: the gateway answered it, or the session ended first);
        ``rows``: the rows its answer returned."""
        if cmd.command == Command.STMT_EXECUTE:
            self._params.answered(cmd.id, error, sent)
        self._mode_changes.discard(cmd.id)
        self._preparing.discard(cmd.id)
        if self._closing:
            self._closing.pop(cmd.id, None)
        if cmd.id in self._mode_sets:
            self._mode_sets.discard(cmd.id)
            if error is None:  # the flag follows the mode it set
                self._status_untrusted = False
        if cmd.id in self._statement_modes:
            self._statement_modes.discard(cmd.id)
            self._stale_status = True
        elif error is None and cmd.command in _ANSWERED_WITH_STATUS:
            # the answer's status flags are the session's again (an answer without
            # flags leaves those of the SET STATEMENT's in place)
            self._stale_status = False
        if self._resetting:
            dropped = self._resetting.pop(cmd.id, None)
            if dropped is not None and error is not None:
                self._named_open.update(dropped)
        if self._opening:
            opening = self._opening.pop(cmd.id, None)
            if opening is not None and error is not None:
                self._failed_naming(cmd, opening, sent)
        if self._naming:
            names = self._naming.pop(cmd.id, None)
            if names is not None and error is not None:
                self._unprepared.update(names)  # refused on its way, or failed: see _follow_names
                for failed in names:  # what it prepared may not be what the name holds
                    self._named.pop(failed, None)
        use = self._uses.pop(cmd.id, None)
        charset = self._charsets.pop(cmd.id, None)
        self._resets.discard(cmd.id)
        results = self._results_sets.pop(cmd.id, None)
        if cmd.command == Command.RESET_CONNECTION and error is None:
            self._unprepared.clear()  # the server dropped every prepared statement
            self._prepared_names.clear()
            self._named_charsets.clear()
            self._named.clear()
            self._named_returning.clear()
            self._bindable_names.clear()
            self._reading = self._login_reading
            self._results = self._login_results
            self._client = self._login_client
        if results is not None:
            name, certain = results
            if error is None:
                self._results = name  # None: not known (after a procedure)
            elif not certain:
                self._results = None
        self._tell_masker()
        if use is not None:
            schema, certain = use
            if error is None:
                self.db = schema
            elif not certain:  # a statement after the USE failed, or the USE itself
                self.db = None
        if self._returning and cmd.id in self._returning:
            # a write's RETURNING answers with a row for each row it changed, and with
            # no count of them: the server's OK of a result set says 0
            self._returning.discard(cmd.id)
            affected += rows
        # rows changed before an error count too (a text whose last statement failed);
        # those counted while it ran are given back, also when it never ran
        in_flight = self._in_flight.pop(cmd.id, 0) if self._in_flight else 0
        self.policy.rows_changed(self.who.identity, affected, time.monotonic(), in_flight)
        if error is not None:
            return
        if charset is not None:
            self._reading = _named_reading(charset)
            self._client = charset

    def ended(self) -> None:
        """The session is over: the commands it let through that no completion will come
        for stop counting as running (a completion that still comes counts its rows)."""
        self._over = True
        if self._in_flight:
            in_flight = sum(self._in_flight.values())
            self._in_flight.clear()
            self.policy.rows_changed(self.who.identity, 0, time.monotonic(), in_flight)

    def _failed_naming(
        self,
        cmd: ClientCommand,
        opening: tuple[frozenset[str], frozenset[str], bool],
        sent: bool,
    ) -> None:
        """A text that prepared or deallocated names failed: what they hold now. Not
        sent, nothing changed there. One statement that failed there holds nothing under
        its name (a failed PREPARE drops what the name held). Of a text of several, the
        statements after the failed one did not run: a name it deallocated may still
        hold one, and one it prepared may too (counted: the limit errs on the safe side)."""
        added, removed, lone = opening
        if not sent:
            self._named_open.difference_update(added)
            self._named_open.update(removed)
        elif lone:
            for name in self._naming.get(cmd.id, ()):
                self._named_open.discard(name)
        else:
            self._named_open.update(removed)


#: A text with no statement in it still gets its ledger record, and its result (an OK
#: for a comment, "Query was empty" for nothing at all).
_EMPTY = _part(None, "EMPTY", "empty")

_KILL = Classification(
    kind="KILL",
    text="KILL",
    reads=frozenset(),
    writes=frozenset(),
    has_where=False,
    where_always_true=False,
    multi_table=False,
    functions=frozenset(),
    variables=(),
    flags=frozenset(),
    problem=None,
    literal_independent=True,
)

_USE = replace(_KILL, kind="USE", text="USE")


def _use_of(schema: str) -> Classification:
    """What the text ``USE `schema``` classifies as: how COM_INIT_DB and the database of a
    login are decided and recorded."""
    return replace(_USE, text="USE `" + schema.replace("`", "``") + "`")


_INTRODUCED = re.compile(rb"(?<![A-Za-z0-9_$])(?:_[A-Za-z0-9]+|[Nn])\?")


class _Reading(Enum):
    """How the gateway reads bytes >= 0x80 in a client character set (see LexMode)."""

    UTF8 = "utf8"
    EIGHT_BIT = "eight-bit"
    ASCII_ONLY = "ascii-only"


_MODES = {
    (nbe, reading): LexMode(
        no_backslash_escapes=nbe,
        multibyte_unsafe=reading is _Reading.ASCII_ONLY,
        eight_bit=reading is _Reading.EIGHT_BIT,
    )
    for nbe in (False, True)
    for reading in _Reading
}


_DEFAULT_MODE = LexMode()


@dataclass(frozen=True, slots=True)
class TextJob:
    """What classifying one statement text takes, all of it picklable: a worker process
    does it (``classify_text``) while the event loop serves the other sessions."""

    sql: bytes
    mode: LexMode
    backslash_unknown: bool
    limit: int  # [policy] max_statement_bytes: a longer text only if it is an INSERT
    references: bool  # the session has masked columns: read the column references too


@dataclass(frozen=True, slots=True)
class Classified:
    """``classify_text``'s answer, for ``SessionPolicy.decide``."""

    reading: tuple[LexMode, bool]  # the job's mode and backslash_unknown
    found: tuple[Classification, ...] | None  # None: too large, and not an INSERT
    readings: Readings | None  # the column references, when the job asked for them


def unclassified(job: TextJob, problem: str) -> Classified:
    """What a job that could not be done gives: a text not understood (refused)."""
    return Classified((job.mode, job.backslash_unknown), (unreadable(job.sql, problem),), None)


def classify_text(job: TextJob) -> Classified:
    """Classify a text as ``SessionPolicy.decide`` would, without any state or cache."""
    sql, mode, backslash_unknown = job.sql, job.mode, job.backslash_unknown
    if len(sql) <= job.limit:
        found: tuple[Classification, ...] | None = classify_uncertain(
            sql, mode, True, backslash_unknown, cached=False
        )
    else:
        found = _large_insert(sql, mode, backslash_unknown, job.limit)
    readings = None
    if job.references and found is not None:
        readings = reference_readings(sql, mode, True, backslash_unknown)
    return Classified((mode, backslash_unknown), found, readings)


_INERT_VARIABLES = frozenset(
    {
        "autocommit",
        "transaction",
        "transaction_isolation",
        "tx_isolation",
        "transaction_read_only",
        "tx_read_only",
        "max_execution_time",
        "max_statement_time",
        "innodb_lock_wait_timeout",
        "lock_wait_timeout",
        "wait_timeout",
        "interactive_timeout",
        "net_read_timeout",
        "net_write_timeout",
        "sql_notes",
        "sql_warnings",
        "max_error_count",
        "profiling",
        "session_track_schema",
        "session_track_state_change",
        "session_track_system_variables",
        "session_track_transaction_info",
    }
)
"""Session variables whose value no expression reads: a client's usual SETs at connect
(autocommit, the isolation level, timeouts) leave a held statement's rows countable."""


def _sets_state(c: Classification) -> bool:
    """Whether a statement (or one it runs) sets a variable an expression may read
    (any but ``_INERT_VARIABLES``)."""
    assigned = c.variables if c.inner is None else _nested_variables(c.inner)
    return any(
        name not in _INERT_VARIABLES
        and not (name in _CONNECT_CHARSETS and (value or "").strip("'\"`").lower() == "utf8mb4")
        for name, value in assigned
    )


def _names_utf8mb4(c: Classification) -> bool:
    """Whether a statement makes utf8mb4's default collation the one it compares literals
    in (``SET NAMES utf8mb4``, ``SET character_set_connection = utf8mb4``)."""
    return any(
        name in ("names", "character_set_connection")
        and (value or "").strip("'\"`").lower() == "utf8mb4"
        for name, value in c.variables
    )


_CONNECT_CHARSETS = frozenset(
    {"names", "character_set_client", "character_set_connection", "character_set_results"}
)
"""A SET of these to utf8mb4 (without a COLLATE: that is ``collation_connection``) is
what connectors send at connect, and what the row estimate's own connection reads in."""


#: Kinds whose text holds another statement (in a string, or after FOR).
_HOLDS_A_STATEMENT = frozenset({"PREPARE", "EXECUTE", "SET STATEMENT", "EXPLAIN", "ANALYZE"})


def _login_reading(collation: int | None) -> _Reading:
    if collation in _UTF8_COLLATIONS:
        return _Reading.UTF8
    if collation in _EIGHT_BIT_COLLATIONS:
        return _Reading.EIGHT_BIT
    return _Reading.ASCII_ONLY


def _canonical_charset(charset: str | None) -> str | None:
    """A character set's name as the server reports it (``utf8`` is ``utf8mb3``)."""
    if charset is None:
        return None
    charset = charset.lower()
    return "utf8mb3" if charset == "utf8" else charset


_PATTERN_WORD = re.compile(rb"like|regexp", re.IGNORECASE)  # (RLIKE too)
_BINDABLE_KEPT = 256  # prepared texts kept before those of closed statements are dropped


def _not_read(value: str) -> str:
    """A value of an execute's record the gateway did not read, as a refusal names it."""
    if value == "(long data)":
        return "sent apart with COM_STMT_SEND_LONG_DATA, which the gateway does not read"
    if value.startswith("("):
        return f"{value[1:-1]}, over the {MAX_VALUE} bytes the gateway reads of a value"
    return "not read by the gateway"


def _param_literal(value: str, mode: LexMode) -> str | None:
    """A value of an execute's record (``ExecuteParams.fields``) as ``bind`` takes it
    for a text read in ``mode``: a string written for that mode, NULL, a number and hex
    bytes as they are; "(long data)" and "(N bytes)" were not read (None)."""
    if value.startswith("'"):
        return sql_string(literal_text(value), mode)
    if not value or value.startswith("("):
        return None
    return value


def _named_reading(charset: str) -> _Reading:
    """The reading of a character set a SET named (the rules refused the others)."""
    if charset in UNSAFE_CHARSETS:
        return _Reading.ASCII_ONLY
    if charset in ("utf8mb4", "utf8mb3", "utf8"):
        return _Reading.UTF8
    return _Reading.EIGHT_BIT


def _placeholders(sql: bytes, server_status: int) -> int | None:
    """How many parameters the server gives a prepared text: its ``?`` placeholders
    (None when it does not lex). A wrong count would not read the block to its end
    exactly (its NULL bitmap and types are sized by it), and such a block is kept as
    bytes."""
    mode = LexMode(no_backslash_escapes=bool(server_status & _NO_BACKSLASH_ESCAPES))
    try:
        return sum(1 for token in tokenize(sql, mode) if token.kind is Tok.PARAM)
    except LexError:
        return None


def _kill_target(text: str) -> int | None:
    """The thread id of ``KILL [HARD|SOFT] [CONNECTION|QUERY] n``, read as the server
    reads it (ordinary comments anywhere); None for any other form (KILL USER, KILL QUERY
    ID, an expression, an executable comment)."""
    try:
        statements = split_statements(text.encode("utf-8", "surrogatepass"), LexMode())
    except LexError:
        return None
    if len(statements) != 1 or statements[0].executable_comment:
        return None
    *head, number = statements[0].tokens
    digits = number.text
    if number.kind is not Tok.NUMBER or not (digits.isascii() and digits.isdigit()):
        return None
    words = [t.text if t.kind is Tok.WORD else None for t in head]
    if words[:1] != ["KILL"] or len(digits) > 10:
        return None
    rest = words[1:]
    if rest[:1] in (["HARD"], ["SOFT"]):
        rest = rest[1:]
    if rest not in ([], ["CONNECTION"], ["QUERY"]):
        return None
    return int(digits)


def _no_thread(thread: int) -> bool:
    return False


#: Schemas whose tables show the texts of other sessions' statements, literals included:
#: a masked session reads them refused by their qualified names (classify's
#: ``_Uses.statistics``), so it may not make one current and name them bare.
_STATEMENT_SCHEMAS = frozenset({"performance_schema", "sys"})


def _statement_schema_use(schema: str) -> Decision:
    return Decision(
        RuleAction.BLOCK,
        "masking",
        f"the tables of {schema} show the texts of other sessions' statements with their "
        "literals, which may be masked values: a session with masked columns may not make "
        "it its current schema (its tables are refused by their full names too)",
    )


def _server_mode_refusal(modes: str) -> Decision:
    return Decision(
        RuleAction.BLOCK,
        "sql-mode",
        f"the database server's global sql_mode holds {modes}, under which the server reads "
        "statements differently from the gateway, and every session starts in it: no "
        "statement runs until an administrator leaves it out of the global sql_mode on the "
        "server",
    )


def _start_mode_refusal(modes: str) -> Decision:
    return Decision(
        RuleAction.BLOCK,
        "sql-mode",
        f"the sql_mode the database server started this session in holds {modes}, under "
        "which the server reads statements differently from the gateway: no statement of "
        "this session runs. Sessions start in the server's global sql_mode, which an "
        "administrator sets on the server (so may its init_connect)",
    )


def _start_charset_refusal(charset: str) -> Decision:
    return Decision(
        RuleAction.BLOCK,
        "charset",
        f"the database server started this session with character_set_client {charset}, "
        "in which the server reads quotes and backslashes differently from the gateway: "
        "no statement of this session runs. The target's init_connect (or its default "
        "character set) sets it; an administrator can change that on the server",
    )


_START_MODE_UNKNOWN = Decision(
    RuleAction.BLOCK,
    "sql-mode",
    "the gateway could not read the sql_mode the database server started this session in, "
    "so it cannot tell how the server reads its statements: none of them runs. Reconnect",
)


def _statement_name(tokens: Sequence[Token], i: int) -> str | None:
    """The prepared statement name at ``tokens[i]`` (the server ignores its case), or
    None when there is none (``EXECUTE IMMEDIATE`` runs a text, not a name)."""
    if i >= len(tokens):
        return None
    token = tokens[i]
    if token.kind == Tok.WORD:
        return None if token.text == "IMMEDIATE" else token.text.lower()
    if token.kind == Tok.IDENT:
        return token.text.lower()
    return None


def _prepared_text(sql: bytes, tokens: Sequence[Token], i: int, mode: LexMode) -> bytes | None:
    """The text a ``PREPARE name FROM`` prepares, its string literals from ``tokens[i]``
    to the statement's end (adjacent literals are one, a character set introducer may
    lead) as the server reads them in ``mode``; None when it is not that (``FROM @v``:
    refused unless in shadow mode) or longer than ``_NAMED_TEXT_BYTES``."""
    if word_at(tokens, i) is not None and tokens[i].text.startswith("_"):
        i += 1  # a character set introducer (the classifier refused the unsafe ones)
    strings = tokens[i:]
    if not strings or any(t.kind != Tok.STRING for t in strings):
        return None
    if sum(t.end - t.start for t in strings) > _NAMED_TEXT_BYTES + 2 * len(strings):
        return None
    text = b"".join(string_bytes(sql[t.start : t.end], mode) for t in strings)
    return text if len(text) <= _NAMED_TEXT_BYTES else None


def _prepared_in_other_charset(then: str | None, now: str | None) -> Decision:
    """A prepared statement whose text is not ASCII, executed in another client
    character set: the server prepares a statement anew from its text when a table it
    names has changed since (CREATE INDEX, a temporary table of the name), and reads the
    text again in the character set of that moment. In latin1 the UTF-8 bytes of
    ``@xàOR - 1`` are ``@xÃ OR -1``: the WHERE decided at the prepare is not the one
    that would run."""
    return Decision(
        RuleAction.BLOCK,
        "charset",
        f"this statement was prepared while the client character set was {then or 'not known'}"
        f", and it is {now or 'not known'} now: the server reads a prepared text again, in "
        "the current character set, whenever it prepares it anew (after a change to a table "
        "it names), and this text is not ASCII, so it may then read as another statement "
        f"than the one decided. Set the character set back (SET NAMES {then or 'utf8mb4'}) "
        "or prepare the statement again",
    )


def _too_many_prepared(held: int, limit: int, name: str | None) -> Decision:
    """A prepare beyond ``[appliance] max_prepared_per_session``, which is not sent."""
    what = "COM_STMT_PREPARE" if name is None else f"PREPARE {name}"
    return Decision(
        RuleAction.BLOCK,
        "max-prepared-per-session",
        f"{what} was not sent: this session holds {held} prepared statements, the most "
        f"[appliance] max_prepared_per_session allows ({limit}; the server's "
        "max_prepared_stmt_count is shared by every session). Close the statements it no "
        "longer uses (COM_STMT_CLOSE: the driver's statement or cursor close; "
        "DEALLOCATE PREPARE name for SQL-level ones), or reuse a prepared one, then "
        "prepare again",
    )


def _prepare_refused(name: str) -> Decision:
    return Decision(
        RuleAction.BLOCK,
        "prepare-refused",
        f"the last PREPARE {name} was refused, so it never reached the server, which still "
        f"holds the statement {name} was prepared from before (a PREPARE that fails there "
        f"drops it): EXECUTE {name} would run that one. Prepare {name} again, or "
        f"DEALLOCATE PREPARE {name}",
    )


_BOUND_TEXT_BYTES = OFFLOAD_BYTES
"""The longest text, its values bound, that an execute of a prepared statement whose
WHERE values may make true for every row is decided as (``bind``): that is done on the
event loop at every execute, and a 100 kB text held it for 0.4 s each time."""


def _bound_size(sql: bytes, values: Sequence[str | None]) -> int:
    """How long ``sql`` is with ``values`` bound, as ``bind`` writes it (about)."""
    return len(sql) + sum(len(v.encode("utf-8", "surrogateescape")) + 2 for v in values if v)


def _bound_too_long(what: str, size: int) -> Decision:
    """The refusal of an execute whose text with its values is too long to decide."""
    return Decision(
        RuleAction.BLOCK,
        "prepared-unknown",
        f"the WHERE clause of {what} may be true for every row with some values bound "
        "to it (a LIKE pattern of only '%', a REGEXP "
        "pattern that matches the empty string), so each execute is decided with its "
        f"values, which the gateway does for a text of up to {_BOUND_TEXT_BYTES} bytes with "
        f"them; this one has {size}. Prepare a shorter text (several statements, a shorter "
        "IN list) or bind shorter values, or write the pattern in the text as a literal",
    )


_EXECUTE_BEFORE_PREPARED = Decision(
    RuleAction.BLOCK,
    "prepared-unknown",
    "COM_STMT_EXECUTE names a statement id the gateway has not seen prepared: a PREPARE "
    "sent before it has not been answered yet, so the gateway cannot tell (or record) "
    "what would run. Wait for the PREPARE's answer, then execute the id it gives",
)

_LAST_PREPARED_REFUSED = Decision(
    RuleAction.BLOCK,
    "last-prepared",
    "COM_STMT_EXECUTE names statement id 0xFFFFFFFF (MariaDB's 'the statement prepared "
    "last'), and the COM_STMT_PREPARE sent just before it was refused: it prepared "
    "nothing, so nothing runs",
)

_PREPARED_USE = Decision(
    RuleAction.BLOCK,
    "prepared-use",
    "a USE inside another statement (PREPARE, EXECUTE IMMEDIATE, SET STATEMENT ... FOR, "
    "a prepared statement) changes the current schema unseen by the gateway, which reads "
    "table names in it. Send USE as a plain statement",
)


def _name_refusal(what: str, name: str, problem: str) -> Decision:
    """The refusal of a name a command carries outside any statement text."""
    quoted = "`" + name.replace("`", "``") + "`"
    return Decision(RuleAction.BLOCK, "not-understood", f"the {what} name {quoted} {problem}")


def _dotted_schema(schema: str) -> Decision:
    """COM_INIT_DB of a schema whose name holds a dot (a USE of one is not understood)."""
    return _name_refusal(
        "schema",
        schema,
        "contains a dot, which the gateway's rules cannot tell from a schema.table name, so "
        "it could not tell which tables later statements touch. Use a schema whose name has "
        "no dot (a database administrator can rename it)",
    )


def _chain(c: Classification | None) -> Iterator[Classification]:
    """A statement, the statement it runs, the one that one runs, and so on (``SET
    STATEMENT ... FOR EXECUTE IMMEDIATE 'SET STATEMENT ... FOR USE x'``): what a
    statement holds is decided the same at any depth."""
    while c is not None:
        yield c
        c = c.inner


# Statements whose literals the server reads as values of expressions: a grant's '?'
# stands for any other value of the same type there, but after the words of
# _NAMED_AFTER, and for a column's position in ORDER BY or GROUP BY.
_VALUE_KINDS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "DO"})
# In those, a literal right after one of these words names something: CHARACTER SET
# 'latin1' and CHARSET 'latin1' (a cast's character set), COLLATE 'latin1_bin',
# CONVERT(x USING 'latin1'), INTO OUTFILE or DUMPFILE 'path', AS 'alias'.
_NAMED_AFTER = frozenset({"SET", "CHARSET", "COLLATE", "USING", "OUTFILE", "DUMPFILE", "AS"})
# Words that end an ORDER BY or GROUP BY list (at its depth of parentheses).
_LIST_ENDS = frozenset(
    (
        "LIMIT HAVING WINDOW INTO FOR LOCK UNION EXCEPT INTERSECT OFFSET FETCH ON "
        "PROCEDURE ROWS RANGE ORDER GROUP"
    ).split()
)
# In any other statement (DDL, SET, accounts, administration) a literal is read as an
# option or a name: ENGINE = 'MEMORY', CHARSET, COLLATE, CONNECTION, DATA DIRECTORY,
# SONAME, PASSWORD, IDENTIFIED BY, an account 'u'@'h', VARCHAR(10), KILL 5, SET
# sql_mode = ''. All but the text of a COMMENT and a column's DEFAULT value, the only
# literals such a statement may have and keep a fingerprint.
_VALUE_AFTER = frozenset({"COMMENT", "DEFAULT"})


def _literals_are_values(kind: str, tokens: Sequence[Token]) -> bool:
    """Whether every literal of a statement (of ``kind``; ``tokens`` without its
    comments) is one the server reads as a value, so that a grant of its shape may
    cover any other value of the same type; when in doubt, not."""
    values = kind in _VALUE_KINDS
    lists: set[int] = set()  # depths of parentheses in an ORDER BY or GROUP BY list
    depth = 0
    for i, t in enumerate(tokens):
        if t.kind == Tok.PUNCT:
            if t.text == "(":
                depth += 1
            elif t.text == ")":
                lists.discard(depth)
                depth -= 1
        elif t.kind == Tok.WORD:
            if t.text in _LIST_ENDS:
                lists.discard(depth)
            elif t.text == "BY" and i and word_at(tokens, i - 1) in ("ORDER", "GROUP"):
                lists.add(depth)
        elif t.kind in _LITERALS:
            after = word_at(tokens, i - 1) if i else None
            if not values:
                comment = i > 1 and punct_at(tokens, i - 1, "=") and word_at(tokens, i - 2)
                if after not in _VALUE_AFTER and comment != "COMMENT":
                    return False
            elif after in _NAMED_AFTER:
                return False
            elif t.kind == Tok.NUMBER and depth in lists:
                if after == "BY" or punct_at(tokens, i - 1, ","):
                    return False  # ORDER BY 2: the second column
    return True


_LITERALS = frozenset({Tok.STRING, Tok.NUMBER, Tok.HEX})


def _calls_routines(c: Classification) -> bool:
    """Whether a statement, or one it runs at any depth, calls a stored procedure or a
    stored function: code the gateway never sees, which may run its arguments as SQL."""
    return any(s.kind == "CALL" or s.stored_functions for s in _chain(c))


def _innermost(c: Classification) -> Classification:
    """The statement that runs in the end: the last of ``_chain(c)``."""
    *_, last = _chain(c)
    return last


def _nested_variables(inner: Classification) -> list[tuple[str, str | None]]:
    """The variables set for the session by a statement another one runs and by what it
    runs in turn, at any depth. A SET STATEMENT's own variables are not among them: they
    end with its statement, and the answer of the EXECUTE that ran it carries the
    session's status flags again (what a plain SET STATEMENT's does not: see
    ``_sets_statement_mode``)."""
    return [
        assigned for s in _chain(inner) if s.kind != "SET STATEMENT" for assigned in s.variables
    ]


_NOT_ONE_TABLE = Decision(
    RuleAction.BLOCK,
    "not-understood",
    "the gateway could not read the COM_FIELD_LIST as one SHOW COLUMNS of one table",
)


def _show_columns(table: str, wildcard: str) -> str:
    """The text COM_FIELD_LIST is decided and recorded as."""
    text = "SHOW COLUMNS FROM `" + table.replace("`", "``") + "`"
    if wildcard:
        text += " LIKE '" + wildcard.replace("\\", "\\\\").replace("'", "''") + "'"
    return text


def _unreadable_name(
    what: str, name: str, reading: _Reading, shown: str | None = None
) -> Decision | None:
    """The refusal of a name a command carries outside any statement text (the schema of
    COM_INIT_DB or of the login, COM_FIELD_LIST's table), decoded as UTF-8 with
    replacement, when it may not be the name the server reads: the rules read names as
    UTF-8, the server in the client character set. So a byte that is not UTF-8, or any
    byte >= 0x80 when the client character set is not UTF-8 (latin1's ``k<0xfc>ndigung``
    is ``kündigung`` to the server and would match no rule here). None when the name
    reads the same. ``shown``: the name as the server reads it, which the refusal names
    (``name`` when not given)."""
    if reading is _Reading.UTF8:
        if "\ufffd" not in name:
            return None
        why = "bytes that are not UTF-8"
    elif name.isascii():
        return None
    else:
        why = "bytes >= 0x80 in a client character set that is not UTF-8"
    return _name_refusal(
        what,
        name if shown is None else shown,
        f"holds {why}: the gateway reads names only as UTF-8, so it could not tell which "
        "rules name it. Use utf8mb4 (SET NAMES utf8mb4) for non-ASCII names",
    )


def _prepares_a_use(c: Classification, label: str) -> bool:
    """PREPARE ... FROM 'USE x', EXECUTE IMMEDIATE 'USE x', SET STATEMENT ... FOR USE x,
    each nested in another at any depth; COM_STMT_PREPARE of a USE."""
    if c.inner is None:
        return c.kind == "USE" and label == "COM_STMT_PREPARE"
    return any(s.kind == "USE" for s in _chain(c.inner))


def _sets_statement_mode(c: Classification) -> bool:
    """Whether a statement is, or runs at any depth, a SET STATEMENT sql_mode = ... FOR:
    the server runs the statement under that mode, and its answer carries that mode's
    NO_BACKSLASH_ESCAPES flag, though the session's mode is back when it ends."""
    return any(
        s.kind == "SET STATEMENT" and any(name == "sql_mode" for name, _ in s.variables)
        for s in _chain(c)
    )


def _touches_session(c: Classification) -> bool:
    """Whether a statement, or one it runs at any depth, sets a variable the session
    follows (``_SESSION_VARIABLES``)."""
    if c.inner is None:
        if not c.variables:
            return False
        return any(name in _SESSION_VARIABLES for name, _ in c.variables)
    return any(name in _SESSION_VARIABLES for s in _chain(c.inner) for name, _ in s.variables)


def _large_insert(
    sql: bytes, mode: LexMode, backslash_unknown: bool, limit: int
) -> tuple[Classification, ...] | None:
    """An INSERT too large to parse (over ``limit`` bytes) is decided on its shape (its
    literals replaced), when the shape is small and its classification cannot depend on
    the literals."""
    try:
        statements = split_statements(sql, mode)
    except LexError:
        return None
    if len(statements) != 1:
        return None
    for token in statements[0].tokens:
        quote = sql[token.start : token.start + 1]
        if quote == b'"':
            return None  # a string or a name: ANSI_QUOTES would decide
        if backslash_unknown and token.kind is Tok.STRING and b"\\" in sql[token.start : token.end]:
            return None  # a backslash in a string: NO_BACKSLASH_ESCAPES would decide
    form = shape(sql, mode)
    if form is None or len(form) > limit:
        return None
    form = _INTRODUCED.sub(b"?", form)  # _binary? is one literal, as sqlglot reads it
    found = classify_uncertain(form, mode, True, backslash_unknown)
    if len(found) != 1:
        return None
    c = found[0]
    if c.kind != "INSERT" or c.problem is not None or not c.literal_independent:
        return None
    return (replace(c, text=""),)


def _use_target(c: Classification) -> str | None:
    """The schema a ``USE`` statement makes current."""
    raw = c.text.encode()
    try:
        stmts = split_statements(raw, LexMode())
    except LexError:
        return None
    tokens = stmts[0].tokens if stmts else ()
    if len(tokens) < 2:
        return None
    name = tokens[1]
    # a bare word keeps the case it was written in; a quoted name is already unquoted
    return name.text if name.kind is not Tok.WORD else raw[name.start : name.end].decode()
