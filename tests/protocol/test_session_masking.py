"""Masking stories of the session core, told as transcripts (see ``playbook.py``).

The shell gives the session a ``Masker`` (``session.masker``); the backend's answers must
then reach the client with masked columns rewritten (definitions and values, text and
binary rows, cursor fetches, rows over 16 MiB), ERR messages scrubbed, and everything else
byte for byte. Expected bytes are written out with ``Reply`` and the masked definitions by
hand, never with the code under test.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.mysql import packets
from appliance.mysql.constants import MAX_PAYLOAD, Command, ErrorCode, FieldType
from appliance.mysql.masking import ColumnMask
from appliance.mysql.packets import ColumnDefinition
from appliance.mysql.relay import CommandCompleted, CommandReceived, Phase, Session
from appliance.mysql.wire import frame

from .playbook import (
    AUTOCOMMIT,
    Playbook,
    Reply,
    Step,
    allow,
    client,
    column,
    command,
    expect_client,
    expect_closed,
    expect_event,
    expect_server,
    query,
    refuse,
    server,
)
from .test_session import (
    COLS,
    CURSOR_EXISTS,
    LAST_ROW_SENT,
    MORE_RESULTS,
    ROWS,
    TWO_BIGINT_PARAMS,
    _assert_usable_or_closed,
    _chunks,
    _execute,
    _frames,
    _prepare_ok,
    _shell_answers,
    completed,
    is_err,
    mutated,
    ready,
    received,
)

# ------------------------------------------------------------------------ test doubles


@dataclass(frozen=True)
class Last4:
    label: str

    def __call__(self, value: bytes | None) -> bytes | None:
        return None if value is None else b"*" * max(len(value) - 4, 0) + value[-4:]


@dataclass(frozen=True)
class Redact:
    label: str

    def __call__(self, value: bytes | None) -> bytes | None:
        return None if value is None else b"****"


@dataclass(frozen=True)
class Same:
    label: str

    def __call__(self, value: bytes | None) -> bytes | None:
        return value


@dataclass(frozen=True)
class Longer:
    """Makes a value 20 bytes longer (to push a row over 16 MiB)."""

    label: str

    def __call__(self, value: bytes | None) -> bytes | None:
        return None if value is None else value + b"!" * 20


SECRET = b"4111111111111111"


class ByName:
    """Masks columns by their origin name; records what it was asked."""

    def __init__(self, masks: dict[bytes, ColumnMask] | None = None) -> None:
        self.masks = masks or {}
        self.plans: list[list[bytes]] = []
        self.unsure: list[bool] = []  # per plan: were its origins said to be unsure
        self.statements: list[bytes | None] = []  # per plan: the SQL text it was given
        self.scrubbed: list[bytes] = []

    def plan(
        self,
        columns: Sequence[ColumnDefinition],
        *,
        origins_unsure: bool = False,
        statement: bytes | None = None,
    ) -> Sequence[ColumnMask | None] | None:
        self.plans.append([c.org_name for c in columns])
        self.unsure.append(origins_unsure)
        self.statements.append(statement)
        planned = [self.masks.get(c.org_name) for c in columns]
        return planned if any(m is not None for m in planned) else None

    def scrub(self, message: bytes, code: int | None = None) -> bytes:
        self.scrubbed.append(message)
        return message.replace(SECRET, b"<masked>")


def card_masker() -> ByName:
    return ByName({b"card": Last4("app.t.card"), b"born": Redact("app.t.born")})


def masked_ready(
    masker: ByName, *, deprecate_eof: bool = True, max_payload: int | None = None
) -> Playbook:
    pb = ready(deprecate_eof=deprecate_eof)
    pb.session.masker = masker  # as the shell does once the client is known
    if max_payload is not None:  # a smaller bound than the login announced (64 MiB)
        pb.session.settings = dataclasses.replace(pb.session.settings, max_payload=max_payload)
    return pb


def done(cmd_id: int, *, rows: int = 0, error: int | None = None, **masked: int) -> Step:
    """CommandCompleted with its masking counts (``app_t_card=2`` for ``app.t.card``)."""
    return expect_event(
        CommandCompleted,
        cmd=lambda c: c.id == cmd_id,
        rows=rows,
        error=error,
        masked={k.replace("_", "."): v for k, v in masked.items()},
    )


# What the client must get in place of a masked column's definition: written out by hand.
def masked_column(name: bytes, *, charset: int = 45, length: int = 256) -> bytes:
    return packets.build_column_definition(
        ColumnDefinition(
            catalog=b"def",
            schema=b"app",
            table=b"t",
            org_table=b"t",
            name=name,
            org_name=name,
            charset=charset,
            length=length,
            type=0xFD,  # VAR_STRING
            flags=0,
            decimals=0,
        )
    )


ID = column(b"id", FieldType.LONGLONG)
CARD = column(b"card")  # VAR_STRING, utf8mb4, length 255
BORN = column(b"born", FieldType.DATE)  # charset 63, length 255
CARD_MASKED = masked_column(b"card")
BORN_MASKED = masked_column(b"born")
Rows = list[list[bytes | None]]
CARD_ROWS: Rows = [[b"1", SECRET], [b"2", None], [b"3", b"5500000000000004"]]
CARD_ROWS_MASKED: Rows = [[b"1", b"************1111"], [b"2", None], [b"3", b"************0004"]]

EOF_MODES = pytest.mark.parametrize(
    "deprecate_eof", [True, False], ids=["deprecate-eof", "classic-eof"]
)


def _ask(pb: Playbook, cmd_id: int, raw: bytes) -> Playbook:
    return pb >> client(raw) << received(cmd_id, raw) >> allow(cmd_id) << expect_server(raw)


# ------------------------------------------------------------------- text result sets


@EOF_MODES
@pytest.mark.parametrize("chunk", [None, 1, 5], ids=["whole", "bytewise", "5-byte-chunks"])
def test_text_result_with_one_masked_column(deprecate_eof: bool, chunk: int | None) -> None:
    masker = card_masker()
    q = query(b"SELECT id, card FROM t")
    result = Reply(1).text_result([ID, CARD], CARD_ROWS, deprecate_eof=deprecate_eof).data
    masked = (
        Reply(1).text_result([ID, CARD_MASKED], CARD_ROWS_MASKED, deprecate_eof=deprecate_eof).data
    )
    assert (
        _ask(masked_ready(masker, deprecate_eof=deprecate_eof), 1, q)
        >> server(result, chunk=chunk)
        << expect_client(masked)
        << done(1, rows=3, app_t_card=2)
    )
    assert masker.plans == [[b"id", b"card"]]  # once per result set


@EOF_MODES
def test_multi_result_answer_masks_only_the_set_that_needs_it(deprecate_eof: bool) -> None:
    masker = card_masker()
    q = query(b"SELECT id, name FROM t; SELECT id, card FROM t")
    more = AUTOCOMMIT | MORE_RESULTS
    first = Reply(1).text_result(COLS, ROWS, deprecate_eof=deprecate_eof, status=more)
    untouched = first.data
    second = Reply(first.seq).text_result([ID, CARD], CARD_ROWS, deprecate_eof=deprecate_eof)
    masked = Reply(first.seq).text_result(
        [ID, CARD_MASKED], CARD_ROWS_MASKED, deprecate_eof=deprecate_eof
    )
    assert (
        _ask(masked_ready(masker, deprecate_eof=deprecate_eof), 1, q)
        >> server(untouched + second.data)
        << expect_client(untouched + masked.data)
        << done(1, rows=6, app_t_card=2)
    )
    assert masker.plans == [[b"id", b"name"], [b"id", b"card"]]
    # the text goes with each plan: a view it names may hide under a table's name
    assert masker.statements == [b"SELECT id, name FROM t; SELECT id, card FROM t"] * 2


@EOF_MODES
def test_a_masker_that_plans_nothing_leaves_every_byte_as_it_was(deprecate_eof: bool) -> None:
    masker = ByName()  # masks nothing
    q = query(b"SELECT id, card FROM t")
    big = [b"1", b"x" * (MAX_PAYLOAD + 1000)]  # streams through without being held
    result = (
        Reply(1)
        .columns([ID, CARD], deprecate_eof=deprecate_eof)
        .text_rows([*CARD_ROWS, big])
        .end(deprecate_eof=deprecate_eof)
        .data
    )
    execute = _execute(7)
    binary = (
        Reply(1)
        .columns([ID, CARD], deprecate_eof=deprecate_eof)
        .binary_rows([[(1).to_bytes(8, "little"), b"\x10" + SECRET]])
        .end(deprecate_eof=deprecate_eof)
        .data
    )
    pb = _ask(masked_ready(masker, deprecate_eof=deprecate_eof), 1, q)
    assert pb >> server(result, chunk=1 << 20) << expect_client(result) << done(1, rows=4)
    assert _ask(pb, 2, execute) >> server(binary) << expect_client(binary) << done(2, rows=1)
    assert masker.plans == [[b"id", b"card"], [b"id", b"card"]]


def test_a_mask_that_changes_nothing_leaves_the_rows_as_they_were() -> None:
    masker = ByName({b"card": Same("app.t.card")})
    q = query(b"SELECT id, card FROM t")
    result = Reply(1).text_result([ID, CARD], CARD_ROWS, deprecate_eof=True)
    masked = Reply(1).text_result([ID, CARD_MASKED], CARD_ROWS, deprecate_eof=True)
    assert (
        _ask(masked_ready(masker), 1, q)
        >> server(result.data)
        << expect_client(masked.data)
        << done(1, rows=3)  # no value changed: nothing counted
    )


@EOF_MODES
@pytest.mark.parametrize("big_first", [False, True], ids=["big-second-value", "big-first-value"])
def test_row_over_16_mib_whose_masked_value_shrinks_it_renumbers_the_rest_of_the_answer(
    deprecate_eof: bool, big_first: bool
) -> None:
    masker = ByName({b"doc": Redact("app.t.doc")})
    q = query(b"SELECT id, doc FROM t; SELECT id, name FROM t")
    doc = column(b"doc", FieldType.BLOB)
    huge = b"x" * (MAX_PAYLOAD + 1000)  # two frames (first: the row starts 0xFE)

    def row(key: bytes, value: bytes) -> list[bytes | None]:
        return [value, key] if big_first else [key, value]

    defs = [doc, ID] if big_first else [ID, doc]
    masked_defs = [masked_column(b"doc", charset=63), ID]
    more = AUTOCOMMIT | MORE_RESULTS
    answer = (
        Reply(1)
        .columns(defs, deprecate_eof=deprecate_eof)
        .text_rows([row(b"0", b"small"), row(b"1", huge), row(b"2", b"small")])
        .end(deprecate_eof=deprecate_eof, status=more)
        .text_result(COLS, ROWS, deprecate_eof=deprecate_eof)  # not masked, but renumbered
    )
    # the client's copy: the big row is one frame now, and every later frame one id lower
    expected = (
        Reply(1)
        .columns(masked_defs if big_first else masked_defs[::-1], deprecate_eof=deprecate_eof)
        .text_rows([row(b"0", b"****"), row(b"1", b"****"), row(b"2", b"****")])
        .end(deprecate_eof=deprecate_eof, status=more)
        .text_result(COLS, ROWS, deprecate_eof=deprecate_eof)
    )
    assert answer.seq == (expected.seq + 1) & 0xFF
    ping = command(Command.PING)
    pong = Reply(1).ok().data
    pb = _ask(masked_ready(masker, deprecate_eof=deprecate_eof), 1, q)
    assert (
        pb
        >> server(answer.data, chunk=1 << 20)
        << expect_client(expected.data)
        << done(1, rows=6, app_t_doc=3)
    )
    # the next command starts afresh: sequence ids from 1 again, nothing shifted
    assert _ask(pb, 2, ping) >> server(pong) << expect_client(pong) << completed(2)


@EOF_MODES
def test_row_that_grows_past_16_mib_takes_one_more_frame_and_shifts_the_rest(
    deprecate_eof: bool,
) -> None:
    masker = ByName({b"doc": Longer("app.t.doc")})
    q = query(b"SELECT id, doc FROM t")
    doc = column(b"doc", FieldType.BLOB)
    value = b"y" * (MAX_PAYLOAD - 10)  # a row 4 bytes under 16 MiB: one frame
    answer = (
        Reply(1)
        .columns([ID, doc], deprecate_eof=deprecate_eof)
        .text_rows([[b"1", value], [b"2", b"z"]])
        .end(deprecate_eof=deprecate_eof)
    )
    expected = (
        Reply(1)
        .columns([ID, masked_column(b"doc", charset=63)], deprecate_eof=deprecate_eof)
        .text_rows([[b"1", value + b"!" * 20], [b"2", b"z" + b"!" * 20]])
        .end(deprecate_eof=deprecate_eof)
    )
    assert expected.seq == (answer.seq + 1) & 0xFF
    assert (
        _ask(masked_ready(masker, deprecate_eof=deprecate_eof), 1, q)
        >> server(answer.data, chunk=1 << 20)
        << expect_client(expected.data)
        << done(1, rows=2, app_t_doc=2)
    )


def test_a_masked_row_larger_than_max_payload_closes_the_session_unsent() -> None:
    masker = card_masker()
    q = query(b"SELECT id, card FROM t")
    head = Reply(1).columns([ID, CARD], deprecate_eof=True)
    seq = head.seq
    row = Reply(seq).text_rows([[b"1", b"4" * (2 << 20)]]).data
    pb = _ask(masked_ready(masker, max_payload=1 << 20), 1, q)
    assert (
        pb
        >> server(head.data)
        << expect_client(Reply(1).columns([ID, CARD_MASKED], deprecate_eof=True).data)
        >> server(row[: 1 << 19])  # its header announces too much: refused at once
        << expect_client(is_err(seq, ErrorCode.UNKNOWN, "exceeds what the gateway masks"))
        << expect_event(CommandCompleted, error=ErrorCode.SERVER_LOST)
        << expect_closed("target protocol error")
    )


def test_unmasked_rows_larger_than_max_payload_still_stream() -> None:
    q = query(b"SELECT id, card FROM t")
    result = Reply(1).text_result([ID, CARD], [[b"1", b"4" * (2 << 20)]], deprecate_eof=True)
    assert (
        _ask(masked_ready(ByName(), max_payload=1 << 20), 1, q)
        >> server(result.data)
        << expect_client(result.data)
        << done(1, rows=1)
    )


# --------------------------------------------------------------- prepared statements


def _prepare_answer(deprecate_eof: bool, defs: list[bytes]) -> Reply:
    reply = Reply(1).packet(_prepare_ok(7, columns=len(defs), params=1))
    reply.packet(column(b"?", FieldType.LONGLONG))
    if not deprecate_eof:
        reply.eof()
    for d in defs:
        reply.packet(d)
    if not deprecate_eof:
        reply.eof()
    return reply


def _bin(id_: int, card: bytes | None, born: bytes | None) -> list[bytes | None]:
    return [
        id_.to_bytes(8, "little"),
        None if card is None else packets.write_lenenc_bytes(card),
        born,
    ]


BIN_ROWS = [_bin(1, SECRET, bytes.fromhex("04 c607 05 11")), _bin(2, None, None)]
BIN_ROWS_MASKED = [
    _bin(1, b"************1111", packets.write_lenenc_bytes(b"****")),  # a date, now a string
    _bin(2, None, None),
]


@EOF_MODES
def test_prepare_then_execute_masks_definitions_and_binary_rows(deprecate_eof: bool) -> None:
    masker = card_masker()
    prep = command(Command.STMT_PREPARE, b"SELECT id, card, born FROM t WHERE id > ?")
    prepared = _prepare_answer(deprecate_eof, [ID, CARD, BORN]).data
    prepared_masked = _prepare_answer(deprecate_eof, [ID, CARD_MASKED, BORN_MASKED]).data
    execute = _execute(7, params=TWO_BIGINT_PARAMS)
    rows = (
        Reply(1)
        .columns([ID, CARD, BORN], deprecate_eof=deprecate_eof)
        .binary_rows(BIN_ROWS)
        .end(deprecate_eof=deprecate_eof)
        .data
    )
    rows_masked = (
        Reply(1)
        .columns([ID, CARD_MASKED, BORN_MASKED], deprecate_eof=deprecate_eof)
        .binary_rows(BIN_ROWS_MASKED)
        .end(deprecate_eof=deprecate_eof)
        .data
    )
    pb = _ask(masked_ready(masker, deprecate_eof=deprecate_eof), 1, prep)
    assert pb >> server(prepared) << expect_client(prepared_masked) << done(1)
    assert (
        _ask(pb, 2, execute)
        >> server(rows, chunk=3)
        << expect_client(rows_masked)
        << done(2, rows=2, app_t_card=1, app_t_born=1)
    )
    assert masker.plans == [[b"id", b"card", b"born"]] * 2
    assert masker.statements == [b"SELECT id, card, born FROM t WHERE id > ?"] * 2


def _cursor_story(masker: ByName) -> tuple[Playbook, bytes, bytes, bytes]:
    """Prepare, execute with a cursor, then fetch twice; returns the playbook and the
    fetch bytes."""
    prep = command(Command.STMT_PREPARE, b"SELECT id, card, born FROM t WHERE id > ?")
    prepared = _prepare_answer(False, [ID, CARD, BORN]).data
    prepared_masked = _prepare_answer(False, [ID, CARD_MASKED, BORN_MASKED]).data
    execute = _execute(7, flags=1)  # CURSOR_TYPE_READ_ONLY
    opened = Reply(1).columns(
        [ID, CARD, BORN], deprecate_eof=False, status=AUTOCOMMIT | CURSOR_EXISTS
    )
    opened_masked = Reply(1).columns(
        [ID, CARD_MASKED, BORN_MASKED], deprecate_eof=False, status=AUTOCOMMIT | CURSOR_EXISTS
    )
    fetch = command(Command.STMT_FETCH, struct.pack("<II", 7, 2))
    batch = Reply(1).binary_rows(BIN_ROWS).eof(status=AUTOCOMMIT | CURSOR_EXISTS).data
    batch_masked = Reply(1).binary_rows(BIN_ROWS_MASKED).eof(status=AUTOCOMMIT | CURSOR_EXISTS)
    last_status = AUTOCOMMIT | CURSOR_EXISTS | LAST_ROW_SENT
    last = Reply(1).binary_rows(BIN_ROWS[:1]).eof(status=last_status).data
    last_masked = Reply(1).binary_rows(BIN_ROWS_MASKED[:1]).eof(status=last_status).data
    pb = masked_ready(masker, deprecate_eof=False)
    assert _ask(pb, 1, prep) >> server(prepared) << expect_client(prepared_masked) << done(1)
    assert (
        _ask(pb, 2, execute)
        >> server(opened.data)
        << expect_client(opened_masked.data)
        << done(2)  # the cursor is open; its plan is kept for the fetches
    )
    assert (
        _ask(pb, 3, fetch)
        >> server(batch)
        << expect_client(batch_masked.data)
        << done(3, rows=2, app_t_card=1, app_t_born=1)
    )
    assert (
        _ask(pb, 4, fetch)
        >> server(last)
        << expect_client(last_masked)
        << done(4, rows=1, app_t_card=1, app_t_born=1)
    )
    return pb, fetch, batch, batch_masked.data


def test_cursor_fetches_are_masked_with_the_plan_made_at_execute() -> None:
    masker = card_masker()
    _cursor_story(masker)
    # planned at the prepare and once at the execute, not at the fetches
    assert masker.plans == [[b"id", b"card", b"born"]] * 2
    assert masker.unsure == [False, False]


def test_a_cursor_opened_by_the_last_prepared_id_is_masked_at_each_fetch() -> None:
    """COM_STMT_PREPARE and a cursor's COM_STMT_EXECUTE with id 0xFFFFFFFF (MariaDB's
    "the statement prepared last") in one write, then FETCH by the id the prepare gave:
    the cursor's plan is kept under that id, so the fetched rows are masked."""
    masker = card_masker()
    prep = command(Command.STMT_PREPARE, b"SELECT id, card, born FROM t WHERE id > ?")
    prepared = _prepare_answer(False, [ID, CARD, BORN]).data
    prepared_masked = _prepare_answer(False, [ID, CARD_MASKED, BORN_MASKED]).data
    last = _execute(0xFFFFFFFF, flags=1)  # CURSOR_TYPE_READ_ONLY
    status = AUTOCOMMIT | CURSOR_EXISTS
    opened = Reply(1).columns([ID, CARD, BORN], deprecate_eof=False, status=status)
    opened_masked = Reply(1).columns(
        [ID, CARD_MASKED, BORN_MASKED], deprecate_eof=False, status=status
    )
    fetch = command(Command.STMT_FETCH, struct.pack("<II", 7, 2))
    batch = Reply(1).binary_rows(BIN_ROWS).eof(status=status).data
    batch_masked = Reply(1).binary_rows(BIN_ROWS_MASKED).eof(status=status).data
    pb = masked_ready(masker, deprecate_eof=False)
    assert (
        pb
        >> client(prep + last)
        << received(1, prep)
        << expect_event(CommandReceived, cmd=lambda c: c.id == 2 and c.stands_for == 1)
        >> allow(1)
        << expect_server(prep)
        >> allow(2)
        >> server(prepared)
        << expect_client(prepared_masked)
        << done(1)
        << expect_server(_execute(7, flags=1))
        >> server(opened.data)
        << expect_client(opened_masked.data)
        << done(2)
    )
    assert (
        _ask(pb, 3, fetch)
        >> server(batch)
        << expect_client(batch_masked)
        << done(3, rows=2, app_t_card=1, app_t_born=1)
    )


