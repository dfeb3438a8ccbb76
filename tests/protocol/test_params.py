"""The values of COM_STMT_EXECUTE read byte for byte for the ledger (appliance.mysql.params):
types given or kept from the statement's last execute, NULLs, long data, every value
type, and blocks that cannot be read."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.mysql.constants import Command, FieldType
from appliance.mysql.errors import RemoteProtocolError
from appliance.mysql.params import (
    MAX_PARAMS,
    MAX_VALUE,
    ExecuteParams,
    literal_text,
    read_params,
)


def execute(statement_id: int, block: bytes) -> bytes:
    return bytes([Command.STMT_EXECUTE]) + struct.pack("<IBI", statement_id, 0, 1) + block


def lenenc(value: bytes) -> bytes:
    assert len(value) < 251
    return bytes([len(value)]) + value


def types(*codes: int, unsigned: int = -1) -> bytes:
    return b"".join(bytes([c, 0x80 if i == unsigned else 0]) for i, c in enumerate(codes))


LONGLONG, VAR_STRING, DOUBLE = int(FieldType.LONGLONG), int(FieldType.VAR_STRING), 5
# DELETE FROM orders WHERE id = ? AND note = ?  with (42, 'O''Hara')
TWO = b"\x00" + b"\x01" + types(LONGLONG, VAR_STRING) + struct.pack("<q", 42) + lenenc(b"O'Hara")


def test_an_execute_gives_its_values_as_literals() -> None:
    reader = ExecuteParams()
    assert reader.fields(execute(7, TWO), 2) == {"params": ["42", "'O''Hara'"]}


def test_a_later_execute_without_types_is_read_with_the_last_ones() -> None:
    reader = ExecuteParams()
    reader.fields(execute(7, TWO), 2)
    again = b"\x02" + b"\x00" + struct.pack("<q", 43)  # the second NULL, no types
    assert reader.fields(execute(7, again), 2) == {"params": ["43", "NULL"]}
    # another statement has no types known: its block is given as it is
    assert reader.fields(execute(8, again), 2) == {
        "params_error": "an execute without types, and none known for its statement",
        "params_hex": again.hex(),
    }
    reader.note(bytes([Command.STMT_CLOSE]) + struct.pack("<I", 7))  # forgets them
    assert "params_error" in reader.fields(execute(7, again), 2)


def test_the_types_of_a_block_not_read_are_kept_as_the_server_keeps_them() -> None:
    """The types an execute sent were kept only when its whole block could be read. The
    server keeps them anyway (it runs a block with bytes after its last value): a
    VAR_STRING execute with a byte too many, then one without types binding 'abcdefg',
    was recorded with the LONGLONG of the execute before, as 7450754115369591047."""
    reader = ExecuteParams()
    first = b"\x00\x01" + types(LONGLONG) + struct.pack("<q", 5)
    assert reader.fields(execute(7, first), 1) == {"params": ["5"]}
    trailing = b"\x00\x01" + types(VAR_STRING) + lenenc(b"hello") + b"\x00"
    assert "params_error" in reader.fields(execute(7, trailing), 1)
    again = b"\x00\x00" + lenenc(b"abcdefg")
    assert reader.fields(execute(7, again), 1) == {"params": ["'abcdefg'"]}


def test_a_parameter_sent_as_long_data_has_no_value_in_the_block() -> None:
    reader = ExecuteParams()
    reader.note(bytes([Command.STMT_SEND_LONG_DATA]) + struct.pack("<IH", 7, 1) + b"chunk")
    block = b"\x00" + b"\x01" + types(LONGLONG, VAR_STRING) + struct.pack("<q", 1)
    assert reader.fields(execute(7, block), 2, 1) == {"params": ["1", "(long data)"]}
    reader.answered(1, None)  # it ran: the long data went with it
    assert reader.fields(execute(7, TWO), 2, 2) == {"params": ["42", "'O''Hara'"]}
    reader.note(bytes([Command.STMT_SEND_LONG_DATA]) + struct.pack("<IH", 7, 1) + b"chunk")
    reader.note(bytes([Command.STMT_RESET]) + struct.pack("<I", 7))  # drops the long data
    assert reader.fields(execute(7, TWO), 2, 3) == {"params": ["42", "'O''Hara'"]}


LONG_DATA_1 = bytes([Command.STMT_SEND_LONG_DATA]) + struct.pack("<IH", 7, 1) + b"chunk"
# the first value, the second sent as long data
ONE_AND_LONG = b"\x00" + b"\x01" + types(LONGLONG, VAR_STRING) + struct.pack("<q", 1)
KEPT = (
    "long data of parameter 1 may still be bound on the server (an execute before this "
    "one did not run), so the values are not read"
)


def test_long_data_an_execute_that_did_not_run_left_bound_is_not_read_past() -> None:
    """An execute the server refuses before it binds its values (types it cannot read)
    or that the gateway refuses leaves the statement's long data bound there; the next
    execute's values were read without it, one value off from what ran."""
    reader = ExecuteParams()
    reader.note(LONG_DATA_1)
    assert reader.fields(execute(7, ONE_AND_LONG), 2, 1) == {"params": ["1", "(long data)"]}
    reader.answered(1, 1835)  # did not run: the chunk is still bound
    assert reader.fields(execute(7, TWO), 2, 2) == {
        "params_error": KEPT,
        "params_hex": TWO.hex(),
    }
    reader.answered(2, None)  # that one ran: the server dropped the chunk
    assert reader.fields(execute(7, TWO), 2, 3) == {"params": ["42", "'O''Hara'"]}
    # the client sends the long data again: read as it is, whatever the server kept
    reader.note(LONG_DATA_1)
    reader.fields(execute(7, ONE_AND_LONG), 2, 4)
    reader.answered(4, 1210)
    reader.note(LONG_DATA_1)
    assert reader.fields(execute(7, ONE_AND_LONG), 2, 5) == {"params": ["1", "(long data)"]}
    reader.answered(5, 1210)
    reader.note(bytes([Command.STMT_RESET]) + struct.pack("<I", 7))  # drops it, there too
    assert reader.fields(execute(7, TWO), 2, 6) == {"params": ["42", "'O''Hara'"]}


