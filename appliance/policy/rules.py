"""Rules: what the gateway does with a classified statement (SPEC §6), pure.

Order of evaluation, first match wins:

1. a statement the gateway does not understand (``Classification.problem``) is blocked
   before any rule can see it: an allow rule cannot open what was never read;
2. the configured ``[[rules]]``, in file order;
3. the built-in rules below: the blocks, then the reviews, then ``default-allow``.
   A kind outside the allow-list (``KNOWN_KINDS``) is blocked: the list is what the
   gateway knows, never a list of what it forbids.

Every refusal names its rule and says, in words a language model can act on, what was
refused and what would be accepted instead.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from appliance.config import RuleAction, RuleConfig
from appliance.mysql.charsets import (
    ASCII_CHANGING,
    UNREADABLE_NAMES,
    UNSAFE_CHARSETS,
)
from appliance.policy.classify import Classification
from appliance.policy.server_functions import BUILTIN_FUNCTIONS, SERVER
from appliance.policy.through import WRITE_KINDS, Reached, WriteThrough

__all__ = [
    "KNOWN_KINDS",
    "SESSION_VARIABLES",
    "CHARSET_VARIABLES",
    "UNSAFE_CHARSETS",
    "WITHOUT_WHERE",
    "Decision",
    "Subject",
    "decide",
    "qualified",
    "unreadable_modes",
]

#: Kinds the built-ins allow when nothing else matched.
ALLOWED_KINDS = frozenset(
    {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "SHOW",
        "DESCRIBE",
        "EXPLAIN",
        "USE",
        "SET",
        "BEGIN",
        "START TRANSACTION",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE SAVEPOINT",
        "CREATE TABLE",
        "CREATE INDEX",
        "CREATE VIEW",
        "CREATE DATABASE",
        "PREPARE",
        "EXECUTE",
        "DEALLOCATE PREPARE",
        "KILL",  # only threads of the gateway's own backend user; a rule can refuse it
    }
)

SCHEMA_CHANGES = frozenset({"DROP TABLE", "ALTER TABLE", "RENAME TABLE", "DROP INDEX", "DROP VIEW"})
STORED_CODE = frozenset(
    f"{verb} {what}"
    for verb in ("CREATE", "ALTER", "DROP")
    for what in ("TRIGGER", "EVENT", "PROCEDURE", "FUNCTION")
)
PRIVILEGE_KINDS = frozenset(
    {
        "GRANT",
        "REVOKE",
        "CREATE USER",
        "ALTER USER",
        "DROP USER",
        "RENAME USER",
        "SET PASSWORD",
        "CREATE ROLE",
        "DROP ROLE",
        "SET ROLE",
    }
)
REVIEW_KINDS = SCHEMA_CHANGES | STORED_CODE | {"CALL", "REPLACE"}

#: Everything the gateway knows how to decide; any other kind is blocked.
KNOWN_KINDS = ALLOWED_KINDS | REVIEW_KINDS

#: Session variables a statement may set (user variables ``@x`` always may). The rest
#: are refused by name: a variable the gateway does not know may change what it reads.
SESSION_VARIABLES = frozenset(
    {
        "autocommit",
        "names",
        "character set",
        "character_set_client",
        "character_set_connection",
        "character_set_results",
        "collation_connection",
        "character_set_server",
        "collation_server",
        "sql_mode",
        "time_zone",
        "transaction",
        "transaction_isolation",
        "tx_isolation",
        "transaction_read_only",
        "tx_read_only",
        "sql_select_limit",
        "max_execution_time",
        "max_statement_time",
        "sql_safe_updates",
        "sql_auto_is_null",
        "sql_big_selects",
        "sql_notes",
        "sql_warnings",
        "sql_quote_show_create",
        "foreign_key_checks",
        "unique_checks",
        "group_concat_max_len",
        "innodb_lock_wait_timeout",
        "lock_wait_timeout",
        "wait_timeout",
        "interactive_timeout",
        "net_read_timeout",
        "net_write_timeout",
        "session_track_schema",
        "session_track_state_change",
        "session_track_system_variables",
        "session_track_transaction_info",
        "default_storage_engine",
        "default_tmp_storage_engine",
        "div_precision_increment",
        "lc_time_names",
        # the language of the server's messages (phpMyAdmin sets it at connect): error
        # texts the gateway cannot read as English are scrubbed whole when masking applies
        "lc_messages",
        "profiling",
        "profiling_history_size",  # how many of the session's own profiles it keeps
        "big_tables",
        "max_join_size",
        "max_heap_table_size",
        "tmp_table_size",
        "sort_buffer_size",
        # the memory and plans of a session's queries (what tuning guides and agents set
        # before a large report): not what is read, logged, masked or allowed
        "join_buffer_size",
        "join_buffer_space_limit",
        "join_cache_level",
        "read_buffer_size",
        "read_rnd_buffer_size",
        "bulk_insert_buffer_size",
        "max_sort_length",
        "max_length_for_sort_data",
        "optimizer_prune_level",
        "optimizer_use_condition_selectivity",
        "eq_range_index_dive_limit",
        "in_predicate_conversion_threshold",
        "expensive_subquery_limit",
        "max_error_count",
        "optimizer_search_depth",
        "optimizer_switch",
        "timestamp",
        "insert_id",
        "last_insert_id",
        "sql_buffer_result",
        "sql_if_exists",
        "explicit_defaults_for_timestamp",
        "cte_max_recursion_depth",
        "max_recursive_iterations",
        # what frameworks set at connect (Magento, Drupal): values and checks, not reading
        "auto_increment_increment",
        "auto_increment_offset",
        "innodb_strict_mode",
    }
)

#: The names a SET of the client character set has (SET NAMES, SET CHARACTER SET,
#: character_set_client).
CHARSET_VARIABLES = frozenset({"names", "character set", "character_set_client"})

#: Variables a ``SET STATEMENT ... FOR`` may not set: the gateway reads the statement's
#: text and its result names in the session's character sets, not the statement's.
STATEMENT_CHARSET_VARIABLES = CHARSET_VARIABLES | {
    "character_set_connection",
    "character_set_results",
}


@dataclass(frozen=True, slots=True)
class Subject:
    """Who sends a statement, and where it goes."""

    identity: str
    groups: frozenset[str]
    target: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to one statement, which rule said so, and why."""

    action: RuleAction
    rule: str
    reason: str  # what was refused and why, and what would be accepted instead

    @property
    def refused(self) -> bool:
        return self.action is not RuleAction.ALLOW

    @property
    def message(self) -> str:
        """The text of the client's ERR 1227 (and of the ledger's ``reason``)."""
        verb = "blocked" if self.action is RuleAction.BLOCK else "review required"
        return f"sqlgate: {verb} by rule '{self.rule}': {self.reason}"