def _aliased(name: bytes, org_name: bytes, *, masked: bool = False) -> bytes:
    """A column definition of app.t whose name is an alias of ``org_name`` (as the client
    gets it masked, with ``masked``)."""
    d = packets.parse_column_definition(CARD_MASKED if masked else column(org_name))
    return packets.build_column_definition(dataclasses.replace(d, name=name, org_name=org_name))


def test_an_aliased_column_of_a_cursor_is_masked_by_its_prepared_origin() -> None:
    """MariaDB sends the columns of a result set that opens a cursor with their alias as
    origin name (org_name ``c`` for ``card AS c``), where its PREPARE_OK sent ``card``:
    the plan was made from the alias, and the fetches came back in the clear."""
    masker = card_masker()
    prep = command(Command.STMT_PREPARE, b"SELECT id, card AS c FROM t WHERE id > ?")
    prepared = _prepare_answer(False, [ID, _aliased(b"c", b"card")]).data
    prepared_masked = _prepare_answer(False, [ID, _aliased(b"c", b"card", masked=True)]).data
    as_cursor = _aliased(b"c", b"c")  # what MariaDB sends with the cursor
    as_cursor_masked = masked_column(b"c")
    status = AUTOCOMMIT | CURSOR_EXISTS
    opened = Reply(1).columns([ID, as_cursor], deprecate_eof=False, status=status).data
    opened_masked = Reply(1).columns([ID, as_cursor_masked], deprecate_eof=False, status=status)
    rows = [[(1).to_bytes(8, "little"), packets.write_lenenc_bytes(SECRET)]]
    rows_masked = [[(1).to_bytes(8, "little"), packets.write_lenenc_bytes(b"************1111")]]
    last = AUTOCOMMIT | CURSOR_EXISTS | LAST_ROW_SENT
    fetch = command(Command.STMT_FETCH, struct.pack("<II", 7, 10))
    pb = masked_ready(masker, deprecate_eof=False)
    assert _ask(pb, 1, prep) >> server(prepared) << expect_client(prepared_masked) << done(1)
    assert (
        _ask(pb, 2, _execute(7, flags=1))
        >> server(opened)
        << expect_client(opened_masked.data)
        << done(2)
    )
    assert (
        _ask(pb, 3, fetch)
        >> server(Reply(1).binary_rows(rows).eof(status=last).data)
        << expect_client(Reply(1).binary_rows(rows_masked).eof(status=last).data)
        << done(3, rows=1, app_t_card=1)
    )
    assert masker.plans == [[b"id", b"card"], [b"id", b"card"]]  # the prepared origin
    assert masker.unsure == [False, False]
    # the prepare's plan and the execute's are given the prepared text
    assert masker.statements == [b"SELECT id, card AS c FROM t WHERE id > ?"] * 2


