"""Which names a MariaDB server calls its own functions, asked of the server itself.

A call ``name(...)`` in a statement runs either one of the server's built-in functions or
a stored function of that name, whose statements the gateway never sees. Which one
depends on the name and on how it is written: a native function (``CONCAT``) is found
whatever the spelling, a keyword (``LEFT``, ``DATE``) only when unquoted, and a function
keyword (``NOW``, ``COUNT``) only when ``(`` follows the name straight away; any other
spelling makes the server look for a stored function.

:func:`probe` asks the server: it prepares ``SELECT name(...)`` (``PREPARE`` runs
nothing) with 0 to 8 arguments in a schema without routines, written plainly, with a
space before ``(`` and in backquotes, under the server's default ``sql_mode`` and under
``ORACLE`` (another grammar). A spelling is built in when no probe answers "FUNCTION ...
does not exist" (errors 1305 and 1630): a syntax error, a wrong argument count or
success all mean the server never reads it as a stored function's call. A few names
are built in with some numbers of arguments only (``POINT(x, y)``; ``POINT()`` is a
stored function's call).

:func:`candidates` gathers the names to ask about: ``information_schema.SQL_FUNCTIONS``,
``KEYWORDS``, the function plugins, ``mysql.help_topic``, and optionally every name-like
string of the server binary (which finds the few native functions the others miss).

``scripts/server-functions`` writes ``appliance/policy/server_functions.py`` from these;
``tests/policy/test_server_functions.py`` checks that module against the lab server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pymysql

#: How a name is built in; each reading allows the spellings of the ones after it.
NATIVE = "native"  # any spelling, even `name`(...)
KEYWORD = "keyword"  # unquoted: name(...) and name (...)
TIGHT = "tight"  # unquoted with '(' straight after it: name(...)
READINGS = (NATIVE, KEYWORD, TIGHT)

PROBE_SCHEMA = "sqlgate_function_probe"
_DOES_NOT_EXIST = frozenset({1305, 1630})  # ER_SP_DOES_NOT_EXIST, ER_FUNC_INEXISTENT_NAME_COLLISION
#: Calls are tried with 0 to this many arguments; a name built in from some count up to
#: this one is taken to be built in with any more.
MOST_ARGUMENTS = 8
ALL_COUNTS = frozenset(range(MOST_ARGUMENTS + 1))
_MODES = ("DEFAULT", "'ORACLE'")  # DEFAULT: the server's own sql_mode
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Function names and keywords sit in the binary as upper-case C strings.
_BINARY_NAME = re.compile(rb"(?<![A-Za-z0-9_$])[A-Z_][A-Z0-9_]{1,63}(?=\x00)")


def server_version(conn: pymysql.connections.Connection[Any]) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        row = cur.fetchone()
    assert row is not None
    return str(row[0])


def candidates(conn: pymysql.connections.Connection[Any], binary: Path | None = None) -> set[str]:
    """Upper-case names worth asking about (a superset of the built-in ones)."""
    names: set[str] = set()
    with conn.cursor() as cur:
        for query in (
            "SELECT `FUNCTION` FROM information_schema.SQL_FUNCTIONS",
            "SELECT WORD FROM information_schema.KEYWORDS",
            "SELECT PLUGIN_NAME FROM information_schema.PLUGINS WHERE PLUGIN_TYPE = 'FUNCTION'",
            "SELECT name FROM mysql.help_topic",
        ):
            cur.execute(query)
            for (text,) in cur.fetchall():
                names.update(_NAME.findall(str(text).replace("\\_", "_")))
    if binary is not None:
        names.update(m.group().decode() for m in _BINARY_NAME.finditer(binary.read_bytes()))
    return {n.upper() for n in names}


class Found(NamedTuple):
    """How the server reads calls of one built-in name."""

    reading: str  # NATIVE, KEYWORD or TIGHT: the spellings it is built in for
    counts: frozenset[int]  # the numbers of arguments (up to MOST_ARGUMENTS) it is built in for


def probe(conn: pymysql.connections.Connection[Any], names: Iterable[str]) -> dict[str, Found]:
    """How each name that is built in is read (the strictest over the sql_modes); names
    the server reads as a stored function's in every spelling are left out."""
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {PROBE_SCHEMA}")
        cur.execute(f"USE {PROBE_SCHEMA}")
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s",
            (PROBE_SCHEMA,),
        )
        row = cur.fetchone()
        assert row is not None and row[0] == 0, f"{PROBE_SCHEMA} must hold no routines"
    try:
        found: dict[str, Found] | None = None
        for mode in _MODES:
            with conn.cursor() as cur:
                cur.execute(f"SET SESSION sql_mode = {mode}")
            here = {n: f for n in sorted(names) if (f := _found(conn, n)) is not None}
            found = here if found is None else _strictest(found, here)
        assert found is not None
        return found
    finally:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = DEFAULT")
            cur.execute(f"DROP DATABASE IF EXISTS {PROBE_SCHEMA}")


def _strictest(a: dict[str, Found], b: dict[str, Found]) -> dict[str, Found]:
    """Built in only where both say so: the stricter reading, the common counts."""
    found: dict[str, Found] = {}
    for name in a.keys() & b.keys():
        counts = a[name].counts & b[name].counts
        if counts:
            reading = READINGS[
                max(READINGS.index(a[name].reading), READINGS.index(b[name].reading))
            ]
            found[name] = Found(reading, counts)
    return found


def _found(conn: pymysql.connections.Connection[Any], name: str) -> Found | None:
    plain = _builtin_counts(conn, f"{name}(")
    if not plain:
        return None
    spaced = _builtin_counts(conn, f"{name} (") & plain
    quoted = _builtin_counts(conn, f"`{name}`(") & spaced
    reading = NATIVE if quoted == plain else KEYWORD if spaced == plain else TIGHT
    return Found(reading, plain)


