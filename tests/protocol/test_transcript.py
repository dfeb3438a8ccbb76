"""Decoding recorded answers (``appliance.mysql.transcript``), byte for byte.

Every answer is written out with ``Reply`` the way a server writes it; the decoder must
read it whole, cut at every byte (only whole rows, never an exception), and with bytes
after its end.
"""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.mysql import packets
from appliance.mysql.constants import MAX_PAYLOAD, Capability, Command, FieldType, ServerStatus
from appliance.mysql.packets import ColumnDefinition
from appliance.mysql.transcript import (
    Answer,
    Column,
    Error,
    Ok,
    Prepared,
    ResultSet,
    cut_rows,
    decode_answer,
)
from appliance.mysql.wire import frame

from .playbook import AUTOCOMMIT, Reply, column
from .test_packets import (
    BIN_ALICE,
    BIN_BOB,
    COL_CREATED,
    COL_EMAIL,
    COL_FLAG,
    COL_ID,
    COL_NOTE,
    COL_PRICE,
    COL_SCORE,
    EOF_IN_TRANS,
    OK_UPDATE,
    ROW_ALICE,
    ROW_BOB,
)
from .test_session import COLS, ROWS, _prepare_ok, mutated

EOF_MODES = pytest.mark.parametrize(
    "deprecate_eof", [True, False], ids=["deprecate-eof", "classic-eof"]
)
MORE = AUTOCOMMIT | int(ServerStatus.MORE_RESULTS_EXISTS)
CURSOR = AUTOCOMMIT | int(ServerStatus.CURSOR_EXISTS)

ID_COLUMN = Column("id", "LONGLONG", "app", "t", "id")
NAME_COLUMN = Column("name", "VAR_STRING", "app", "t", "name")
ROWS_TEXT = [["1", "ada"], ["2", None], ["3", "grace"]]


def decode(data: bytes, command: int = Command.QUERY, *, deprecate_eof: bool = True) -> Answer:
    return decode_answer(data, command=command, deprecate_eof=deprecate_eof, truncated=False)


def result_set(answer: Answer, i: int = 0) -> ResultSet:
    result = answer.results[i]
    assert isinstance(result, ResultSet), result
    return result


# ------------------------------------------------------------------------ text results


@EOF_MODES
def test_text_result(deprecate_eof: bool) -> None:
    data = Reply(1).text_result(COLS, ROWS, deprecate_eof=deprecate_eof, status=AUTOCOMMIT).data
    answer = decode(data, deprecate_eof=deprecate_eof)
    assert answer.complete and answer.problem is None and answer.error is None
    (result,) = answer.result_sets
    assert result.columns == [ID_COLUMN, NAME_COLUMN]
    assert result.rows == ROWS_TEXT
    assert result.complete and not result.cursor
    assert [d.name for d in result.definitions] == [b"id", b"name"]


@EOF_MODES
def test_two_result_sets_and_the_final_ok_of_a_call(deprecate_eof: bool) -> None:
    reply = Reply(1).text_result(COLS, ROWS[:1], deprecate_eof=deprecate_eof, status=MORE)
    reply.text_result([column(b"n")], [[b"x"], [b"y"]], deprecate_eof=deprecate_eof, status=MORE)
    reply.ok(affected=0)
    answer = decode(reply.data, deprecate_eof=deprecate_eof)
    assert answer.complete and answer.problem is None
    first, second, ok = answer.results
    assert isinstance(first, ResultSet) and first.rows == [["1", "ada"]]
    assert isinstance(second, ResultSet) and second.rows == [["x"], ["y"]]
    assert second.columns == [Column("n", "VAR_STRING", "app", "t", "n")]
    assert ok == Ok(0, 0, 0, "")
    assert answer.ok == ok and answer.result_sets == [first, second]


@EOF_MODES
def test_ok_then_a_result_set(deprecate_eof: bool) -> None:
    reply = (
        Reply(1).ok(affected=4, status=MORE).text_result(COLS, ROWS, deprecate_eof=deprecate_eof)
    )
    answer = decode(reply.data, deprecate_eof=deprecate_eof)
    assert answer.complete
    ok, result = answer.results
    assert ok == Ok(4, 0, 0, "")
    assert isinstance(result, ResultSet) and result.rows == ROWS_TEXT


def test_ok_with_its_figures_and_info() -> None:
    payload = packets.build_ok(
        packets.OkPacket(
            affected_rows=300, last_insert_id=70000, status=AUTOCOMMIT, warnings=2, info=b"hi"
        ),
        0,
    )
    answer = decode(frame(1, payload))
    assert answer.results == [Ok(300, 70000, 2, "hi")]
    assert answer.complete and answer.problem is None