@pytest.mark.parametrize("prepared", [None, [ID, _aliased(b"x", b"card")]], ids=["none", "other"])
def test_a_cursor_whose_prepared_columns_are_not_known_is_planned_as_unsure(
    prepared: list[bytes] | None,
) -> None:
    """No PREPARE_OK seen for the statement, or one with other columns (the server
    prepared it again after its table changed): the origins may be aliases."""
    masker = card_masker()
    pb = masked_ready(masker, deprecate_eof=False)
    execute_id = 1
    if prepared is not None:
        prep = command(Command.STMT_PREPARE, b"SELECT card AS x FROM t WHERE id > ?")
        answer = _prepare_answer(False, prepared).data
        masked = _prepare_answer(False, [ID, _aliased(b"x", b"card", masked=True)]).data
        _ask(pb, 1, prep) >> server(answer) << expect_client(masked) << completed(1)
        execute_id = 2
    status = AUTOCOMMIT | CURSOR_EXISTS
    opened = Reply(1).columns([ID, _aliased(b"c", b"c")], deprecate_eof=False, status=status)
    _ask(pb, execute_id, _execute(7, flags=1)) >> server(opened.data)
    pb << expect_client(opened.data) << completed(execute_id)  # the double masks by org_name
    assert masker.plans[-1] == [b"id", b"c"]
    assert masker.unsure[-1] is True