def qualified(table: str, db: str | None) -> str:
    """``schema.table`` for a table name as written, given the session's schema as it
    was set (the login's, a USE's or a COM_INIT_DB's, in its case). Without one (none
    chosen, or the gateway does not know it for certain) the name stays bare: it may be
    a table of any schema."""
    if "." in table or not db:
        return table
    return f"{db}.{table}"


_REWRITE = "rewrite it in plain MySQL syntax"


def decide(
    c: Classification,
    who: Subject,
    db: str | None,
    rules: tuple[RuleConfig, ...],
    through: WriteThrough | None = None,
) -> Decision:
    """The decision for one statement (for ``PREPARE ... FROM '...'``, for its text).

    ``through``: the target's views, foreign keys and triggers, so that a block or review
    rule on a table also sees the writes that reach it under another name."""
    if c.problem is not None:
        # the problem may say how to rewrite the statement already: say it once
        advice = "" if _REWRITE in c.problem else f"; {_REWRITE}"
        return _block(
            "not-understood",
            f"the gateway could not read this statement: {c.problem}. Only statements the "
            f"gateway understands are forwarded{advice}",
        )
    if "prepare_from_variable" in c.flags:
        # a text the gateway cannot see: no configured rule can allow it, `*` neither
        refused = _prepare_from_variable(c, db)
        assert refused is not None
        return refused
    if c.inner is not None:
        if c.kind == "SET STATEMENT":
            pinned = sorted({_plain(n) for n, _ in c.variables} & STATEMENT_CHARSET_VARIABLES)
            if pinned:
                return _block(
                    "charset",
                    f"SET STATEMENT {', '.join(pinned)} ... FOR changes a character set for "
                    "one statement, which the gateway would read (its text, the names of its "
                    "result) in the session's. Set it with a plain SET first",
                )
            if c.inner.kind in _RUNS_TEXT and any(_plain(n) == "sql_mode" for n, _ in c.variables):
                return _block(
                    "sql-mode",
                    f"SET STATEMENT sql_mode ... FOR {c.inner.kind} has the server read the "
                    "statement text it runs under that sql_mode, where the gateway reads it "
                    "under the session's. Set sql_mode with a plain SET first",
                )
            # its variables are set for the statement: they must pass as a plain SET
            outer = decide(replace(c, kind="SET", inner=None), who, db, rules)
            if outer.refused:
                return outer
        return decide(c.inner, who, db, rules, through)
    builtins = BUILTINS
    if rules:
        # Names as written. MariaDB tells schemas and tables by their case
        # (lower_case_table_names=0, Linux's default): `Scratch` is not `scratch`. An
        # allow covers a name only in its own case; a refusal matches it in any case.
        tables = frozenset(qualified(t, db) for t in c.reads | c.writes)
        lowered: frozenset[str] | None = None
        # what it reads of tables' rows, for a refusal of SELECT (an INSERT ... SELECT
        # or a SET @x = (SELECT ...) reads them as a SELECT does)
        read = (
            frozenset(qualified(t, db).lower() for t in c.reads)
            if c.kind not in _NOT_READING
            else frozenset()
        )
        also = _also_does(c)
        replaced = _REPLACED_BY_DROP.get(c.kind) if "or_replace" in c.flags else None
        calls = frozenset(qualified(f, db) for f in c.stored_functions)
        calls_allowed = not calls or _calls_allowed(rules, calls, who)
        if calls and calls_allowed:
            builtins = _BUILTINS_CALLS_ALLOWED
        reached: tuple[Reached, ...] | None = None  # worked out for the first refusal
        for rule in rules:
            if rule.action is RuleAction.ALLOW:
                if c.kind in STORED_CODE and c.kind not in rule.statements:
                    continue  # only an allow that names stored code allows it (see below)
                if c.kind == "CALL" and rule.tables is not None and "CALL" not in rule.statements:
                    # nor a procedure by its name: `*` on shop.* does not allow CALL shop.p,
                    # which may change any table
                    continue
                if not calls_allowed:
                    continue  # nor stored functions: only allows for CALL of them do
                if rule.tables is not None and any(b(c, db) for b in _FILES):
                    # nor the server's files, which are no tables: `*` on scratch.* does
                    # not let LOAD_FILE() or INTO OUTFILE reach them
                    continue
                matched = _matches(rule, c.kind, tables, who)
                if matched and replaced is not None:
                    # CREATE OR REPLACE drops the object first: an allow to create one
                    # is not one to drop it (`*` and a rule naming the DROP are)
                    matched = _matches(rule, replaced, tables, who)
            else:
                if lowered is None:
                    lowered = frozenset(t.lower() for t in tables)
                matched = (
                    _matches(rule, c.kind, lowered, who)
                    or any(_matches(rule, kind, lowered, who) for kind in also)
                    or (c.kind in _VIEW_KINDS and _refuses_through_views(rule, lowered, who))
                    or (bool(calls) and _matches(rule, "CALL", _lower(calls), who))
                )
                if not matched and read and _matches(rule, "SELECT", read, who):
                    return Decision(rule.action, rule.name, _read_reason(rule, c, db))
                if not matched and through and rule.tables is not None:
                    if reached is None:
                        reached = _reached(c, db, also, through)
                    hit = next((r for r in reached if _reaches(rule, r, who)), None)
                    if hit is not None:
                        return Decision(rule.action, rule.name, _reached_reason(rule, c, hit))
            if matched:
                if rule.action is RuleAction.ALLOW:
                    return Decision(RuleAction.ALLOW, rule.name, "")
                return Decision(rule.action, rule.name, _configured_reason(rule, c))
    for builtin in builtins:
        decision = builtin(c, db)
        if decision is not None:
            return decision
    return ALLOW