def _builtin_counts(conn: pymysql.connections.Connection[Any], call: str) -> frozenset[int]:
    """The numbers of arguments with which the server does not read the call as a
    stored function's."""
    counts = set()
    for count in range(MOST_ARGUMENTS + 1):
        arguments = ", ".join(["NULL"] * count)
        try:
            with conn.cursor() as cur:
                cur.execute("PREPARE sqlgate_probe FROM %s", (f"SELECT {call}{arguments})",))
        except pymysql.err.MySQLError as err:
            if err.args and err.args[0] in _DOES_NOT_EXIST:
                continue
        counts.add(count)
    return frozenset(counts)


def counts_range(counts: frozenset[int]) -> tuple[int, int | None] | None:
    """The least and most arguments (None: no limit) of a name built in with some
    numbers of arguments only; None when it is with any number."""
    if counts == ALL_COUNTS:
        return None
    least, most = min(counts), max(counts)
    assert counts == frozenset(range(least, most + 1)), f"not a range: {sorted(counts)}"
    return least, None if most == MOST_ARGUMENTS else most


def render(version: str, found: dict[str, Found]) -> str:
    """The text of ``appliance/policy/server_functions.py``."""
    sets = {r: sorted(n for n, f in found.items() if f.reading == r) for r in READINGS}
    limited = {n: r for n, f in sorted(found.items()) if (r := counts_range(f.counts))}
    counts = "\n".join(f'        "{n}": ({lo}, {hi}),' for n, (lo, hi) in limited.items())
    return _MODULE.format(
        version=version,
        short=version.split("-")[0],
        native=_words(sets[NATIVE]),
        keyword=_words(sets[KEYWORD]),
        tight=_words(sets[TIGHT]),
        argument_counts=counts,
        counts=", ".join(f"{len(sets[r])} {r}" for r in READINGS),
    )


def frozen(
    native: Iterable[str],
    keyword: Iterable[str],
    tight: Iterable[str],
    argument_counts: Mapping[str, tuple[int, int | None]],
) -> dict[str, Found]:
    """What a module made by :func:`render` holds, as :func:`probe` says it."""
    readings = {n: TIGHT for n in tight}
    readings.update({n: KEYWORD for n in keyword})
    readings.update({n: NATIVE for n in native})
    found = {}
    for name, reading in readings.items():
        counts = ALL_COUNTS
        if name in argument_counts:
            least, most = argument_counts[name]
            counts = frozenset(range(least, (MOST_ARGUMENTS if most is None else most) + 1))
        found[name] = Found(reading, counts)
    return found


def _words(names: list[str], width: int = 88) -> str:
    lines: list[str] = []
    line = ""
    for name in names:
        if line and len(line) + 1 + len(name) > width:
            lines.append(line)
            line = name
        else:
            line = f"{line} {name}" if line else name
    if line:
        lines.append(line)
    return "\n".join(f"    {line}" for line in lines)


_MODULE = '''\
"""The server's own functions: the names whose call MariaDB never reads as a call of a
stored function (SPEC §6: a stored function, like a CALL, runs statements the gateway
cannot see; ``rules.py`` holds a call of any other name for review).

Generated by ``scripts/server-functions`` from the server {version}:
{counts} names. Do not edit by hand. To regenerate it (after a server
upgrade, or when ``tests/policy/test_server_functions.py`` reports drift), run
``python3 scripts/server-functions``: it starts a private lab MariaDB (tests/lab) and
rewrites this file.

How it was found (tests/lab/functions.py): the candidates are the names of
``information_schema.SQL_FUNCTIONS`` and ``KEYWORDS``, the function plugins, the
``mysql.help_topic`` names and every name-like string of the ``mariadbd`` binary. For
each, the server prepared ``SELECT name(...)`` (nothing runs) with 0 to 8 arguments, in a
schema without routines, under its default ``sql_mode`` and under ``ORACLE``; a
spelling is built in when the server never answered "FUNCTION ... does not exist". A name
not listed (MySQL 8's ``ANY_VALUE``, ``BIN_TO_UUID``, ``REGEXP_LIKE``, a non-reserved
keyword such as ``STATUS``) is a stored function's name on this server.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "ARGUMENT_COUNTS",
    "BUILTIN_FUNCTIONS",
    "KEYWORD_FUNCTIONS",
    "NATIVE_FUNCTIONS",
    "SERVER",
    "TIGHT_FUNCTIONS",
]

SERVER = "MariaDB {short}"

#: Native functions: built in however the name is written, even in backquotes.
NATIVE_FUNCTIONS = frozenset(
    """
{native}
    """.split()
)

#: Keywords: built in when the name is not quoted, also with a space or comment before
#: its ``(``; in backquotes the name is a stored function's.
KEYWORD_FUNCTIONS = frozenset(
    """
{keyword}
    """.split()
)

#: Function keywords: built in only when ``(`` follows the unquoted name straight away;
#: ``NOW ()`` calls a stored function ``now`` (unless IGNORE_SPACE is set, which the
#: gateway does not assume).
TIGHT_FUNCTIONS = frozenset(
    """
{tight}
    """.split()
)

#: Every name that is built in when written ``NAME(``.
BUILTIN_FUNCTIONS = NATIVE_FUNCTIONS | KEYWORD_FUNCTIONS | TIGHT_FUNCTIONS

#: Names built in only with so many arguments (least, most; None: no limit); with any
#: other number the call is a stored function's: ``POINT(1)`` calls a function ``point``.
ARGUMENT_COUNTS: Mapping[str, tuple[int, int | None]] = MappingProxyType(
    {{
{argument_counts}
    }}
)
'''