def test_an_execute_sent_before_the_answer_of_one_with_long_data_is_not_read() -> None:
    """Pipelined behind an execute with long data, an execute may find the chunk dropped
    (the first ran) or still bound (it did not): its values are not read."""
    reader = ExecuteParams()
    reader.note(LONG_DATA_1)
    reader.fields(execute(7, ONE_AND_LONG), 2, 1)
    assert reader.fields(execute(7, TWO), 2, 2)["params_error"] == KEPT
    reader.answered(1, None)
    reader.answered(2, None)
    assert reader.fields(execute(7, TWO), 2, 3) == {"params": ["42", "'O''Hara'"]}
    # a reset sent behind an execute that then fails drops the chunk all the same
    reader.note(LONG_DATA_1)
    reader.fields(execute(7, ONE_AND_LONG), 2, 4)
    reader.note(bytes([Command.STMT_RESET]) + struct.pack("<I", 7))
    reader.answered(4, 1835)
    assert reader.fields(execute(7, TWO), 2, 5) == {"params": ["42", "'O''Hara'"]}


def test_an_execute_that_never_reached_the_server_changes_nothing_it_keeps() -> None:
    """An execute the gateway refused left its types and long data in the reader: the
    next execute without types was read with the refused one's VAR_STRING, and recorded
    as '4000000', while the server, which kept the LONGLONG before, bound another number."""
    reader = ExecuteParams()
    first = b"\x00\x01" + types(LONGLONG) + struct.pack("<q", 5)
    assert reader.fields(execute(7, first), 1, cmd_id=1) == {"params": ["5"]}
    reader.answered(1, None)
    refused = b"\x00\x01" + types(VAR_STRING) + lenenc(b"abcdefg")
    assert reader.fields(execute(7, refused), 1, cmd_id=2) == {"params": ["'abcdefg'"]}
    reader.answered(2, 1227, sent=False)
    again = b"\x00\x00" + b"\x074000000"  # 8 bytes: a LONGLONG, or a 7-byte string
    number = str(int.from_bytes(b"\x074000000", "little", signed=True))
    assert reader.fields(execute(7, again), 1, cmd_id=3) == {"params": [number]}
    # long data an unsent execute would have taken is still the server's to use
    reader.note(bytes([Command.STMT_SEND_LONG_DATA]) + struct.pack("<IH", 7, 0) + b"chunk")
    long_block = b"\x00\x00"
    assert reader.fields(execute(7, long_block), 1, cmd_id=4) == {"params": ["(long data)"]}
    reader.answered(4, 1227, sent=False)
    assert reader.fields(execute(7, long_block), 1, cmd_id=5) == {"params": ["(long data)"]}
    reader.answered(5, None)
    assert "params_error" in reader.fields(execute(7, long_block), 1, cmd_id=6)


def test_an_unsent_execute_does_not_undo_what_came_after_it() -> None:
    """Pipelined: an execute read after the refused one sent its own types, or the
    statement was closed: those stand."""
    reader = ExecuteParams()
    reader.fields(execute(7, b"\x00\x01" + types(LONGLONG) + struct.pack("<q", 5)), 1, 1)
    reader.fields(execute(7, b"\x00\x01" + types(VAR_STRING) + lenenc(b"x")), 1, 2)
    reader.fields(execute(7, b"\x00\x01" + types(DOUBLE) + struct.pack("<d", 1.5)), 1, 3)
    reader.answered(2, 1227, sent=False)
    assert reader.fields(execute(7, b"\x00\x00" + struct.pack("<d", 2.5)), 1, 4) == {
        "params": ["2.5"]
    }
    reader.note(bytes([Command.STMT_CLOSE]) + struct.pack("<I", 7))
    reader.answered(3, 1227, sent=False)  # closed since: nothing of it comes back
    assert "params_error" in reader.fields(execute(7, b"\x00\x00" + b"\x00" * 8), 1, 5)