ALLOW = Decision(RuleAction.ALLOW, "default-allow", "")


_VIEW_KINDS = frozenset({"CREATE VIEW", "ALTER VIEW"})

#: Kinds whose tables are read for their definitions, not their rows: a refusal of
#: SELECT on a table does not refuse them (a rule names them to refuse them).
_NOT_READING = frozenset({"SHOW", "DESCRIBE"})


def _refuses_through_views(rule: RuleConfig, tables: frozenset[str], who: Subject) -> bool:
    """A rule that refuses or holds changes to named tables also refuses a view over
    them: an updatable view passes UPDATE, DELETE and INSERT through to its tables,
    where the rule (which matches names as written) would not see them."""
    return rule.tables is not None and _matches(rule, rule.statements[0], tables, who)


def _reached(
    c: Classification, db: str | None, also: tuple[str, ...], through: WriteThrough
) -> tuple[Reached, ...]:
    """The changes a write makes besides its own, through views, foreign keys and
    triggers: for its kind and the kinds it also does (an upsert's UPDATE, a REPLACE's
    DELETE)."""
    kinds = [kind for kind in (c.kind, *also) if kind in WRITE_KINDS]
    if not kinds or not c.writes:
        return ()
    columns = c.assigns if "UPDATE" in kinds else None
    found: dict[Reached, None] = {}
    for kind in kinds:
        for table in sorted(c.writes):
            for reached in through.reached(kind, qualified(table, db), columns):
                found[reached] = None
    return tuple(found)


def _reaches(rule: RuleConfig, reached: Reached, who: Subject) -> bool:
    """Whether a refusing rule with tables matches a change a write also makes; one
    the gateway cannot place (``table`` None) matches every such rule of its kind."""
    if reached.table is None:
        return _applies(rule, reached.kind, who)
    return _matches(rule, reached.kind, frozenset({reached.table.lower()}), who)


def _reached_reason(rule: RuleConfig, c: Classification, reached: Reached) -> str:
    """Why a write is refused for what it also changes, and how it gets there."""
    verb = {
        "DELETE": "deletes rows of",
        "UPDATE": "changes rows of",
        "INSERT": "inserts rows into",
        "REPLACE": "replaces rows of",
    }[reached.kind]
    if reached.table is None:
        where = f"may also change rows of the tables this rule protects ({reached.how})"
    else:
        where = f"also {verb} {reached.table} (through {reached.how})"
    what = f"{_what(c)} {where}"
    return _refused_as(rule, what, clause=True)


def _lower(names: frozenset[str]) -> frozenset[str]:
    return frozenset(name.lower() for name in names)


def _calls_allowed(rules: tuple[RuleConfig, ...], calls: frozenset[str], who: Subject) -> bool:
    """Whether allow rules for CALL cover every stored function a statement calls: a rule
    that names CALL (``*`` does not) and whose ``tables``, if it has any, match the
    function's ``schema.name``. The statement itself still needs an allow of its own
    (a configured one, or the built-in default)."""
    return all(
        any(
            rule.action is RuleAction.ALLOW
            and "CALL" in rule.statements
            and _matches(rule, "CALL", frozenset({call}), who)
            for rule in rules
        )
        for call in calls
    )


def _also_does(c: Classification) -> tuple[str, ...]:
    """The kinds of change a statement makes besides its own kind, for the rules that
    refuse or hold them: ``INSERT ... ON DUPLICATE KEY UPDATE`` updates rows (an UPDATE
    rule applies), ``REPLACE`` deletes the rows it collides with and inserts (DELETE and
    INSERT rules apply), ``CREATE OR REPLACE TABLE`` (VIEW, INDEX, DATABASE) drops the
    old one (DROP rules apply). Never to allow it: an allow for INSERT is not one for
    REPLACE."""
    if c.kind == "INSERT" and "on_duplicate_update" in c.flags:
        return ("UPDATE",)
    if c.kind == "REPLACE":
        return ("DELETE", "INSERT")
    if "or_replace" in c.flags and c.kind in _REPLACED_BY_DROP:
        return (_REPLACED_BY_DROP[c.kind],)
    return ()


#: MariaDB's CREATE OR REPLACE drops the existing object first, its data with it: for a
#: rule, it is also that DROP (``CREATE OR REPLACE TABLE shop.orders`` is a DROP TABLE of
#: shop.orders, which a rule blocking DROP on it refuses).
_REPLACED_BY_DROP = {
    "CREATE TABLE": "DROP TABLE",
    "CREATE SEQUENCE": "DROP TABLE",  # an existing table of its name goes too
    "CREATE VIEW": "DROP VIEW",
    "CREATE INDEX": "DROP INDEX",
    "CREATE DATABASE": "DROP DATABASE",
}


def _matches(rule: RuleConfig, kind: str, tables: frozenset[str], who: Subject) -> bool:
    if not _applies(rule, kind, who):
        return False
    if rule.tables is not None:
        if rule.action is RuleAction.ALLOW:
            # an allow covers a statement only when it covers every table it names, each
            # in the case the rule writes it
            return bool(tables) and all(
                any(_table_matches(t, p, certain=True) for p in rule.tables) for t in tables
            )
        # a refusal: the names come lower-cased, the patterns are compared so
        return any(_table_matches(t, p.lower()) for t in tables for p in rule.tables)
    return True


def _applies(rule: RuleConfig, kind: str, who: Subject) -> bool:
    """Whether a rule is for this kind of statement and this subject (its tables
    aside)."""
    if not any(s in ("*", "ANY") or kind == s or kind.startswith(s + " ") for s in rule.statements):
        return False
    if rule.targets is not None and who.target not in rule.targets:
        return False
    if rule.identities is not None and not any(
        _identity_matches(who.identity, p, rule.action) for p in rule.identities
    ):
        return False
    if rule.groups is not None and not who.groups.intersection(rule.groups):
        return False
    return True