def test_ok_with_a_session_state_block() -> None:
    status = AUTOCOMMIT | int(ServerStatus.SESSION_STATE_CHANGED)
    ok = packets.OkPacket(affected_rows=1, status=status, info=b"", session_state=b"\x00\x03\x02db")
    answer = decode(frame(1, packets.build_ok(ok, int(Capability.SESSION_TRACK))))
    assert answer.results == [Ok(1, 0, 0, "")] and answer.complete


def test_err() -> None:
    data = Reply(1).err(1146, "Table 'app.missing' doesn't exist", "42S02").data
    answer = decode(data)
    assert answer.error == Error(1146, "42S02", "Table 'app.missing' doesn't exist")
    assert answer.results == [] and answer.complete and answer.problem is None


@EOF_MODES
def test_err_in_the_middle_of_the_rows(deprecate_eof: bool) -> None:
    reply = Reply(1).columns(COLS, deprecate_eof=deprecate_eof).text_rows(ROWS[:2])
    reply.err(1317, "Query execution was interrupted", "70100")
    answer = decode(reply.data, deprecate_eof=deprecate_eof)
    assert answer.complete and answer.error == Error(
        1317, "70100", "Query execution was interrupted"
    )
    result = result_set(answer)
    assert result.rows == ROWS_TEXT[:2] and not result.complete


def test_values_that_are_not_text_in_their_character_set_stay_bytes() -> None:
    """Bytes that are not UTF-8 were written as ``\\xNN``, which a text holding those
    four characters also is: they stay bytes, text is text."""
    rows = [[b"\xff\x00ok"], [b"\\xff\x00ok"]]
    data = Reply(1).text_result([column(b"caf\xe9")], rows, deprecate_eof=True).data
    result = result_set(decode(data))
    assert result.columns[0].name == "caf\\xe9"
    assert result.rows == [[b"\xff\x00ok"], ["\\xff\x00ok"]]


def _charset_column(charset: int) -> bytes:
    definition = packets.parse_column_definition(column(b"v"))
    return packets.build_column_definition(replace(definition, charset=charset))


@pytest.mark.parametrize(
    ("charset", "raw", "seen"),
    [
        (8, b"caf\xe9", "caf\u00e9"),  # latin1 (Windows-1252 in MariaDB)
        (8, b"\x81", b"\x81"),  # no character of cp1252
        (63, b"12.50", "12.50"),  # a number: binary, printable
        (63, b"two\nlines\t", "two\nlines\t"),
        (63, b"\x00\x01", b"\x00\x01"),  # a BIT or a BLOB: not text
        (63, b"\xc3\xa9", "\u00e9"),
        (45, b"\x00\x01", "\x00\x01"),  # utf8mb4 text: whatever it holds
        (28, b"abc", "abc"),  # gbk, which Python cannot read for sure: its ASCII only
        (28, b"\xb0\xa1", b"\xb0\xa1"),
        (54, b"a\x00", b"a\x00"),  # utf16: never taken for ASCII
        (2304, b"caf\xc3\xa9", "caf\u00e9"),  # newer than the table: taken for UTF-8
        (2304, b"\xff", b"\xff"),
    ],
)
def test_a_value_is_read_in_its_columns_character_set(
    charset: int, raw: bytes, seen: str | bytes
) -> None:
    data = Reply(1).text_result([_charset_column(charset)], [[raw]], deprecate_eof=True).data
    assert result_set(decode(data)).rows == [[seen]]


@EOF_MODES
def test_a_row_over_16_mib_is_joined(deprecate_eof: bool) -> None:
    big = b"x" * (MAX_PAYLOAD + 10)
    data = Reply(1).text_result(COLS, [[b"1", big], [b"2", b"b"]], deprecate_eof=deprecate_eof).data
    result = result_set(decode(data, deprecate_eof=deprecate_eof))
    assert result.complete and result.rows == [["1", big.decode()], ["2", "b"]]


# Captured from MariaDB 10.11 (see test_packets): SELECT * FROM customers, as text rows
# (PyMySQL) and as binary rows of the prepared statement (connector-python).
CUSTOMERS = [COL_ID, COL_EMAIL, COL_NOTE, COL_PRICE, COL_CREATED, COL_SCORE, COL_FLAG]
CUSTOMERS_TEXT = [
    ["1", "alice@example.com", None, "19.99", "2024-05-01 12:30:00", None, "1"],
    ["2", "bob@example.com", "vip", "5.00", "2024-05-02 08:00:00", "2.5", "0"],
]