@pytest.mark.parametrize(
    ("code", "value", "unsigned", "literal"),
    [
        (FieldType.TINY, b"\xff", False, "-1"),
        (FieldType.TINY, b"\xff", True, "255"),
        (FieldType.SHORT, struct.pack("<h", -300), False, "-300"),
        (FieldType.LONG, struct.pack("<i", 70000), False, "70000"),
        (FieldType.LONGLONG, struct.pack("<Q", 2**64 - 1), True, "18446744073709551615"),
        (FieldType.DOUBLE, struct.pack("<d", 1.5), False, "1.5"),
        (FieldType.FLOAT, struct.pack("<f", 0.25), False, "0.25"),
        (FieldType.NEWDECIMAL, lenenc(b"12.50"), False, "'12.50'"),
        (FieldType.DATETIME, b"\x07" + struct.pack("<HBBBBB", 2026, 11, 29, 10, 0, 5), False,
         "'2026-11-29 10:00:05'"),
        (FieldType.DATE, b"\x04" + struct.pack("<HBB", 2026, 1, 2), False, "'2026-01-02'"),
        (FieldType.TIME, b"\x08" + struct.pack("<BIBBB", 1, 1, 2, 3, 4), False, "'-26:03:04'"),
        (FieldType.BLOB, lenenc(b"\xff\x00"), False, "x'ff00'"),
        (FieldType.VAR_STRING, lenenc(b"a\\b\nc'd"), False, "'a\\\\b\\nc''d'"),
        (FieldType.STRING, lenenc("straße".encode()), False, "'straße'"),
    ],
)  # fmt: skip
def test_each_type_is_read_as_the_server_reads_it(
    code: int, value: bytes, unsigned: bool, literal: str
) -> None:
    block = b"\x00\x01" + types(int(code), unsigned=0 if unsigned else -1) + value
    assert read_params(block, 1, None, set())[0] == [literal]


def test_a_long_value_is_given_by_its_size() -> None:
    value = b"x" * (MAX_VALUE + 1)
    block = b"\x00\x01" + types(VAR_STRING) + b"\xfc" + struct.pack("<H", len(value)) + value
    assert read_params(block, 1, None, set())[0] == [f"({len(value)} bytes)"]


def test_values_past_the_limit_are_only_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every value of an execute was made a literal, those past MAX_PARAMS too, which the
    record only counts: an execute of 65,535 DOUBLEs (660 KB) held the event loop, and
    every other session, 0.3 s."""
    import appliance.mysql.params as params

    made: list[bytes] = []
    real = params.binary_value_text

    def counted(column: object, raw: bytes) -> bytes:
        made.append(raw)
        return real(column, raw)  # type: ignore[arg-type]

    monkeypatch.setattr(params, "binary_value_text", counted)
    count = MAX_PARAMS + 100
    block = b"\x00" * ((count + 7) // 8) + b"\x01" + types(*[DOUBLE] * count)
    block += struct.pack("<d", 0.5) * count
    fields = ExecuteParams().fields(execute(1, block), count)
    assert fields == {"params": ["0.5"] * MAX_PARAMS, "params_more": 100}
    assert len(made) == MAX_PARAMS


def test_past_the_limit_the_parameters_are_counted() -> None:
    count = MAX_PARAMS + 3
    block = b"\xff" * ((count + 7) // 8) + b"\x01" + types(*[LONGLONG] * count)
    assert ExecuteParams().fields(execute(1, block), count) == {
        "params": ["NULL"] * MAX_PARAMS,
        "params_more": 3,
    }


@pytest.mark.parametrize(
    ("block", "count", "why"),
    [
        (TWO + b"\x00", 2, "1 bytes after the last parameter"),
        (TWO[:-1], 2, "binary row value runs past the end of the packet"),
        (b"\x00", 2, "the parameter block ends in its NULL bitmap"),
        (b"\x00\x01\x08", 1, "the parameter block ends in its types"),
        (b"\x00", 0, "1 bytes of parameters for a statement of none"),
    ],
)
def test_a_block_that_cannot_be_read_is_kept_as_bytes(block: bytes, count: int, why: str) -> None:
    assert ExecuteParams().fields(execute(1, block), count) == {
        "params_error": why,
        "params_hex": block.hex(),
    }


def test_no_count_known_keeps_the_block_as_bytes() -> None:
    assert ExecuteParams().fields(execute(1, TWO), None) == {
        "params_error": "the statement's parameter count is not known",
        "params_hex": TWO.hex(),
    }
    assert ExecuteParams().fields(execute(1, b""), 0) == {"params": []}


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=20))
def test_any_block_gives_values_or_its_bytes(block: bytes, count: int) -> None:
    """Only the protocol error type may escape the reader; fields() catches it."""
    try:
        values, _ = read_params(block, count, None, set())
    except RemoteProtocolError:
        return
    assert len(values) == count


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_a_string_literal_gives_back_the_text_it_was_made_of(text: str) -> None:
    """The policy reads a value of the record again (a prepared write's pattern)."""
    block = b"\x00\x01" + types(FieldType.VAR_STRING) + lenenc(text.encode())
    (literal,), _ = read_params(block, 1, None, set())
    assert literal_text(literal) == text