def _identity_matches(identity: str, pattern: str, action: RuleAction) -> bool:
    """Accounts are told apart by their case (`dba` and `DBA` may be two): an allow
    covers an identity only in the case the rule writes it, a refusal in any case."""
    if action is RuleAction.ALLOW:
        return fnmatch.fnmatchcase(identity, pattern)
    return fnmatch.fnmatchcase(identity.lower(), pattern.lower())


def _table_matches(table: str, pattern: str, certain: bool = False) -> bool:
    """``orders`` matches that table in any schema; ``shop.*`` every table of shop, case
    respected. A bare name (the session's schema is not known) may be a table of any
    schema: it matches ``shop.orders`` unless the match must be ``certain`` (an allow)."""
    if "." not in pattern:
        table = table.rsplit(".", 1)[-1]
    elif "." not in table:
        if certain:
            return False
        pattern = pattern.rsplit(".", 1)[-1]
    return fnmatch.fnmatchcase(table, pattern)


def _read_reason(rule: RuleConfig, c: Classification, db: str | None) -> str:
    """Why a statement of another kind is refused by a rule on SELECT: it reads."""
    tables = sorted(qualified(t, db) for t in c.reads)
    shown = ", ".join(tables[:3]) + (", ..." if len(tables) > 3 else "")
    what = f"{_what(c)} reads {shown} (as a SELECT would)"
    return _refused_as(rule, what, clause=True)


def _configured_reason(rule: RuleConfig, c: Classification) -> str:
    return _refused_as(rule, _what(c))


def _refused_as(rule: RuleConfig, what: str, clause: bool = False) -> str:
    """The reason a configured rule refuses ``what`` with (a block), or holds it for (a
    review). ``clause``: ``what`` says more than the statement (what it reaches, what it
    reads), and the refusal follows it as a clause."""
    if rule.action is RuleAction.BLOCK:
        verb = ", which is" if clause else " is"
        return (
            f"{what}{verb} not allowed on this gateway. Do not retry it; ask a person with "
            "the right access if it is really needed"
        )
    return _review_reason(what, "this gateway's policy requires a person to approve it")


def _review_reason(what: str, why: str) -> str:
    """What is held and why; the gateway adds what happens next (a wait for a person,
    or, without approvals, what to do instead)."""
    return f"{what}: {why}"


def _what(c: Classification) -> str:
    """The statement in a few words: its kind and the tables it touches."""
    tables = sorted(c.writes or c.reads)
    if not tables:
        return c.kind
    shown = ", ".join(tables[:3]) + (", ..." if len(tables) > 3 else "")
    joiner = {"DELETE": " FROM ", "INSERT": " INTO ", "REPLACE": " INTO "}.get(c.kind, " ")
    return f"{c.kind}{joiner}{shown}"


def _block(rule: str, reason: str) -> Decision:
    return Decision(RuleAction.BLOCK, rule, reason)


def _review(rule: str, reason: str) -> Decision:
    return Decision(RuleAction.REVIEW, rule, reason)


# ------------------------------------------------------------------- the built-ins

Builtin = Callable[[Classification, "str | None"], "Decision | None"]


def _drop_database(c: Classification, db: str | None) -> Decision | None:
    if c.kind == "DROP DATABASE" or (c.kind == "CREATE DATABASE" and "or_replace" in c.flags):
        return _block(
            "drop-database",
            f"{_what(c)} would delete a whole schema and all of its data. Drop the "
            "individual tables you mean, or ask a person to do it",
        )
    return None


def _truncate(c: Classification, db: str | None) -> Decision | None:
    if c.kind == "TRUNCATE":
        return _block(
            "truncate",
            f"{_what(c)} would delete every row. To remove rows, use DELETE with a WHERE "
            "clause that selects the rows to delete",
        )
    return None


WITHOUT_WHERE = frozenset({"delete-without-where", "update-without-where"})
"""The rules of a DELETE or UPDATE whose WHERE is missing or true for every row."""


def _without_where(c: Classification, db: str | None) -> Decision | None:
    if c.kind not in ("DELETE", "UPDATE"):
        return None
    verb = "delete" if c.kind == "DELETE" else "update"
    rule = f"{verb}-without-where"
    if not c.has_where:
        return _block(
            rule,
            f"{_what(c)} has no WHERE clause and would {verb} every row. Add a WHERE clause "
            f"that selects the rows to {verb} (for example WHERE id = 42)",
        )
    if c.where_bound is not None:
        return _block(
            rule,
            f"the WHERE clause of {_what(c)} would be true for every row with the values "
            f"bound to its placeholders, so it would {verb} every row: {c.where_bound}. A "
            "LIKE pattern of only '%' matches every value but NULL, and a value the gateway "
            "does not read (a user variable, an expression, long data) may be one. Bind a "
            f"pattern that selects only the rows to {verb}, as a literal value (for example "
            "'abc%'), or test another column too (for example AND id = 42)",
        )
    if c.where_always_true:
        return _block(
            rule,
            f"the WHERE clause of {_what(c)} may be true for every row, so it could {verb} "
            "every row: its tests do not limit the rows by their columns (the gateway does "
            "not evaluate constants such as 0, 1=1, NOW() or a variable). Use a WHERE clause "
            f"that selects only the rows to {verb} (for example WHERE id = 42)",
        )
    return None


def _privileges(c: Classification, db: str | None) -> Decision | None:
    if c.kind in PRIVILEGE_KINDS or (
        c.kind == "SET" and any(name == "password" for name, _ in c.variables)
    ):
        return _block(
            "privileges",
            f"{c.kind} changes accounts or privileges, which agents may not do through "
            "the gateway. Ask a database administrator",
        )
    return None


def _load_data(c: Classification, db: str | None) -> Decision | None:
    if c.kind in ("LOAD DATA", "LOAD XML"):
        return _block(
            "load-data",
            f"{c.kind} reads files on a server. Insert the rows with INSERT statements instead",
        )
    return None


def _into_file(c: Classification, db: str | None) -> Decision | None:
    if "into_outfile" in c.flags or "into_dumpfile" in c.flags:
        return _block(
            "into-outfile",
            "SELECT ... INTO OUTFILE/DUMPFILE writes a file on the database server. Run the "
            "SELECT without INTO and read the rows from the result",
        )
    return None