@pytest.mark.parametrize(
    "ending",
    [
        command(Command.STMT_CLOSE, struct.pack("<I", 7)),
        command(Command.STMT_RESET, struct.pack("<I", 7)),
        command(Command.RESET_CONNECTION),
        _execute(7),  # executing again closes the cursor
    ],
    ids=["stmt-close", "stmt-reset", "reset-connection", "execute-again"],
)
def test_closing_the_cursor_drops_its_plan(ending: bytes) -> None:
    pb, fetch, batch, batch_masked = _cursor_story(card_masker())
    assert batch != batch_masked
    _ask(pb, 5, ending)
    if ending[4] == Command.STMT_CLOSE:
        pb << completed(5)  # no answer
    else:
        pb >> server(Reply(1).ok().data) << expect_client(Reply(1).ok().data) << completed(5)
    # a (scripted) fetch answer now passes as it came: no stale plan is applied to it
    assert _ask(pb, 6, fetch) >> server(batch) << expect_client(batch) << done(6, rows=2)


@pytest.mark.parametrize(
    "ending",
    [
        command(Command.STMT_CLOSE, struct.pack("<I", 7)),
        command(Command.STMT_RESET, struct.pack("<I", 7)),
        command(Command.RESET_CONNECTION),
        _execute(7),
    ],
    ids=["stmt-close", "stmt-reset", "reset-connection", "execute-again"],
)
def test_a_fetch_sent_with_the_cursors_end_is_masked(ending: bytes) -> None:
    """FETCH and CLOSE in one write: the plan was dropped as the CLOSE went out, before
    the FETCH's rows came back, and they reached the client in the clear."""
    pb, fetch, batch, batch_masked = _cursor_story(card_masker())
    _ask(pb, 5, fetch)
    _ask(pb, 6, ending)  # sent before the fetch is answered
    if ending[4] == Command.STMT_CLOSE:
        pb << completed(6)  # no answer of its own: done as it goes out
    masked = done(5, rows=2, app_t_card=1, app_t_born=1)
    pb >> server(batch) << expect_client(batch_masked) << masked
    if ending[4] != Command.STMT_CLOSE:
        pb >> server(Reply(1).ok().data) << expect_client(Reply(1).ok().data) << completed(6)
    # the cursor has ended now: a later (scripted) fetch answer passes as it came
    assert _ask(pb, 7, fetch) >> server(batch) << expect_client(batch) << done(7, rows=2)