def _captured(rows: list[bytes]) -> bytes:
    reply = Reply(1).packet(b"\x07")
    for definition in CUSTOMERS:
        reply.packet(definition)
    reply.packet(EOF_IN_TRANS)
    for row in rows:
        reply.packet(row)
    return reply.packet(EOF_IN_TRANS).data


def test_captured_text_and_binary_rows_read_the_same() -> None:
    text = decode(_captured([ROW_ALICE, ROW_BOB]), deprecate_eof=False)
    binary = decode(_captured([BIN_ALICE, BIN_BOB]), Command.STMT_EXECUTE, deprecate_eof=False)
    for answer in (text, binary):
        assert answer.complete and answer.problem is None
        result = result_set(answer)
        assert result.rows == CUSTOMERS_TEXT
        assert [c.type for c in result.columns] == [
            "LONG",
            "VAR_STRING",
            "BLOB",
            "NEWDECIMAL",
            "DATETIME",
            "DOUBLE",
            "TINY",
        ]
        assert result.columns[1] == Column("email", "VAR_STRING", "orders", "customers", "email")


def test_captured_ok_of_an_update() -> None:
    answer = decode(frame(1, OK_UPDATE))
    assert answer.results == [Ok(2, 0, 0, "Rows matched: 3  Changed: 2  Warnings: 0")]


# ------------------------------------------------------------------- prepared statements

DOUBLE = packets.build_column_definition(
    ColumnDefinition(b"def", b"", b"", b"", b"ratio", b"", 63, 22, FieldType.DOUBLE, 0, 31)
)
DATE = column(b"born", FieldType.DATE)
BINARY_COLS = [column(b"id", FieldType.LONGLONG), column(b"name"), DATE, DOUBLE]
BINARY_ROWS = [
    [(5).to_bytes(8, "little"), b"\x03abc", bytes.fromhex("04 e807 02 1d"), struct.pack("<d", 0.5)],
    [(-6).to_bytes(8, "little", signed=True), None, None, struct.pack("<d", 1e20)],
]
BINARY_TEXT = [["5", "abc", "2024-02-29", "0.5"], ["-6", None, None, "1e20"]]


@EOF_MODES
def test_execute_with_binary_rows_as_text(deprecate_eof: bool) -> None:
    data = (
        Reply(1)
        .columns(BINARY_COLS, deprecate_eof=deprecate_eof)
        .binary_rows(BINARY_ROWS)
        .end(deprecate_eof=deprecate_eof)
        .data
    )
    answer = decode(data, Command.STMT_EXECUTE, deprecate_eof=deprecate_eof)
    assert answer.complete and answer.problem is None
    result = result_set(answer)
    assert [c.type for c in result.columns] == ["LONGLONG", "VAR_STRING", "DATE", "DOUBLE"]
    assert result.columns[3] == Column("ratio", "DOUBLE", "", "", "")
    assert result.rows == BINARY_TEXT


@EOF_MODES
def test_prepare(deprecate_eof: bool) -> None:
    reply = Reply(1).packet(_prepare_ok(7, columns=2, params=1))
    reply.packet(column(b"?", FieldType.LONGLONG))
    if not deprecate_eof:
        reply.eof()
    reply.packet(COLS[0]).packet(COLS[1])
    if not deprecate_eof:
        reply.eof()
    answer = decode(reply.data, Command.STMT_PREPARE, deprecate_eof=deprecate_eof)
    assert answer.complete and answer.problem is None
    assert answer.prepared == Prepared(
        7, 0, [Column("?", "LONGLONG", "app", "t", "?")], [ID_COLUMN, NAME_COLUMN]
    )


@EOF_MODES
def test_execute_opening_a_cursor_then_fetches_read_with_its_columns(deprecate_eof: bool) -> None:
    if deprecate_eof:
        opened = (
            Reply(1).columns(BINARY_COLS, deprecate_eof=True).end(deprecate_eof=True, status=CURSOR)
        )
    else:
        opened = Reply(1).columns(BINARY_COLS, deprecate_eof=False, status=CURSOR)
    execute = decode(opened.data, Command.STMT_EXECUTE, deprecate_eof=deprecate_eof)
    assert execute.complete and execute.problem is None
    cursor = result_set(execute)
    assert cursor.cursor and cursor.complete and cursor.rows == []
    fetched = Reply(1).binary_rows(BINARY_ROWS).end(deprecate_eof=deprecate_eof).data
    answer = decode_answer(
        fetched,
        command=Command.STMT_FETCH,
        deprecate_eof=deprecate_eof,
        truncated=False,
        columns=cursor.definitions,
    )
    assert answer.complete and result_set(answer).rows == BINARY_TEXT
    blind = decode(fetched, Command.STMT_FETCH, deprecate_eof=deprecate_eof)
    assert not blind.complete and blind.problem is not None and "columns=" in blind.problem