def _load_file(c: Classification, db: str | None) -> Decision | None:
    if "LOAD_FILE" in c.functions or "load_file" in c.flags:
        return _block(
            "load-file",
            "LOAD_FILE() reads files on the database server. Query table data instead",
        )
    return None


def _shutdown(c: Classification, db: str | None) -> Decision | None:
    if c.kind == "SHUTDOWN":
        return _block("shutdown", "SHUTDOWN would stop the database server. Do not retry it")
    return None


def _set_global(c: Classification, db: str | None) -> Decision | None:
    if c.kind != "SET":
        return None
    for name, _ in c.variables:
        if name.startswith(("global.", "persist.", "persist_only.")):
            plain = name.split(".", 1)[1]
            return _block(
                "set-global",
                f"SET GLOBAL {plain} would change the server for every client. Set the "
                f"session value instead (SET SESSION {plain} = ...), if it is one a "
                "session may change",
            )
    return None


def _plugins(c: Classification, db: str | None) -> Decision | None:
    if c.kind in ("INSTALL PLUGIN", "UNINSTALL PLUGIN"):
        return _block("install-plugin", f"{c.kind} loads or unloads server code. Do not retry it")
    return None


def _udf(c: Classification, db: str | None) -> Decision | None:
    if "soname" in c.flags:
        return _block(
            "udf",
            "CREATE FUNCTION ... SONAME loads a shared library into the server. Do not retry it",
        )
    return None


def _prepare_from_variable(c: Classification, db: str | None) -> Decision | None:
    if "prepare_from_variable" in c.flags:
        return _block(
            "prepare-from-variable",
            "PREPARE ... FROM @variable runs text the gateway cannot see. Prepare the "
            "statement from a string literal (PREPARE s FROM 'SELECT ...'), or use your "
            "driver's prepared statements",
        )
    return None


def _handler(c: Classification, db: str | None) -> Decision | None:
    if c.kind == "HANDLER":
        return _block("handler", "HANDLER reads tables past the SQL layer. Use SELECT instead")
    return None


def _servers(c: Classification, db: str | None) -> Decision | None:
    if c.kind in ("CREATE SERVER", "ALTER SERVER", "DROP SERVER"):
        return _block(
            "create-server",
            f"{c.kind} defines connections to other servers. Do not retry it",
        )
    return None


#: Storage engines that keep a table's rows in the server's own files, in its data
#: directory. The others reach outside it: FEDERATED, SPIDER and S3 connect to other
#: servers, CONNECT reads and writes files and other servers, MERGE, OQGRAPH and
#: Mroonga's wrapper mode other tables, SPHINX a search daemon. The gateway sees none of
#: what a statement reads or writes through them.
LOCAL_ENGINES = frozenset(
    {"innodb", "aria", "myisam", "memory", "heap", "csv", "archive", "blackhole", "rocksdb"}
)

#: The session variables that choose the engine of a table created without ENGINE.
ENGINE_VARIABLES = frozenset({"default_storage_engine", "default_tmp_storage_engine"})

_LOCAL_INSTEAD = "InnoDB (or Aria, MyISAM, MEMORY)"


def _storage_engine(c: Classification, db: str | None) -> Decision | None:
    if c.kind == "SET":
        for name, value in c.variables:
            plain = _plain(name)
            if plain not in ENGINE_VARIABLES:
                continue
            if value is not None and (value.lower() in LOCAL_ENGINES or value == "default"):
                continue
            shown = "a value the gateway cannot read" if value is None else value
            return _block(
                "storage-engine",
                f"SET {plain} to {shown} would make tables created without ENGINE keep their "
                "rows outside the server's own tables (on another server, in files or in "
                "other tables), where the gateway cannot see what is read or written "
                f"through them. Set it to {_LOCAL_INSTEAD}, written as a plain name",
            )
        return None
    if c.kind != "CREATE TABLE":
        return None
    engines = sorted(f[7:] for f in c.flags if f.startswith("engine:"))
    outside = [e for e in engines if e not in LOCAL_ENGINES]
    if outside:
        shown = outside[0].upper() or "a value that is not an engine's name"
        return _block(
            "storage-engine",
            f"{_what(c)} with ENGINE={shown} keeps the table's rows outside the server's "
            "own tables (on another server, in files or in other tables the engine names), "
            "where the gateway cannot see what is read or written through it. Use "
            f"ENGINE={_LOCAL_INSTEAD}, or leave ENGINE out",
        )
    if "connection" in c.flags:
        return _block(
            "storage-engine",
            f"{_what(c)} with CONNECTION names another server for the table's rows, where "
            "the gateway cannot see what is read or written through it. Leave CONNECTION "
            f"out and use ENGINE={_LOCAL_INSTEAD}",
        )
    return None


def _data_directory(c: Classification, db: str | None) -> Decision | None:
    if "data_directory" in c.flags:
        return _block(
            "data-directory",
            f"{_what(c)} with DATA DIRECTORY or INDEX DIRECTORY writes the table's files in a "
            "directory of the database server's file system outside its data directory. "
            "Leave the option out: the server keeps the files in its data directory",
        )
    return None


def _mysql_schema(c: Classification, db: str | None) -> Decision | None:
    # `MySQL.user` is another schema on a server that tells case, but not on every one
    if c.kind in ("CREATE VIEW", "ALTER VIEW"):
        for table in c.reads:
            if qualified(table, db).split(".", 1)[0].lower() == "mysql":
                return _block(
                    "mysql-schema",
                    f"{c.kind} over the mysql system schema ({qualified(table, db)}) would let "
                    "statements write to it through the view. Do not retry it",
                )
    for table in c.writes:
        name = qualified(table, db)
        if name.split(".", 1)[0].lower() == "mysql":
            return _block(
                "mysql-schema",
                f"{c.kind} writes to the mysql system schema ({name}), which holds accounts "
                "and privileges. Do not retry it",
            )
        if "." not in name:
            return _block(
                "mysql-schema",
                f"{c.kind} writes to {name} in a schema the gateway does not know for "
                "certain (none was chosen, a USE has not finished, or a CALL ran, and a "
                "procedure may change the current schema), which may be the mysql system "
                "schema. Name the schema (schema.table), or choose it again with USE",
            )
    return None