@pytest.mark.parametrize(
    "failed",
    [
        Reply(1).err(1210, "Incorrect arguments to mysqld_stmt_execute").data,
        Reply(1).err(1243, "Unknown prepared statement handler (7)").data,
    ],
    ids=["parameters-not-read", "other-error"],
)
def test_an_execute_that_fails_keeps_the_plan_of_the_cursor_it_left_open(failed: bytes) -> None:
    """The server reads an execute's parameters before it closes the statement's open
    cursor: an execute whose parameters it cannot read (a short packet, a wrong count)
    fails and leaves the cursor open. The plan was dropped as the execute went out, and
    the next fetch of the cursor gave the card numbers in the clear. An execute answered
    with an ERR keeps the plan; one that runs ends it."""
    pb, fetch, batch, batch_masked = _cursor_story(card_masker())
    _ask(pb, 5, _execute(7))
    (
        pb
        >> server(failed)
        << expect_client(failed)
        << done(5, error=packets.parse_err(failed[4:]).code)
    )
    masked = done(6, rows=2, app_t_card=1, app_t_born=1)
    assert _ask(pb, 6, fetch) >> server(batch) << expect_client(batch_masked) << masked


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("request_", "before"),
    [
        (query(b"INSERT INTO t VALUES (1, '4111111111111111')"), b""),
        (command(Command.INIT_DB, SECRET), b""),
        (command(Command.STMT_PREPARE, b"SELECT '4111111111111111' +"), b""),
        (query(b"SELECT id, card FROM t"), b"rows"),
    ],
    ids=["query", "init-db", "prepare", "after-masked-rows"],
)
def test_err_messages_are_scrubbed_keeping_code_and_sqlstate(
    request_: bytes, before: bytes
) -> None:
    masker = card_masker()
    message = f"Duplicate entry '{SECRET.decode()}' for key 'card'"
    head = Reply(1)
    head_masked = Reply(1)
    if before:
        head.columns([ID, CARD], deprecate_eof=True).text_rows(CARD_ROWS[:1])
        head_masked.columns([ID, CARD_MASKED], deprecate_eof=True).text_rows(CARD_ROWS_MASKED[:1])
    answer = head.err(1062, message, "23000").data
    scrubbed = head_masked.err(1062, "Duplicate entry '<masked>' for key 'card'", "23000").data
    assert (
        _ask(masked_ready(masker), 1, request_)
        >> server(answer)
        << expect_client(scrubbed)
        << expect_event(
            CommandCompleted,
            rows=1 if before else 0,
            error=1062,
            masked={"app.t.card": 1} if before else {},
        )
    )
    assert masker.scrubbed == [message.encode()]