# ----------------------------------------------------------------- the other commands


@EOF_MODES
def test_field_list(deprecate_eof: bool) -> None:
    reply = Reply(1).packet(COLS[0] + b"\xfb").packet(COLS[1] + b"\xfb")  # with default values
    reply.end(deprecate_eof=deprecate_eof)
    answer = decode(reply.data, Command.FIELD_LIST, deprecate_eof=deprecate_eof)
    assert answer.complete and result_set(answer).columns == [ID_COLUMN, NAME_COLUMN]


def test_statistics_ping_set_option_and_commands_without_an_answer() -> None:
    stats = decode(frame(1, b"Uptime: 5  Threads: 1"), Command.STATISTICS)
    assert stats.text == "Uptime: 5  Threads: 1" and stats.complete
    assert decode(Reply(1).ok().data, Command.PING).results == [Ok(0, 0, 0, "")]
    assert decode(Reply(1).eof(warnings=1).data, Command.SET_OPTION).results == [Ok(0, 0, 1, "")]
    closed = decode(b"", Command.STMT_CLOSE)
    assert closed.complete and closed.results == [] and closed.problem is None


def test_a_refusal_answers_any_command() -> None:
    err = frame(1, packets.build_err(1047, "sqlgate: unknown command"))
    for code in (Command.STMT_CLOSE, Command.CHANGE_USER, 0x1D, 0xEE, Command.QUERY):
        answer = decode(err, code)
        assert answer.complete and answer.error is not None and answer.error.code == 1047


def test_a_wrong_command_is_a_value_error() -> None:
    for code in (-1, 256):
        with pytest.raises(ValueError):
            decode(b"", code)


# -------------------------------------------------------------- cut, broken, trailing


@EOF_MODES
def test_a_capture_cut_mid_row_gives_the_whole_rows(deprecate_eof: bool) -> None:
    data = Reply(1).text_result(COLS, ROWS, deprecate_eof=deprecate_eof).data
    cut = data.index(b"\x01", data.index(b"\x03ada") + 4) + 1  # inside the second row
    answer = decode_answer(
        data[:cut], command=Command.QUERY, deprecate_eof=deprecate_eof, truncated=True
    )
    assert not answer.complete and answer.truncated
    assert answer.problem == (
        f"the recording stops after {cut} bytes ([recording] max_bytes or max_rows)"
    )
    result = result_set(answer)
    assert result.rows == ROWS_TEXT[:1] and not result.complete
    assert result.columns == [ID_COLUMN, NAME_COLUMN]
    early = decode(data[:cut], deprecate_eof=deprecate_eof)  # not said to be cut: it is short
    assert early.problem == f"the answer ends early, after {cut} bytes"


ANSWERS = [
    (Command.QUERY, True, Reply(1).text_result(COLS, ROWS, deprecate_eof=True).data),
    (Command.QUERY, False, Reply(1).text_result(COLS, ROWS, deprecate_eof=False).data),
    (
        Command.STMT_EXECUTE,
        True,
        Reply(1)
        .columns(BINARY_COLS, deprecate_eof=True)
        .binary_rows(BINARY_ROWS)
        .end(deprecate_eof=True)
        .data,
    ),
    (
        Command.QUERY,
        False,
        Reply(1)
        .ok(affected=1, status=MORE)
        .text_result(COLS, ROWS, deprecate_eof=False, status=MORE)
        .err(1317, "interrupted")
        .data,
    ),
]


@pytest.mark.parametrize("which", range(len(ANSWERS)))
def test_every_prefix_gives_a_prefix_of_the_rows(which: int) -> None:
    command, deprecate_eof, data = ANSWERS[which]
    whole = decode(data, command, deprecate_eof=deprecate_eof)
    assert whole.complete and whole.problem is None
    rows = [r for s in whole.result_sets for r in s.rows]
    for cut in range(len(data)):
        part = decode_answer(
            data[:cut], command=command, deprecate_eof=deprecate_eof, truncated=True
        )
        assert not part.complete and part.problem is not None
        got = [r for s in part.result_sets for r in s.rows]
        assert got == rows[: len(got)]