#: The tables that hold the password hashes of the server's accounts (mysql.user is a
#: view of mysql.global_priv since MariaDB 10.4), and the hashes of their past passwords
#: (the password_reuse_check plugin's history).
ACCOUNT_TABLES = frozenset(
    {"mysql.user", "mysql.global_priv", "mysql.password_reuse_check_history"}
)
#: The table of CREATE SERVER's definitions, which holds the user name and password of
#: each server that FEDERATED and SPIDER tables connect to, in the clear.
SERVER_TABLES = frozenset({"mysql.servers"})
CREDENTIAL_TABLES = ACCOUNT_TABLES | SERVER_TABLES


def _credential_table(name: str) -> bool:
    """Whether a table read may be one of CREDENTIAL_TABLES: a bare name (no schema
    known for certain) may be in mysql."""
    if "." not in name:
        name = "mysql." + name
    return name in CREDENTIAL_TABLES


#: The SHOW statements that show accounts' password hashes, by their flag.
_SHOWS_HASHES = {"show_grants": "SHOW GRANTS", "show_create_user": "SHOW CREATE USER"}


def _credentials(c: Classification, db: str | None) -> Decision | None:
    read = sorted(t for t in c.reads if _credential_table(qualified(t, db).lower()))
    shown = next((s for flag, s in _SHOWS_HASHES.items() if flag in c.flags), None)
    if not read and shown is None:
        return None
    what = f"{c.kind} of {', '.join(read)}" if read else shown
    if read and all("mysql." + t.lower().rsplit(".", 1)[-1] in SERVER_TABLES for t in read):
        return _block(
            "credentials",
            f"{what} shows the user names and passwords, in the clear, with which the "
            "database server logs in to the servers that CREATE SERVER defined. Do not "
            "retry it; ask a database administrator about the servers you need",
        )
    return _block(
        "credentials",
        f"{what} shows the password hashes of database accounts, the gateway's own "
        "credential among them. Read privileges from information_schema.USER_PRIVILEGES, "
        "SCHEMA_PRIVILEGES or TABLE_PRIVILEGES instead",
    )


def _set_variables(c: Classification, db: str | None) -> Decision | None:
    if c.kind != "SET":
        return None
    for name, value in c.variables:
        if name.startswith("@"):
            continue
        plain = _plain(name)
        if plain not in SESSION_VARIABLES:
            return _block(
                "set-variable",
                f"SET {plain} is not a session setting the gateway allows (it may change how "
                "statements are logged or read). Leave it unset",
            )
        if plain == "sql_mode":
            refused = _sql_mode_refusal(value)
            if refused is not None:
                return _block("sql-mode", refused)
        if plain == "character set":
            return _block(
                "charset",
                "SET CHARACTER SET makes the connection character set the current "
                "database's, which the gateway cannot see (a database in swe7 or utf16 would "
                "change the statement texts PREPARE and EXECUTE IMMEDIATE take as strings). "
                "Use SET NAMES",
            )
        if plain in CHARSET_VARIABLES:
            refused = _charset_refusal(value)
            if refused is not None and value is None:
                # SET character_set_client = @saved_cs_client, as dumps restore it
                return _block(
                    "charset",
                    "the client character set may not be set to a computed value (a "
                    "variable, a function): the gateway reads every later statement in it "
                    "and cannot see which one that is. Name it: SET NAMES utf8mb4",
                )
            if refused is not None:
                return _block(
                    "charset",
                    f"the client character set {refused} is not one the gateway can read "
                    "safely. Use SET NAMES utf8mb4",
                )
        if plain in CONNECTION_VARIABLES or plain in SERVER_CHARSET_VARIABLES:
            refused = _connection_refusal(value)
            if refused is not None:
                what = (
                    "would make the server convert the statement texts that PREPARE and "
                    "EXECUTE IMMEDIATE take as strings before it reads them"
                    if plain in CONNECTION_VARIABLES
                    else "would be the character set of databases created without one, "
                    "in which texts could convert"
                )
                return _block(
                    "charset",
                    f"{plain} set to {refused} {what}, so that the server could read "
                    "another statement than the gateway. Use utf8mb4 (SET NAMES utf8mb4 "
                    "sets the connection's)",
                )
        if plain == "character_set_results":
            refused = _results_refusal(value)
            if refused is not None:
                return _block(
                    "charset",
                    f"character_set_results set to {refused} would send the names of result "
                    "columns in a form the gateway cannot match with its masking rules. Use "
                    "utf8mb4 (or the client character set, binary or NULL)",
                )
    return None


#: The sql_mode flags under which the gateway reads statements as the server does: those
#: that change only what statements do (dates, strictness, options), ANSI_QUOTES (a
#: double-quoted text is read both ways while the gateway cannot know it) and
#: NO_BACKSLASH_ESCAPES (followed from the server's status flags). The others change how
#: the server reads the same bytes: MSSQL quotes names in [brackets], ORACLE reads
#: PL/SQL, PIPES_AS_CONCAT makes || a concatenation, HIGH_NOT_PRECEDENCE binds NOT
#: tighter, IGNORE_SPACE and EMPTY_STRING_IS_NULL change names and values, and the
#: combinations ANSI, DB2, MAXDB, MYSQL323, MYSQL40 and POSTGRESQL hold some of them.
SQL_MODES_READ = frozenset(
    {
        "",
        "ALLOW_INVALID_DATES",
        "ANSI_QUOTES",
        "ERROR_FOR_DIVISION_BY_ZERO",
        "IGNORE_BAD_TABLE_OPTIONS",
        "NO_AUTO_CREATE_USER",
        "NO_AUTO_VALUE_ON_ZERO",
        "NO_BACKSLASH_ESCAPES",
        "NO_DIR_IN_CREATE",
        "NO_ENGINE_SUBSTITUTION",
        "NO_FIELD_OPTIONS",
        "NO_KEY_OPTIONS",
        "NO_TABLE_OPTIONS",
        "NO_UNSIGNED_SUBTRACTION",
        "NO_ZERO_DATE",
        "NO_ZERO_IN_DATE",
        "ONLY_FULL_GROUP_BY",
        "PAD_CHAR_TO_FULL_LENGTH",
        "REAL_AS_FLOAT",
        "SIMULTANEOUS_ASSIGNMENT",
        "STRICT_ALL_TABLES",
        "STRICT_TRANS_TABLES",
        "TIME_ROUND_FRACTIONAL",
        "TRADITIONAL",
    }
)