def test_without_a_masker_errors_pass_as_they_came() -> None:
    q = query(b"INSERT INTO t VALUES (1, '4111111111111111')")
    answer = Reply(1).err(1062, f"Duplicate entry '{SECRET.decode()}' for key 'card'").data
    assert (
        _ask(ready(), 1, q) >> server(answer) << expect_client(answer) << completed(1, error=1062)
    )


# -------------------------------------------------------------- ordering, fuzzing


def test_local_answers_keep_their_place_between_masked_answers() -> None:
    masker = card_masker()
    q = query(b"SELECT id, card FROM t")
    blocked = query(b"DROP TABLE t")
    ping = command(Command.PING)
    result = Reply(1).text_result([ID, CARD], CARD_ROWS, deprecate_eof=True).data
    masked = Reply(1).text_result([ID, CARD_MASKED], CARD_ROWS_MASKED, deprecate_eof=True).data
    refusal = frame(1, packets.build_err(1227, "sqlgate: no"))
    pong = Reply(1).ok().data
    assert (
        masked_ready(masker)
        >> client(q + blocked + ping)
        << received(1, q)
        << received(2, blocked)
        << received(3, ping)
        >> allow(1)
        << expect_server(q)
        >> refuse(2, 1227, "sqlgate: no")
        >> allow(3)
        << expect_server(ping)
        >> server(result + pong)
        << expect_client(masked + refusal + pong)
        << done(1, rows=3, app_t_card=2)
        << completed(2, error=1227)
        << completed(3)
    )


