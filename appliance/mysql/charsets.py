"""Character sets of MariaDB, for reading the names in column definitions.

The server sends a result's column definitions (schema, table and column names) in the
session's ``character_set_results``. Masking matches those names against its rules, so
the gateway must decode them the way the server encoded them: ``collation_charset``
gives the character set of the collation id a client logs in with, ``name_codec`` the
Python codec that reads names in a character set.
"""

from __future__ import annotations

__all__ = [
    "LOSSLESS_NAMES",
    "UNREADABLE_NAMES",
    "charset_of",
    "collation_charset",
    "name_codec",
    "read_text",
    "text_codec",
]

# From MariaDB 10.11: SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS
# WHERE ID < 256 (a handshake carries one byte). "a-b" is a run of ids.
_COLLATIONS = """
big5: 1 84
latin2: 2 9 21 27 77
dec8: 3 69
cp850: 4 80
latin1: 5 8 15 31 47-49 94
hp8: 6 72
koi8r: 7 74
swe7: 10 82
ascii: 11 65
ujis: 12 91
sjis: 13 88
cp1251: 14 23 50-52
hebrew: 16 71
tis620: 18 89
euckr: 19 85
latin7: 20 41-42 79
koi8u: 22 75
gb2312: 24 86
greek: 25 70
cp1250: 26 34 44 66 99
gbk: 28 87
cp1257: 29 58-59
latin5: 30 78
armscii8: 32 64
utf8mb3: 33 83 192-215 223
ucs2: 35 90 128-151 159
cp866: 36 68
keybcs2: 37 73
macce: 38 43
macroman: 39 53
cp852: 40 81
utf8mb4: 45-46 224-247
utf16: 54-55 101-124
utf16le: 56 62
cp1256: 57 67
utf32: 60-61 160-183
binary: 63
geostd8: 92-93
cp932: 95-96
eucjpms: 97-98
"""


def _parse(table: str) -> dict[int, str]:
    ids: dict[int, str] = {}
    for line in table.strip().splitlines():
        name, _, runs = line.partition(":")
        for run in runs.split():
            first, _, last = run.partition("-")
            for i in range(int(first), int(last or first) + 1):
                ids[i] = name
    return ids


_CHARSET_OF = _parse(_COLLATIONS)

UNREADABLE_NAMES = frozenset({"ucs2", "utf16", "utf16le", "utf32", "filename"})
"""Character sets in which names do not keep their ASCII bytes: two or four bytes a
character, or ``filename``'s ``@002d`` for ``-``. Such a results character set is
refused, and a session that logs in with one gets the server's default instead."""

UNSAFE_CHARSETS = frozenset({"big5", "cp932", "gbk", "gb18030", "sjis"})
"""Client character sets whose multi-byte characters can end in a backslash or a quote:
the server would read a statement differently from any ASCII-safe lexer."""

ASCII_CHANGING = frozenset({"swe7"})
"""A single-byte character set whose ASCII bytes are other characters (in swe7 the
backtick is é, the backslash Ö): a text converted to or from it changes its quotes and
backslashes, and names in it do not keep their ASCII bytes."""

CONVERSION_UNSAFE = UNSAFE_CHARSETS | UNREADABLE_NAMES | ASCII_CHANGING
"""Character sets from or to which the server's conversion of a text (a statement held
in a string, as PREPARE and EXECUTE IMMEDIATE take it) may turn a character into a quote
or a backslash, or one into a letter."""

LOSSLESS_NAMES = frozenset({"utf8mb4", "utf8mb3", "utf8", "binary", "null"})
"""Results character sets that carry every name as stored (UTF-8); the others write a
``?`` for a character they cannot hold, which may hide a masked column's name."""

_CODECS = {
    **dict.fromkeys(LOSSLESS_NAMES, "utf-8"),
    "ascii": "ascii",
    "latin1": "cp1252",  # MariaDB's latin1 is Windows-1252
    "latin2": "iso8859_2",
    "latin5": "iso8859_9",
    "latin7": "iso8859_13",
    "cp1250": "cp1250",
    "cp1251": "cp1251",
    "cp1257": "cp1257",
    "cp850": "cp850",
    "cp852": "cp852",
    "koi8r": "koi8_r",
    "macroman": "mac_roman",
    "macce": "mac_latin2",
    "tis620": "tis_620",
}
"""Codecs checked byte for byte against the server's tables. The other character sets
(the CJK ones, greek, hebrew, ...) have none whose every byte agrees with the server's:
a non-ASCII name in them cannot be read for sure."""


def charset_of(collation: int) -> str | None:
    """The character set of any collation id the table knows (``ucs2`` too); None for
    one it does not (a newer server's, or above 255)."""
    return _CHARSET_OF.get(collation)


def collation_charset(collation: int | None) -> str | None:
    """The character set of a login collation id; None for an id the server does not
    know or will not take from a client (it then uses its own default, unseen)."""
    name = _CHARSET_OF.get(collation) if collation is not None else None
    return None if name is None or name in UNREADABLE_NAMES else name


def name_codec(charset: str | None) -> str | None:
    """The Python codec that reads names sent in ``charset``; None when there is none."""
    return None if charset is None else _CODECS.get(charset.lower())


_TEXT_CODECS = {
    "big5": "big5",
    "cp866": "cp866",
    "cp932": "cp932",
    "cp1256": "cp1256",
    "eucjpms": "euc_jp",
    "euckr": "euc_kr",
    "gb2312": "gb2312",
    "gbk": "gbk",
    "greek": "iso8859_7",
    "hebrew": "iso8859_8",
    "koi8u": "koi8_u",
    "sjis": "shift_jis",
    "ujis": "euc_jp",
}
"""Codecs close to the server's tables for the other character sets, for showing a
statement's text to a person only: a few of their characters may read otherwise than
the server reads them, which is why a record of such a text keeps its bytes too."""


def text_codec(charset: str | None) -> str | None:
    """The Python codec that shows a statement sent in ``charset`` (the session's
    ``character_set_client``) as the server reads it; None when there is none."""
    if charset is None:
        return None
    return name_codec(charset) or _TEXT_CODECS.get(charset.lower())


def read_text(sql: bytes, charset: str | None) -> tuple[str, dict[str, str]]:
    """A statement's text (or a name a command carries) as a ledger record's ``sql``
    holds it: read in ``charset``, the session's ``character_set_client`` (as the server
    reads it; UTF-8 when not known), and the fields that keep it exact where that text,
    as UTF-8, is not the bytes sent (a latin1 client's ``é``, bytes no character set
    reads in a ``_binary`` string): ``sql_hex``, the bytes, and ``sql_charset``, what
    ``sql`` was read in."""
    if sql.isascii():  # what every character set the gateway follows reads alike
        return sql.decode("ascii"), {}
    codec = text_codec(charset)
    if codec is None:  # not known, or one the gateway has no reading of
        codec, charset = "utf-8", "utf8mb4"
    text = sql.decode(codec, "replace")
    if text.encode("utf-8", "surrogatepass") == sql:
        return text, {}
    return text, {"sql_hex": sql.hex(), "sql_charset": str(charset).lower()}