def unreadable_modes(sql_mode: str) -> str:
    """The modes of ``sql_mode`` (as the server reports it) the gateway cannot read, or
    "" when there is none."""
    modes = {part.strip().upper() for part in sql_mode.split(",")}
    return ",".join(sorted(modes - SQL_MODES_READ))


#: Kinds that run a statement text of their own, which the server reads when it runs.
_RUNS_TEXT = frozenset({"EXECUTE", "PREPARE"})


def _sql_mode_refusal(value: str | None) -> str | None:
    """Why a SET of sql_mode to ``value`` (a literal, None: computed) is refused."""
    if value is None:
        return (
            "SET sql_mode to a value the gateway cannot read (a variable, a function) could "
            "turn on a mode under which the server reads statements differently from the "
            "gateway. Set it to a quoted list of modes (SET sql_mode = "
            "'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'), DEFAULT, CONCAT(@@sql_mode, "
            "',MODE') to add one, or REPLACE(@@sql_mode, 'MODE', '') to remove one"
        )
    if value.lower() in ("default", "0"):
        return None  # the server's global sql_mode (docs/policy.md: the operator's); none
    # "@@sql_mode": the session's own modes, from CONCAT(@@sql_mode, ',...')
    modes = {part.strip().upper() for part in value.split(",")} - {"@@SQL_MODE"}
    unread = sorted(modes - SQL_MODES_READ)
    if not unread:
        return None
    return (
        f"sql_mode {', '.join(unread[:3])} makes the server read statements differently "
        "from the gateway (names in brackets, || as concatenation, NOT binding tighter, "
        "PL/SQL, modes given as a number), so the gateway could not tell what later "
        "statements do. Leave it out: for example SET sql_mode = "
        "'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'"
    )


def _plain(name: str) -> str:
    """A system variable's name without its ``session.`` or ``local.`` scope."""
    return name.split(".", 1)[1] if name.startswith(("session.", "local.")) else name


_CHARSET_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _charset_refusal(value: str | None) -> str | None:
    """How to name a client character set a SET may not choose, or None when it may: a
    named set the gateway reads safely. A number is a collation id (28 is gbk), DEFAULT
    and computed values are the server's to decide, which the gateway cannot see."""
    if value is None:
        return "a computed value"
    name = value.lower()
    if name == "default":
        return "DEFAULT (the server's, which the gateway cannot see)"
    if name in UNSAFE_CHARSETS or name in UNREADABLE_NAMES or name in ASCII_CHANGING:
        return value
    if not _CHARSET_NAME.fullmatch(name):
        return f"{value} (a collation number or an expression, not a character set name)"
    return None


def _not_a_name(value: str | None) -> str | None:
    """Why a SET of a character set or collation to ``value`` cannot be followed: a
    computed value, DEFAULT (the server's) or no name; None for a name."""
    if value is None:
        return "a computed value"
    if value.lower() == "default":
        return "DEFAULT (the server's, which the gateway cannot see)"
    if not _CHARSET_NAME.fullmatch(value.lower()):
        return f"{value} (a collation number or an expression, not a character set name)"
    return None


#: The connection character set: string literals are converted to it, the statement
#: texts of PREPARE and EXECUTE IMMEDIATE among them.
CONNECTION_VARIABLES = frozenset({"character_set_connection", "collation_connection"})
#: The defaults of databases created without a character set, and the current database's
#: character set while none is chosen (which SET CHARACTER SET and LOAD DATA would take):
#: drivers set them at connect (Perl's DBD::MariaDB sets character_set_server).
SERVER_CHARSET_VARIABLES = frozenset({"character_set_server", "collation_server"})


def _connection_refusal(value: str | None) -> str | None:
    """How to name a connection character set (or collation) a SET may not choose, or
    None when it may: one to which texts convert without turning a character into a
    quote or a backslash. A client's text converts character by character, so gbk's or
    sjis's characters stay whole (the server reads them so); swe7 has no backslash, and
    ucs2, utf16 and utf32 no ASCII bytes."""
    not_named = _not_a_name(value)
    if not_named is not None or value is None:
        return not_named
    charset = value.lower().split("_", 1)[0]  # utf16_bin is of utf16
    if charset in ASCII_CHANGING or charset in UNREADABLE_NAMES:
        return value
    return None


def _results_refusal(value: str | None) -> str | None:
    """How to name a ``character_set_results`` a SET may not choose, or None when it may:
    a character set name whose names keep their ASCII bytes, binary, or NULL (both send
    names as stored, in UTF-8)."""
    if value == "null":  # the keyword (a quoted 'NULL' is an unknown character set)
        return None
    not_named = _not_a_name(value)
    if not_named is not None or value is None:
        return not_named
    name = value.lower()
    if name in UNREADABLE_NAMES or name in ASCII_CHANGING:
        return f"{value} (its names do not keep their ASCII bytes)"
    return None


# What an agent can send instead of a statement outside the allow-list, where there is a
# common way to the same end.
_INSTEAD: dict[str, str] = {
    "LOCK TABLES": (
        "To keep other sessions off the rows you change, lock them in a transaction: "
        "START TRANSACTION, SELECT ... FOR UPDATE, then COMMIT"
    ),
    "UNLOCK TABLES": (
        "Rows locked by SELECT ... FOR UPDATE in a transaction are released by COMMIT or ROLLBACK"
    ),
    "DO": "To evaluate an expression, SELECT it",
    "XA": (
        "A transaction of one session needs no XA: START TRANSACTION (or BEGIN), then "
        "COMMIT or ROLLBACK, with SAVEPOINT and ROLLBACK TO SAVEPOINT inside it"
    ),
    "ANALYZE": (
        "ANALYZE of a statement is (ANALYZE SELECT ..., which runs it, or EXPLAIN it); "
        "ANALYZE TABLE rewrites a table's statistics, which every session's plans use: "
        "table maintenance, for an operator"
    ),
    **dict.fromkeys(
        ("CHECK", "REPAIR", "OPTIMIZE"),
        "CHECK TABLE, REPAIR TABLE and OPTIMIZE TABLE (which rebuilds the table) are table "
        "maintenance, for an operator; SHOW TABLE STATUS shows a table's size and state",
    ),
    "CHECKSUM": "To compare tables, SELECT COUNT(*) and aggregates from each",
    "FLUSH": "FLUSH acts on the whole server (its caches, logs, privileges or locks)",
    "HELP": "Look the statement up in the MariaDB or MySQL manual instead",
}