def test_a_plan_of_the_wrong_size_closes_the_session_before_any_value_leaves() -> None:
    class Broken(ByName):
        def plan(
            self, columns: Sequence[ColumnDefinition], **_: object
        ) -> Sequence[ColumnMask | None]:
            return [Redact("x")]

    q = query(b"SELECT id, card FROM t")
    result = Reply(1).text_result([ID, CARD], CARD_ROWS, deprecate_eof=True).data
    pb = _ask(masked_ready(Broken()), 1, q) >> server(result)
    assert (
        pb
        << expect_client(Reply(1).packet(b"\x02").data)  # only the column count went out
        << expect_client(is_err(2, ErrorCode.UNKNOWN, "masking plan has 1 entries"))
        << expect_event(CommandCompleted, error=ErrorCode.SERVER_LOST)
        << expect_closed()
    )


def test_a_malformed_row_after_masked_ones_in_the_same_chunk_sends_those_first() -> None:
    """Rows that arrive together are masked in one pass: the ones before a malformed row
    still go out, masked, and the ERR follows them with the next sequence id."""
    q = query(b"SELECT id, card FROM t")
    head = Reply(1).columns([ID, CARD], deprecate_eof=True).text_rows(CARD_ROWS[:2])
    bad = Reply(head.seq).text_rows([[b"3", SECRET, b"extra"]]).data  # three values
    masked = Reply(1).columns([ID, CARD_MASKED], deprecate_eof=True)
    masked.text_rows(CARD_ROWS_MASKED[:2])
    session = _ask(masked_ready(card_masker()), 1, q).session
    session.server_data(head.data + bad)
    out = b"".join(session.take_client_output())
    assert out.startswith(masked.data) and SECRET not in out
    frames = _frames(out)
    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
    assert packets.parse_err(frames[-1].payload).code == ErrorCode.UNKNOWN
    assert session.phase is Phase.CLOSED


_MASKED_ANSWERS = [
    (
        query(b"SELECT id, card FROM t"),
        Reply(1).text_result([ID, CARD], CARD_ROWS, deprecate_eof=True).data,
        Reply(1).text_result([ID, CARD_MASKED], CARD_ROWS_MASKED, deprecate_eof=True).data,
    ),
    (
        _execute(7),
        Reply(1)
        .columns([ID, CARD, BORN], deprecate_eof=True)
        .binary_rows(BIN_ROWS)
        .end(deprecate_eof=True)
        .data,
        Reply(1)
        .columns([ID, CARD_MASKED, BORN_MASKED], deprecate_eof=True)
        .binary_rows(BIN_ROWS_MASKED)
        .end(deprecate_eof=True)
        .data,
    ),
]


@settings(max_examples=300, deadline=None)
@given(
    which=st.sampled_from(range(len(_MASKED_ANSWERS))),
    cuts=st.lists(st.integers(0, 400), max_size=6),
)
def test_masked_answers_do_not_depend_on_how_the_bytes_arrive(which: int, cuts: list[int]) -> None:
    request_, answer, expected = _MASKED_ANSWERS[which]
    session = masked_ready(card_masker()).session
    session.take_events()
    session.client_data(request_)
    (ev,) = session.take_events()
    assert isinstance(ev, CommandReceived)
    session.allow(ev.cmd)
    session.take_server_output()
    points = sorted({c % (len(answer) + 1) for c in cuts} | {0, len(answer)})
    for a, b in zip(points, points[1:], strict=False):
        session.server_data(answer[a:b])
    out = b"".join(session.take_client_output())
    assert out == expected
    assert SECRET not in out
    (completion,) = session.take_events()
    assert isinstance(completion, CommandCompleted) and completion.masked


_SEEDS = [answer for _, answer, _ in _MASKED_ANSWERS] + [
    Reply(1).err(1062, "Duplicate entry '4111111111111111'").data,
    Reply(1).columns([ID, CARD], deprecate_eof=True).text_rows([[b"1", b"x" * 300]]).data,
    frame(1, b"\xfe" + b"\x00" * 8),
]


@settings(max_examples=500, deadline=None)
@given(
    data=mutated(_SEEDS),
    cuts=st.lists(st.integers(0, 400), max_size=4),
    which=st.sampled_from([0, 1]),
)
def test_fuzz_server_bytes_with_a_masker(data: bytes, cuts: list[int], which: int) -> None:
    """Whatever the backend sends a masked session, only ProtocolError handling runs: the
    client gets whole packets, and the session stays usable or closes cleanly."""
    session: Session = masked_ready(card_masker()).session
    session.client_data(_MASKED_ANSWERS[which][0])
    events = _shell_answers(session)
    for piece in _chunks(data, cuts):
        session.server_data(piece)
        events += _shell_answers(session)
    out = b"".join(session.take_client_output())
    if not session.busy:  # mid-answer, a streamed row may still be on its way
        _frames(out)
    _assert_usable_or_closed(session, events, {Phase.COMMAND})


