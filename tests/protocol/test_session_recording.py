"""Recording stories of the session core: what the client received, captured per command.

With ``Session.record_limit`` above 0 each ``CommandCompleted`` carries the bytes of its
answer exactly as they reached the client (``recorded``), cut at the limit. The expected
bytes are written out with ``Reply`` (and by hand for masked ones), never taken from the
code under test; ``transcript.decode_answer`` reads the captures back.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.mysql import packets
from appliance.mysql.constants import MAX_PAYLOAD, Command, FieldType
from appliance.mysql.relay import (
    ClientAuthenticated,
    CommandCompleted,
    CommandReceived,
    Session,
    SessionReady,
)
from appliance.mysql.transcript import ResultSet, decode_answer
from appliance.mysql.wire import frame

from .playbook import (
    AUTOCOMMIT,
    Playbook,
    Reply,
    Step,
    TlsFiles,
    allow,
    client,
    column,
    command,
    expect_client,
    expect_event,
    expect_server,
    make_tls_files,
    query,
    refuse,
    server,
)
from .test_session import (
    ALICE_PW,
    CLIENT_CAPS,
    COLS,
    MORE_RESULTS,
    OFFERED,
    ROWS,
    TWO_BIGINT_PARAMS,
    C,
    _binary_rows,
    _chunks,
    _execute,
    _prepare_ok,
    _tls_sha2_login,
    make_settings,
    new_session,
    ok_for_client,
    ready,
    received,
)
from .test_session_masking import (
    CARD,
    CARD_MASKED,
    CARD_ROWS,
    CARD_ROWS_MASKED,
    ID,
    SECRET,
    card_masker,
    masked_ready,
)

LIMIT = 1 << 20
Q1, Q2 = query(b"SELECT id, name FROM t"), query(b"UPDATE t SET name = 'x'")
R1 = Reply(1).text_result(COLS, ROWS, deprecate_eof=True).data
R2 = Reply(1).ok(affected=3).data


def recorded(cmd_id: int, data: bytes | None, *, truncated: bool = False, **fields: object) -> Step:
    """The CommandCompleted of command ``cmd_id`` with exactly this capture."""
    return expect_event(
        CommandCompleted,
        cmd=lambda c: c.id == cmd_id,
        recorded=data,
        recorded_truncated=truncated,
        **fields,
    )


def recording(pb: Playbook, limit: int = LIMIT) -> Playbook:
    pb.session.record_limit = limit  # as the shell does after the login
    return pb


def _ask(pb: Playbook, *raws: bytes) -> Playbook:
    """The client sends ``raws`` at once; the shell allows each; they reach the backend."""
    first = max(pb.commands, default=0) + 1
    pb = pb >> client(b"".join(raws))
    for i, raw in enumerate(raws):
        pb = pb << received(first + i, raw)
    for i, raw in enumerate(raws):
        pb = pb >> allow(first + i) << expect_server(raw)
    return pb


# ---------------------------------------------------------------------- the fast relay


@pytest.mark.parametrize("chunk", [None, 1, 7, len(R1) - 1], ids=["one-chunk", "1", "7", "cut"])
def test_two_pipelined_answers_are_each_captured_exactly(chunk: int | None) -> None:
    assert (
        _ask(recording(ready()), Q1, Q2)
        >> server(R1 + R2, chunk=chunk)
        << expect_client(R1 + R2)
        << recorded(1, R1, rows=3)
        << recorded(2, R2, affected=3)
    )


@pytest.mark.parametrize("deprecate_eof", [True, False], ids=["deprecate-eof", "classic-eof"])
def test_a_multi_result_answer_is_one_capture(deprecate_eof: bool) -> None:
    more = AUTOCOMMIT | MORE_RESULTS
    reply = Reply(1).text_result(COLS, ROWS[:1], deprecate_eof=deprecate_eof, status=more)
    reply.text_result(COLS, ROWS, deprecate_eof=deprecate_eof, status=more).ok()
    answer = reply.data
    pb = _ask(recording(ready(deprecate_eof=deprecate_eof)), Q1, Q2)
    assert (
        pb
        >> server(answer + R2, chunk=11)
        << expect_client(answer + R2)
        << recorded(1, answer, rows=4)
        << recorded(2, R2, affected=3)
    )


def test_a_capture_stops_at_the_limit_and_the_next_answer_starts_whole() -> None:
    assert (
        _ask(recording(ready(), limit=30), Q1, Q2)
        >> server(R1 + R2, chunk=9)
        << expect_client(R1 + R2)
        << recorded(1, R1[:30], truncated=True, rows=3)
        << recorded(2, R2)
    )


def test_recording_off_records_nothing_and_changes_nothing() -> None:
    assert (
        _ask(ready(), Q1, Q2)
        >> server(R1 + R2)
        << expect_client(R1 + R2)
        << recorded(1, None, rows=3)
        << recorded(2, None)
    )


def test_the_limit_applies_from_the_next_command_on() -> None:
    pb = _ask(ready(), Q1) >> server(R1[:20]) << expect_client(R1[:20])
    pb = _ask(recording(pb), Q2)
    assert (
        pb
        >> server(R1[20:] + R2)
        << expect_client(R1[20:] + R2)
        << recorded(1, None, rows=3)  # half sent before: not recorded at all
        << recorded(2, R2)
    )
    pb.session.record_limit = 0
    assert _ask(pb, Q1) >> server(R1) << expect_client(R1) << recorded(3, None, rows=3)


def test_a_refusal_between_answers_is_captured_in_its_place() -> None:
    denied = frame(1, packets.build_err(1142, "sqlgate: policy forbids UPDATE"))
    pb = recording(ready()) >> client(Q1 + Q2 + Q1)
    assert (
        pb
        << received(1, Q1)
        << received(2, Q2)
        << received(3, Q1)
        >> allow(1)
        << expect_server(Q1)
        >> refuse(2, 1142, "sqlgate: policy forbids UPDATE")
        >> allow(3)
        << expect_server(Q1)
        >> server(R1 + R1)
        << expect_client(R1 + denied + R1)
        << recorded(1, R1, rows=3)
        << recorded(2, denied, error=1142)
        << recorded(3, R1, rows=3)
    )


def test_a_command_without_an_answer_records_nothing_received() -> None:
    close = command(Command.STMT_CLOSE, struct.pack("<I", 7))
    ping = command(Command.PING)
    assert (
        recording(ready())
        >> client(close + ping)
        << received(1, close)
        << received(2, ping)
        >> allow(1)
        << expect_server(close)
        << recorded(1, b"")
        >> allow(2)
        << expect_server(ping)
        >> server(Reply(1).ok().data)
        << expect_client(Reply(1).ok().data)
        << recorded(2, Reply(1).ok().data)
    )


def test_a_row_over_16_mib_is_captured_to_the_limit() -> None:
    big = b"y" * (MAX_PAYLOAD + 100)
    answer = Reply(1).text_result(COLS, [[b"1", big], [b"2", b"b"]], deprecate_eof=True).data
    limit = MAX_PAYLOAD + 50
    assert (
        _ask(recording(ready(), limit=limit), Q1, Q2)
        >> server(answer + R2, chunk=1 << 20)
        << expect_client(answer + R2)
        << recorded(1, answer[:limit], truncated=True, rows=2)
        << recorded(2, R2)
    )


def test_prepare_and_execute_captures_decode_to_text() -> None:
    prep = command(Command.STMT_PREPARE, b"SELECT id, name FROM t WHERE id BETWEEN ? AND ?")
    prepared = (
        Reply(1)
        .packet(_prepare_ok(7, columns=2, params=2))
        .packet(column(b"?", FieldType.LONGLONG))
        .packet(column(b"?", FieldType.LONGLONG))
        .packet(COLS[0])
        .packet(COLS[1])
        .data
    )
    execute = _execute(7, params=TWO_BIGINT_PARAMS)
    rows = (
        Reply(1)
        .columns(COLS, deprecate_eof=True)
        .binary_rows(_binary_rows(5, 6))
        .end(deprecate_eof=True)
        .data
    )
    pb = _ask(recording(ready()), prep)
    assert pb >> server(prepared) << expect_client(prepared) << recorded(1, prepared)
    assert (
        _ask(pb, execute)
        >> server(rows, chunk=5)
        << expect_client(rows)
        << recorded(2, rows, rows=2)
    )
    prepare = decode_answer(
        prepared, command=Command.STMT_PREPARE, deprecate_eof=True, truncated=False
    )
    assert prepare.complete and prepare.prepared is not None
    assert [c.name for c in prepare.prepared.columns] == ["id", "name"]
    answer = decode_answer(rows, command=Command.STMT_EXECUTE, deprecate_eof=True, truncated=False)
    assert answer.complete
    assert [r.rows for r in answer.result_sets] == [[["5", "abc"], ["6", "abc"]]]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def test_over_client_tls_the_capture_is_the_plaintext(tls: TlsFiles) -> None:
    side = (CLIENT_CAPS | int(C.SSL)) & (OFFERED | int(C.SSL))
    pb = Playbook(new_session(make_settings(client_tls=tls.server_context())))
    assert (
        _tls_sha2_login(pb, tls, password=ALICE_PW)
        << expect_client(frame(3, b"\x01\x04"))  # perform full authentication
        >> client(frame(4, ALICE_PW + b"\0"))
        << expect_event(ClientAuthenticated, tls=True)
        << expect_server(lambda p: p.seq == 1)
        >> server(Reply(2).ok().data)
        << expect_client(ok_for_client(5, side))
        << expect_event(SessionReady)
    )
    assert (
        _ask(recording(pb), Q1, Q2)
        >> server(R1 + R2, chunk=13)
        << expect_client(R1 + R2)  # decrypted by the playbook's TLS client
        << recorded(1, R1, rows=3)
        << recorded(2, R2, affected=3)
    )


# ---------------------------------------------------------------------- the masked relay


@pytest.mark.parametrize("chunk", [None, 1, 5], ids=["whole", "bytewise", "5-byte-chunks"])
def test_a_masked_answer_is_captured_masked(chunk: int | None) -> None:
    q = query(b"SELECT id, card FROM t")
    result = Reply(1).text_result([ID, CARD], CARD_ROWS, deprecate_eof=True).data
    masked = Reply(1).text_result([ID, CARD_MASKED], CARD_ROWS_MASKED, deprecate_eof=True).data
    pb = _ask(recording(masked_ready(card_masker())), q, Q2)
    assert (
        pb
        >> server(result + R2, chunk=chunk)
        << expect_client(masked + R2)
        << recorded(1, masked, rows=3, masked={"app.t.card": 2})
        << recorded(2, R2, affected=3)
    )
    assert SECRET not in masked
    answer = decode_answer(masked, command=Command.QUERY, deprecate_eof=True, truncated=False)
    (rows,) = [r.rows for r in answer.result_sets]
    assert rows == [["1", "************1111"], ["2", None], ["3", "************0004"]]


def test_a_masked_capture_cut_at_the_limit_holds_only_masked_bytes() -> None:
    q = query(b"SELECT id, card FROM t")
    result = Reply(1).text_result([ID, CARD], CARD_ROWS, deprecate_eof=True).data
    masked = Reply(1).text_result([ID, CARD_MASKED], CARD_ROWS_MASKED, deprecate_eof=True).data
    limit = masked.index(b"************0004") + 4
    pb = _ask(recording(masked_ready(card_masker()), limit=limit), q)
    assert (
        pb
        >> server(result, chunk=3)
        << expect_client(masked)
        << recorded(1, masked[:limit], truncated=True, rows=3, masked={"app.t.card": 2})
    )
    answer = decode_answer(
        masked[:limit], command=Command.QUERY, deprecate_eof=True, truncated=True
    )
    (result_set,) = answer.result_sets
    assert isinstance(result_set, ResultSet) and not result_set.complete
    assert result_set.rows == [["1", "************1111"], ["2", None]]


# ------------------------------------------------------------------------------ property


_CARDS = Reply(1).text_result([ID, CARD], CARD_ROWS, deprecate_eof=True).data
_CARDS_MASKED = Reply(1).text_result([ID, CARD_MASKED], CARD_ROWS_MASKED, deprecate_eof=True).data
_DUPLICATE = Reply(1).err(1062, "Duplicate entry '" + SECRET.decode() + "'", "23000").data
_DUPLICATE_SCRUBBED = Reply(1).err(1062, "Duplicate entry '<masked>'", "23000").data
_ANSWERS = [  # (what the backend sends, what a masked session's client gets)
    (R1, R1),
    (R2, R2),
    (_CARDS, _CARDS_MASKED),
    (_DUPLICATE, _DUPLICATE_SCRUBBED),
]


@settings(max_examples=300, deadline=None)
@given(
    order=st.lists(st.sampled_from(range(len(_ANSWERS))), min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 600), max_size=8),
    masked=st.booleans(),
    limit=st.sampled_from([LIMIT, 40, 1]),
)
def test_the_captures_are_exactly_what_the_client_received(
    order: list[int], cuts: list[int], masked: bool, limit: int
) -> None:
    pb = masked_ready(card_masker()) if masked else ready()
    session: Session = pb.session
    session.record_limit = limit
    session.take_events()
    session.client_data(query(b"SELECT 1") * len(order))
    for ev in session.take_events():
        assert isinstance(ev, CommandReceived)
        session.allow(ev.cmd)
    session.take_server_output()
    for piece in _chunks(b"".join(_ANSWERS[i][0] for i in order), cuts):
        session.server_data(piece)
    expected = [_ANSWERS[i][1 if masked else 0] for i in order]
    assert b"".join(session.take_client_output()) == b"".join(expected)
    events = session.take_events()
    assert len(events) == len(order)
    for want, ev in zip(expected, events, strict=True):
        assert isinstance(ev, CommandCompleted)
        assert ev.recorded == want[:limit]
        assert ev.recorded_truncated == (len(want) > limit)