def _unknown(c: Classification, db: str | None) -> Decision | None:
    if c.kind not in KNOWN_KINDS:
        what = (
            "this text is not a statement the gateway knows"
            if c.kind == "UNKNOWN"
            else (f"{c.kind} is not a statement the gateway allows")
        )
        instead = _INSTEAD.get(c.kind)
        return _block(
            "unknown-statement",
            f"{what}. {instead + '. ' if instead else ''}Supported are SELECT, INSERT, "
            "UPDATE and DELETE with a WHERE, SHOW, DESCRIBE, EXPLAIN, USE, SET of session "
            "settings, transactions, and CREATE TABLE/INDEX/VIEW; for anything else, ask "
            "an operator to allow it with a rule",
        )
    return None


def _schema_change(c: Classification, db: str | None) -> Decision | None:
    if "temporary" in c.flags:
        # DROP TEMPORARY TABLE and CREATE OR REPLACE TEMPORARY TABLE drop only a temporary
        # table, which only the session that made it sees and which ends with it
        return None
    # MariaDB's CREATE OR REPLACE TABLE, VIEW and INDEX drop the existing object first
    if c.kind in SCHEMA_CHANGES or (c.kind in _REPLACEABLE and "or_replace" in c.flags):
        return _review(
            "schema-change", _review_reason(_what(c), "a schema change needs a person's approval")
        )
    return None


_REPLACEABLE = frozenset({"CREATE TABLE", "CREATE VIEW", "CREATE INDEX"})


def _upsert_from_select(c: Classification, db: str | None) -> Decision | None:
    if c.kind == "INSERT" and "on_duplicate_update" in c.flags and c.reads:
        return _review(
            "upsert-from-select",
            _review_reason(
                _what(c),
                "INSERT ... SELECT ... ON DUPLICATE KEY UPDATE updates every existing row "
                "the SELECT returns, as many as an UPDATE without WHERE may",
            ),
        )
    return None


def _stored_code(c: Classification, db: str | None) -> Decision | None:
    if c.kind in STORED_CODE:
        return _review(
            "stored-code",
            _review_reason(_what(c), "stored code runs later, unseen, so it needs approval"),
        )
    return None


def _call(c: Classification, db: str | None) -> Decision | None:
    if c.kind == "CALL":
        return _review(
            "call",
            _review_reason(
                _what(c), "a stored procedure runs statements the gateway cannot see one by one"
            ),
        )
    return None


def _stored_function(c: Classification, db: str | None) -> Decision | None:
    calls = sorted(c.stored_functions)
    if not calls:
        return None
    shown = ", ".join(f"{name}()" for name in calls[:3]) + (", ..." if len(calls) > 3 else "")
    # What the gateway read, for a caller that meant one of the server's functions.
    unknown = [n.upper() for n in calls if "." not in n and n.upper() not in BUILTIN_FUNCTIONS]
    respelled = [n.upper() for n in calls if "." not in n and n.upper() in BUILTIN_FUNCTIONS]
    notes = []
    if unknown:
        notes.append(f"{SERVER} has no built-in function {' or '.join(unknown[:3])}")
    if respelled:
        notes.append(
            f"{' and '.join(respelled[:3])} {'is' if len(respelled) == 1 else 'are'} built "
            "in only when written unquoted, with '(' straight after the name and the "
            "arguments the server's function takes"
        )
    read = f" ({'; '.join(notes)})" if notes else ""
    one = len(calls) == 1
    return _review(
        "stored-function",
        _review_reason(
            _what(c),
            f"it calls {shown}, {'a stored function' if one else 'stored functions'}{read}, "
            f"which {'runs' if one else 'run'} statements the gateway cannot see one by one. "
            "Use built-in functions or plain statements instead, or ask an operator to allow "
            f"{'the function' if one else 'the functions'}",
        ),
    )


def _replace(c: Classification, db: str | None) -> Decision | None:
    if c.kind == "REPLACE":
        return _review(
            "replace",
            _review_reason(
                _what(c),
                "REPLACE deletes the rows it collides with; use INSERT ... ON DUPLICATE KEY "
                "UPDATE to change existing rows without approval",
            ),
        )
    return None


def _multi_table(c: Classification, db: str | None) -> Decision | None:
    if c.kind in ("UPDATE", "DELETE") and c.multi_table:
        return _review(
            "multi-table-write",
            _review_reason(
                _what(c),
                f"a multi-table {c.kind} needs approval; a single-table {c.kind} with a "
                "WHERE clause (a subquery may select the rows) does not",
            ),
        )
    return None


BUILTINS: tuple[Builtin, ...] = (
    _drop_database,
    _truncate,
    _without_where,
    _privileges,
    _load_data,
    _into_file,
    _load_file,
    _shutdown,
    _set_global,
    _plugins,
    _udf,
    _prepare_from_variable,
    _handler,
    _servers,
    _storage_engine,
    _data_directory,
    _mysql_schema,
    _credentials,
    _set_variables,
    _unknown,
    _schema_change,
    _upsert_from_select,
    _stored_code,
    _call,
    _stored_function,
    _replace,
    _multi_table,
)

#: The built-ins that refuse reaching the database server's files or other servers,
#: which an allow rule's ``tables`` do not name: a table whose engine keeps its rows in
#: a file or on another server (CONNECT, FEDERATED, ...), or in a directory of its own.
_FILES: tuple[Builtin, ...] = (
    _load_data,
    _into_file,
    _load_file,
    _storage_engine,
    _data_directory,
    _servers,
)

#: The built-ins for a statement whose stored functions allow rules for CALL cover.
_BUILTINS_CALLS_ALLOWED = tuple(b for b in BUILTINS if b is not _stored_function)