# ------------------------------------------------ table definitions without a masker


def _shown(name: bytes, length: int) -> bytes:
    """A column of a SHOW CREATE TABLE result as MariaDB sends it: no origin."""
    return packets.build_column_definition(
        ColumnDefinition(b"def", b"", b"", b"", name, b"", 45, length, 0xFD, 1, 39)
    )


def _definition(connection: bytes) -> bytes:
    return (
        b"CREATE TABLE `r` (\n  `id` int(11)\n) ENGINE=FEDERATED CONNECTION='" + connection + b"'"
    )


@EOF_MODES
@pytest.mark.parametrize("chunk", [None, 1, 5], ids=["whole", "bytewise", "5-byte-chunks"])
def test_show_create_table_hides_a_connection_password_without_a_masker(
    deprecate_eof: bool, chunk: int | None
) -> None:
    """A session no masking rule applies to takes the fast relay, which copies nothing;
    a result set whose first of two columns is SHOW CREATE TABLE's goes to the masked
    relay, which takes the password out of a CONNECTION, then the fast relay again."""
    q = query(b"SHOW CREATE TABLE r; SELECT id, name FROM t")
    more = AUTOCOMMIT | MORE_RESULTS
    table, text = _shown(b"Table", 256), _shown(b"Create Table", 4096)
    secret = _definition(b"mysql://u:Rem0te@h:3306/d/t")
    starred = _definition(b"mysql://u:****@h:3306/d/t")
    shown = Reply(1).text_result(
        [table, text], [[b"r", secret]], deprecate_eof=deprecate_eof, status=more
    )
    after = Reply(shown.seq).text_result(COLS, ROWS, deprecate_eof=deprecate_eof)
    # the masked relay sends the definition of a column it masks as a nullable string
    text_masked = packets.build_column_definition(
        ColumnDefinition(b"def", b"", b"", b"", b"Create Table", b"", 45, 4096, 0xFD, 0, 0)
    )
    expected = Reply(1).text_result(
        [table, text_masked], [[b"r", starred]], deprecate_eof=deprecate_eof, status=more
    )
    pb = _ask(ready(deprecate_eof=deprecate_eof), 1, q)
    assert (
        pb
        >> server(shown.data + after.data, chunk=chunk)
        << expect_client(expected.data + after.data)
        << completed(1, rows=1 + len(ROWS))
    )
    assert not pb.session._mask_sticky  # back to the fast relay
    plain = query(b"SELECT id, name FROM t")
    answer = Reply(1).text_result(COLS, ROWS, deprecate_eof=deprecate_eof).data
    assert _ask(pb, 2, plain) >> server(answer) << expect_client(answer) << completed(2, rows=3)


@pytest.mark.parametrize(
    ("connection", "shown"),
    [
        (b"mysql://u:pw@h:1/d/t", b"mysql://u:****@h:1/d/t"),
        (b"mysql://u@h/d/t", b"mysql://u@h/d/t"),  # no password
        (b"srv/t", b"srv/t"),  # a server's name: CREATE SERVER keeps the password
        (b"srv", b"srv"),
        (b"mysql://u:p@w@h/d/t", b"****"),  # not one the server reads: replaced whole
        (b"DSN=x;UID=u;PWD=p", b"****"),
        (b"host 'h', password 'p'", b"****"),
    ],
)
def test_scrub_connection(connection: bytes, shown: bytes) -> None:
    from appliance.mysql.masking import scrub_connection

    assert scrub_connection(connection) == shown


def test_a_connection_inside_a_comment_is_text_and_a_partitions_is_scrubbed() -> None:
    from appliance.mysql.masking import scrub_table_definition

    text = (
        b"CREATE TABLE `p` (\n  `h` varchar(5) DEFAULT NULL COMMENT 'CONNECTION=''x:y@z''',\n"
        b"  `CONNECTION` int\n) ENGINE=InnoDB\n PARTITION BY RANGE (`id`)\n"
        b"(PARTITION `p0` VALUES LESS THAN (10) CONNECTION = 'mysql://u:pw0@h/d/t' ENGINE = "
        b"InnoDB)"
    )
    assert scrub_table_definition(text) == text.replace(b"pw0", b"****")


def test_the_first_bytes_of_what_may_be_a_show_create_table_wait_for_the_rest() -> None:
    """Fewer bytes of the first of two definitions than tell a SHOW CREATE TABLE's
    apart wait in the fast relay (at most 13); bytes that differ from its head stream."""
    table, text = _shown(b"Table", 256), _shown(b"Create Table", 4096)
    head = Reply(1).columns([table, text], deprecate_eof=True).data
    text_masked = packets.build_column_definition(
        ColumnDefinition(b"def", b"", b"", b"", b"Create Table", b"", 45, 4096, 0xFD, 0, 0)
    )
    masked = Reply(1).columns([table, text_masked], deprecate_eof=True).data
    pb = _ask(ready(), 1, query(b"SHOW CREATE TABLE r"))
    assert pb >> server(head[:12]) << expect_client(head[:5])  # the column count
    assert pb >> server(head[12:]) << expect_client(masked[5:])
    other = Reply(1).columns(COLS, deprecate_eof=True).data
    pb = _ask(ready(), 1, query(b"SELECT id, name FROM t"))
    assert pb >> server(other[:14]) << expect_client(other[:14])