@pytest.mark.parametrize("which", range(len(ANSWERS)))
def test_bytes_after_the_end_are_named(which: int) -> None:
    command, deprecate_eof, data = ANSWERS[which]
    answer = decode(data + Reply(9).ok().data + b"\x05\x00", command, deprecate_eof=deprecate_eof)
    assert answer.complete
    assert answer.problem == f"{len(Reply(9).ok().data) + 2} bytes after the end of the answer"


def test_the_wrong_eof_mode_is_a_problem_not_an_exception() -> None:
    data = Reply(1).text_result(COLS, ROWS, deprecate_eof=False).data
    answer = decode(data, deprecate_eof=True)
    assert not answer.complete and answer.problem is not None
    assert result_set(answer).columns == [ID_COLUMN, NAME_COLUMN]


_SEEDS = [data for _, _, data in ANSWERS] + [
    Reply(1).packet(_prepare_ok(7, columns=1, params=1)).packet(COLS[0]).packet(COLS[1]).data,
    frame(1, b"\xfe" + b"\x00" * 8),
]


@settings(max_examples=1000, deadline=None)
@given(
    data=mutated(_SEEDS),
    command=st.sampled_from([*Command, 0xEE]),
    deprecate_eof=st.booleans(),
    truncated=st.booleans(),
    with_columns=st.booleans(),
)
def test_fuzz_only_an_answer_comes_out(
    data: bytes, command: int, deprecate_eof: bool, truncated: bool, with_columns: bool
) -> None:
    columns = [packets.parse_column_definition(c) for c in BINARY_COLS] if with_columns else None
    answer = decode_answer(
        data, command=command, deprecate_eof=deprecate_eof, truncated=truncated, columns=columns
    )
    assert answer.complete or answer.problem is not None


# ---------------------------------------------------------------------------- row cap


@EOF_MODES
def test_cut_rows_keeps_the_first_rows_of_the_answer(deprecate_eof: bool) -> None:
    reply = Reply(1).text_result(COLS, ROWS, deprecate_eof=deprecate_eof, status=MORE)
    reply.text_result([column(b"n")], [[b"x"], [b"y"]], deprecate_eof=deprecate_eof)
    data = reply.data
    two = cut_rows(data, 2, command=Command.QUERY, deprecate_eof=deprecate_eof)
    assert two is not None and data.startswith(two) and len(two) < len(data)
    answer = decode_answer(two, command=Command.QUERY, deprecate_eof=deprecate_eof, truncated=True)
    assert result_set(answer).rows == ROWS_TEXT[:2] and not result_set(answer).complete
    four = cut_rows(data, 4, command=Command.QUERY, deprecate_eof=deprecate_eof)
    assert four is not None
    answer = decode_answer(four, command=Command.QUERY, deprecate_eof=deprecate_eof, truncated=True)
    assert result_set(answer, 0).rows == ROWS_TEXT and result_set(answer, 1).rows == [["x"]]
    assert cut_rows(data, 5, command=Command.QUERY, deprecate_eof=deprecate_eof) is None


# ------------------------------------------------------------- results character set


def test_names_and_messages_are_read_in_the_results_character_set() -> None:
    """A column's name and an error message come in the session's character_set_results:
    a cp1251 name and message were read as UTF-8 (``\\xf6\\xe5\\xed\\xe0``)."""
    price = "\u0446\u0435\u043d\u0430".encode("cp1251")
    data = (
        frame(1, b"\x01")
        + frame(2, column(price, FieldType.LONGLONG))
        + frame(3, b"\x015")
        + frame(4, b"\xfe\x00\x00\x02\x00\x00\x00")
    )
    answer = decode_answer(
        data, command=Command.QUERY, deprecate_eof=True, truncated=False, names="cp1251"
    )
    assert [c.name for c in answer.result_sets[0].columns] == ["\u0446\u0435\u043d\u0430"]
    error = frame(1, b"\xff\x2a\x04#42S02Table 'app." + price + b"' doesn't exist")
    for names, shown in [
        ("cp1251", "\u0446\u0435\u043d\u0430"),
        ("latin1", "\u00f6\u00e5\u00ed\u00e0"),  # MariaDB's latin1 is Windows-1252
        ("greek", "\\xf6\\xe5\\xed\\xe0"),  # no codec agrees with the server's: escaped
        (None, "\\xf6\\xe5\\xed\\xe0"),  # not known (an older recording): UTF-8
        ("null", "\\xf6\\xe5\\xed\\xe0"),  # NULL and binary send them as stored, UTF-8
    ]:
        answer = decode_answer(
            error, command=Command.QUERY, deprecate_eof=True, truncated=False, names=names
        )
        assert answer.error == Error(1066, "42S02", f"Table 'app.{shown}' doesn't exist")
