"""How text from the wire is shown to a person (the console, ``sqlgate approvals``).

An agent writes the statements an operator reads before approving them, so a statement
must show as the server reads it: only the server's blanks collapse, and every character
that would not show as itself (a control or format character, a Unicode space the server
reads as a letter of a name, one that draws nothing) is escaped. Pure: no I/O, no
dependencies, so that the console's model may use it too.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator

__all__ = [
    "BLANKS",
    "FOLD",
    "as_sent",
    "blank_lines",
    "counted",
    "escape",
    "folded",
    "folds",
    "json_line",
    "shown",
    "statement_lines",
    "unseen",
]

BLANKS = re.compile("[ \t\r\x0b\x0c]+")
"""What the server reads as blanks between words (and ``\\n``, a line break): runs of
them show as one space. Other "spaces" (U+00A0, U+3000...) are letters of a name to the
server (``--`` followed by one starts no comment), so they are never shown as blanks."""

_UNSEEN = (
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x115F, 0x1160),  # Hangul fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian variation selectors
    (0x2800, 0x2800),  # Braille blank
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xE0100, 0xE01EF),  # variation selectors supplement
)
"""Printable characters that draw nothing (or a blank): a ``--`` followed by one looks
like a comment, which the server does not read as one."""


def escape(c: str) -> str:
    """``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``: the code point, unambiguously."""
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def unseen(c: str, after: str) -> bool:
    """Whether ``c`` (following ``after``) would not show as itself: a control or
    format character (bidi overrides, zero-width ones), a space other than the blank,
    one that draws nothing, or a mark that would change how an ASCII character (or
    nothing) before it looks."""
    if not c.isprintable():
        return True
    n = ord(c)
    if n < 0x80:
        return False
    if any(low <= n <= high for low, high in _UNSEEN):
        return True
    return unicodedata.category(c).startswith("M") and (not after or after.isascii())


def shown(text: str, keep: str = "") -> str:
    """``text`` with every character that would not show as itself escaped (but those
    in ``keep``)."""
    out: list[str] = []
    after = ""
    for c in text:
        piece = escape(c) if c not in keep and unseen(c, after) else c
        out.append(piece)
        after = piece[-1]
    return "".join(out)


FOLD = 16
"""Blanks in a row that show as they are (indentation); a longer run shows as one marker
saying how many (``folded``)."""

_RUNS = re.compile(f"[ \t\r\x0b\x0c]{{{FOLD + 1},}}")
_BLANK_NAMES = {
    " ": ("space", "spaces"),
    "\t": ("tab", "tabs"),
    "\r": ("carriage return", "carriage returns"),
    "\x0b": ("vertical tab", "vertical tabs"),
    "\x0c": ("form feed", "form feeds"),
}


def counted(n: int, names: tuple[str, str]) -> str:
    """``1 row``, ``1,204 rows``: a count with its noun, ``names`` (singular, plural)."""
    return f"{n:,} {names[0] if n == 1 else names[1]}"


def _marker(run: str) -> str:
    """``⟨300 spaces⟩``, ``⟨290 spaces, 10 tabs⟩``: what a run of blanks holds, in the
    order each kind first comes."""
    kinds = dict.fromkeys(run)
    return "\u27e8" + ", ".join(counted(run.count(c), _BLANK_NAMES[c]) for c in kinds) + "\u27e9"


def folds(line: str) -> Iterator[tuple[str, bool]]:
    """``line`` (no line break in it) in pieces: its text as it came (False), and each
    run of more than ``FOLD`` of the server's blanks as one marker saying how many
    (True), for a caller that shows the text its own way (the console marks escapes)."""
    start = 0
    for run in _RUNS.finditer(line):
        if run.start() > start:
            yield line[start : run.start()], False
        yield _marker(run.group()), True
        start = run.end()
    if start < len(line):
        yield line[start:], False


def folded(line: str) -> str:
    """A line of a statement (no line break in it) as ``shown`` shows it, but each run of
    more than ``FOLD`` of the server's blanks as one marker saying how many: 300 spaces
    after ``WHERE id = 1`` pushed its ``OR 1=1`` past the edge of the screen (or of a
    line a pager does not wrap), a harmless-looking start in view."""
    if len(line) <= FOLD:
        return shown(line)
    return "".join(piece if marker else shown(piece) for piece, marker in folds(line))


def blank_lines(count: int) -> str:
    """The marker of ``count`` blank lines in a row (two or more: hundreds pushed what
    follows them far below the statement's start): ``⟨300 blank lines⟩``."""
    return f"\u27e8{count:,} blank lines\u27e9"


def statement_lines(sql: str) -> list[list[tuple[str, bool]]]:
    """A statement's lines, each in ``folds``' pieces, and two blank lines or more in a
    row as one line holding their marker (``blank_lines``): what ``sqlgate replay`` and
    the console's ledger show, so that nothing hides at the end of a harmless start."""
    lines: list[list[tuple[str, bool]]] = []
    blank: list[str] = []  # the blank lines in a row before this one
    for line in [*sql.replace("\r\n", "\n").split("\n"), None]:
        if line is not None and not BLANKS.sub("", line):
            blank.append(line)
            continue
        if blank:
            lines.append(
                [(blank_lines(len(blank)), True)] if len(blank) > 1 else [*folds(blank[0])]
            )
            blank = []
        if line is not None:
            lines.append([*folds(line)])
    return lines


def json_line(text: str) -> str:
    """A line of JSON (``ledger export``, ``replay --format json``) with every character
    beyond ASCII that is not printable (C1 controls such as U+009B, which a terminal may
    read as an escape; U+0085, U+2028 and U+2029, which line readers take for line ends;
    bidi and other format characters) written as its ``\\u`` escape. The same JSON value:
    such a character can only be inside a string, where the escape means it."""
    if text.isprintable():
        return text
    return "".join(c if c < "\x7f" or c.isprintable() else json.dumps(c)[1:-1] for c in text)


_HEX = re.compile("(?:[0-9a-f]{2})+")
_CHARSET = re.compile("[a-z0-9_]{1,32}")


def as_sent(sql_hex: object, sql_charset: object) -> str | None:
    """The bytes of a statement whose text, as UTF-8, is not what the client sent (a
    latin1 ``é``, bytes in a ``_binary`` string that show as U+FFFD): ``as sent, read in
    latin1: 0x...``, so that a person sees what runs. None when there are none, or they
    are not hex (said as such, not shown)."""
    if not isinstance(sql_hex, str):
        return None
    if not _HEX.fullmatch(sql_hex):
        return "as sent: (not hex, not shown)"
    read = ""
    if isinstance(sql_charset, str) and _CHARSET.fullmatch(sql_charset):
        read = f", read in {sql_charset}"
    return f"as sent{read}: 0x{sql_hex.upper()}"
