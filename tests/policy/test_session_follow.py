"""What a command does to the session is followed whenever it may reach the server: an
approved statement (held for review first), a procedure that fails half way, a SET
STATEMENT whose answer carries its own sql_mode, a COM_RESET_CONNECTION with commands
sent behind it. Else the gateway reads later statements in another schema, sql_mode or
character set than the server does. Through the real gateway: tests/test_policy.py."""

from __future__ import annotations

import pytest

from appliance.config import PolicyConfig, RuleAction, RuleConfig
from appliance.mysql.constants import Command
from appliance.mysql.relay import ClientCommand
from appliance.policy.gate import Policy, SessionPolicy, Verdict
from appliance.policy.rules import Subject

AGENT = Subject("agent", frozenset({"agents"}), "orders")
UTF8MB4_GENERAL_CI = 45
GBK_CHINESE_CI = 28
NO_SECRET = RuleConfig("no-secret", ("*",), RuleAction.BLOCK, ("shop.secret",))
ALLOW_CALLS = RuleConfig("calls", ("CALL",), RuleAction.ALLOW)
REVIEW_USE = RuleConfig("review-use", ("USE",), RuleAction.REVIEW)
NO_BACKSLASH_ESCAPES = 0x0200


class Session:
    """One agent session in schema ``pub``, fed commands the way the gateway feeds them."""

    def __init__(self, *rules: RuleConfig, charset: int = UTF8MB4_GENERAL_CI) -> None:
        self.policy = SessionPolicy(
            Policy(PolicyConfig(), (NO_SECRET, *rules)), AGENT, "pub", charset
        )
        self._next = 0

    def send(
        self, sql: bytes | str, command: Command = Command.QUERY, status: int = 0
    ) -> tuple[ClientCommand, Verdict]:
        self._next += 1
        body = sql.encode() if isinstance(sql, str) else sql
        payload = bytes([command]) + body
        cmd = ClientCommand(self._next, command, payload, payload)
        return cmd, self.policy.decide(cmd, status, {})

    def done(self, cmd: ClientCommand, error: int | None = None) -> None:
        self.policy.completed(cmd, error, 0)

    def reads_shop_secret(self, status: int = 0) -> bool:
        """Whether ``SELECT * FROM secret`` is refused as reading shop.secret."""
        cmd, verdict = self.send("SELECT * FROM secret", status=status)
        self.done(cmd, 1227 if verdict.refused else None)
        return verdict.refusal is not None and verdict.refusal.rule == "no-secret"


def test_an_approved_text_with_a_use_moves_the_schema() -> None:
    """USE shop; DROP TABLE t is held for review: approved, it runs and the server is in
    shop, so a bare ``secret`` is shop.secret from then on."""
    session = Session()
    cmd, verdict = session.send("USE shop; DROP TABLE t")
    assert verdict.refusal is not None and verdict.refusal.action is RuleAction.REVIEW
    assert session.policy.schema is None  # approved or not: not known until it is answered
    session.done(cmd)  # approved, ran
    assert session.policy.db == "shop"
    assert session.reads_shop_secret()


def test_an_approved_use_moves_the_schema() -> None:
    for command, body in ((Command.QUERY, "USE shop"), (Command.INIT_DB, "shop")):
        session = Session(REVIEW_USE)
        cmd, verdict = session.send(body, command)
        assert verdict.refusal is not None and verdict.refusal.action is RuleAction.REVIEW
        session.done(cmd)
        assert session.policy.db == "shop"
        assert session.reads_shop_secret()


def test_a_denied_use_leaves_the_schema() -> None:
    session = Session(REVIEW_USE)
    cmd, _ = session.send("USE shop")
    session.done(cmd, 1227)  # denied: the gateway answered
    assert session.policy.schema == "pub"


def test_an_approved_call_makes_the_schema_unknown() -> None:
    """A procedure may run ``EXECUTE IMMEDIATE 'USE shop'``, which lasts after it when it
    is of the current schema: held for review (no rule allows CALL) and approved, the
    CALL leaves the schema unknown like an allowed one."""
    session = Session()
    cmd, verdict = session.send("CALL pub.run('USE shop')")
    assert verdict.refusal is not None and verdict.refusal.action is RuleAction.REVIEW
    session.done(cmd)
    assert session.policy.schema is None
    assert session.reads_shop_secret()


def test_a_call_that_fails_makes_the_schema_unknown() -> None:
    """The procedure changed the schema, then signalled an error."""
    session = Session(ALLOW_CALLS)
    cmd, verdict = session.send("CALL pub.use_then_fail()")
    assert verdict.refusal is None
    session.done(cmd, 1644)
    assert session.policy.schema is None
    assert session.reads_shop_secret()


def test_a_write_after_a_call_is_refused_saying_why_and_what_to_do() -> None:
    session = Session(ALLOW_CALLS)
    cmd, _ = session.send("CALL pub.run('SELECT 1')")
    session.done(cmd)
    _, verdict = session.send("INSERT INTO notes VALUES (1)")
    assert verdict.refusal is not None and verdict.refusal.rule == "mysql-schema"
    assert "a CALL ran" in verdict.refusal.reason and "USE" in verdict.refusal.reason


def test_a_call_makes_the_character_set_of_result_names_unknown() -> None:
    """A procedure may ``SET character_set_results``, which lasts after it."""
    session = Session(ALLOW_CALLS)
    assert session.policy._results == "utf8mb4"
    cmd, verdict = session.send("CALL pub.run('SET character_set_results = latin1')")
    assert verdict.refusal is None
    session.done(cmd)
    assert session.policy._results is None


def test_a_set_statement_of_sql_mode_leaves_no_backslash_escapes_unknown() -> None:
    """SET STATEMENT sql_mode='NO_BACKSLASH_ESCAPES' FOR SELECT 1: the SELECT's answer
    carries that flag, the session's mode does not. The next text is read both ways."""
    trick = r"SELECT 'a\' ' UNION SELECT v FROM shop.secret -- ' FROM pub.secret"
    session = Session()
    cmd, verdict = session.send("SET STATEMENT sql_mode='NO_BACKSLASH_ESCAPES' FOR SELECT 1")
    assert verdict.refusal is None
    session.done(cmd)
    _, verdict = session.send(trick, status=NO_BACKSLASH_ESCAPES)
    assert verdict.refusal is not None  # refused: the two readings differ
    # the other way round: a session in NO_BACKSLASH_ESCAPES, a statement without it
    session = Session()
    cmd, _ = session.send("SET STATEMENT sql_mode='' FOR SELECT 1", status=NO_BACKSLASH_ESCAPES)
    session.done(cmd)
    hidden = r"SELECT v FROM pub.secret WHERE v = 'x\' UNION SELECT v FROM shop.secret -- '"
    _, verdict = session.send(hidden, status=0)
    assert verdict.refusal is not None
    # an answer that came under the session's own mode tells it again
    cmd, _ = session.send("SELECT 1", status=NO_BACKSLASH_ESCAPES)
    session.done(cmd)
    assert not session.policy._backslash_unknown


@pytest.mark.parametrize(
    ("command", "body"),
    [
        (Command.STMT_CLOSE, b"\x63\x00\x00\x00"),
        (Command.STMT_SEND_LONG_DATA, b"\x63\x00\x00\x00\x00\x00x"),
        (Command.STMT_PREPARE, b"SELECT 1"),
        (Command.FIELD_LIST, b"t\x00"),
        (Command.SET_OPTION, b"\x00\x00"),
        (Command.STATISTICS, b""),
    ],
)
def test_an_answer_without_status_flags_leaves_a_set_statements_mode_unknown(
    command: Command, body: bytes
) -> None:
    """After SET STATEMENT sql_mode='NO_BACKSLASH_ESCAPES' FOR SELECT 1, a command whose
    answer carries no status flags the core reads (or no answer at all) leaves the
    SET STATEMENT's flag as the session's: the next text is still read both ways."""
    trick = r"SELECT 'a\' ' UNION SELECT v FROM shop.secret -- ' FROM pub.secret"
    session = Session()
    cmd, _ = session.send("SET STATEMENT sql_mode='NO_BACKSLASH_ESCAPES' FOR SELECT 1")
    session.done(cmd)
    cmd, verdict = session.send(body, command, status=NO_BACKSLASH_ESCAPES)
    assert verdict.refusal is None
    session.done(cmd)
    assert session.policy._backslash_unknown
    _, verdict = session.send(trick, status=NO_BACKSLASH_ESCAPES)
    assert verdict.refusal is not None
    cmd, _ = session.send(b"", Command.PING, status=NO_BACKSLASH_ESCAPES)
    session.done(cmd)  # an OK: its flags are the session's
    assert not session.policy._backslash_unknown


def test_a_query_sent_behind_a_reset_is_read_in_both_character_sets() -> None:
    """A gbk login, SET NAMES utf8mb4, then COM_RESET_CONNECTION and a query in one
    write: the server reads the query in gbk again (0xbf 0x60 is one character there,
    the backtick is swallowed), the gateway read it as UTF-8."""
    session = Session(charset=GBK_CHINESE_CI)
    cmd, verdict = session.send("SET NAMES utf8mb4")
    assert verdict.refusal is None
    session.done(cmd)
    reset, _ = session.send(b"", Command.RESET_CONNECTION)
    _, verdict = session.send(b"SELECT v AS `\xbf`, 'x` FROM shop.secret -- ' FROM pub.secret")
    assert verdict.refusal is not None
    session.done(reset)
    _, verdict = session.send(b"SELECT v AS `\xbf`, 'x` FROM shop.secret -- ' FROM pub.secret")
    assert verdict.refusal is not None  # gbk again: only ASCII


def test_a_query_sent_behind_a_set_names_is_read_in_both_character_sets() -> None:
    """SET NAMES latin1 and SELECT UPPER(`stra\\xdfe`) in one write: the server reads the
    SELECT in latin1 (straße), the gateway read it in UTF-8 (no such name, so no masked
    column used in a function): ASCII only until the SET is answered."""
    session = Session()
    names, verdict = session.send("SET NAMES latin1")
    assert verdict.refusal is None
    _, verdict = session.send(b"SELECT UPPER(`stra\xdfe`) FROM kunden")
    assert verdict.refusal is not None and verdict.refusal.rule == "not-understood"
    _, verdict = session.send("SELECT 1")  # ASCII reads alike
    assert verdict.refusal is None
    session.done(names)
    _, verdict = session.send(b"SELECT UPPER(`stra\xdfe`) FROM kunden")
    assert verdict.refusal is not None  # latin1 now: no byte >= 0x80 in a name either


def test_no_grant_is_made_or_used_while_the_schema_or_character_set_is_unknown() -> None:
    """A grant binds the current schema and how the text is read: with the schema not
    known (no database, a failed text with a USE, after a CALL) every such session
    shared one fingerprint, so a grant given in one covered the same DELETE in another
    schema; a SET NAMES on its way read the next text as before it."""
    delete = "DELETE FROM t WHERE id = 3"
    session = Session()
    cmd, verdict = session.send(delete)
    known = session.policy.fingerprint(cmd, 0, verdict)
    assert known is not None
    for before in ("USE shop; SELECT * FROM nosuch", None):
        other = Session()
        if before is None:
            other.policy.db = None  # logged in without a database
        else:
            text, _ = other.send(before)
            other.done(text, 1146)  # the USE ran, the SELECT failed: schema not known
        assert other.policy.schema is None
        cmd, verdict = other.send(delete)
        assert other.policy.fingerprint(cmd, 0, verdict) is None
    other = Session()
    other.send("SET NAMES latin1")  # on its way
    cmd, verdict = other.send(delete)
    assert other.policy.fingerprint(cmd, 0, verdict) not in (None, known)


def test_after_stored_code_the_no_backslash_escapes_flag_is_not_trusted() -> None:
    """A procedure or function that runs SET sql_mode leaves the answers' flag at its own
    mode after it ends, until the session sets sql_mode again: the gateway read the next
    text by the flag and shop.secret's rows came back. A text with a backslash is read
    both ways until a SET of sql_mode is answered."""
    trick = r"SELECT v FROM pub.secret WHERE v = 'a\' OR v = ' UNION SELECT v FROM shop.secret -- '"
    for stored in ("CALL pub.p_set()", "SELECT pub.f_nbe()"):
        session = Session(ALLOW_CALLS)
        cmd, verdict = session.send(stored)
        assert verdict.refusal is None
        session.done(cmd)
        assert session.policy._results is None  # it may have set character_set_results
        _, verdict = session.send(trick, status=NO_BACKSLASH_ESCAPES)
        assert verdict.refusal is not None, stored
        cmd, _ = session.send("SELECT 1", status=NO_BACKSLASH_ESCAPES)
        session.done(cmd)  # an answer carries the same untrusted flag
        _, verdict = session.send(trick, status=NO_BACKSLASH_ESCAPES)
        assert verdict.refusal is not None, stored
        cmd, verdict = session.send("SET sql_mode = 'STRICT_TRANS_TABLES'")
        assert verdict.refusal is None
        session.done(cmd)
        assert not session.policy._backslash_unknown
        _, verdict = session.send(trick)  # read with escapes, as the server does now
        assert verdict.refusal is not None and verdict.refusal.rule == "no-secret"
        _, verdict = session.send(r"SELECT 'O\'Brien'")
        assert verdict.refusal is None


def test_the_mode_the_server_started_the_session_in_decides_every_statement() -> None:
    """``started_in``: the shell tells the backend session's sql_mode as it logged in."""
    session = Session()
    assert not session.send("SELECT 1 || 0")[1].refused  # told nothing: readable
    for started, refused in (
        ("PIPES_AS_CONCAT,STRICT_TRANS_TABLES", "holds PIPES_AS_CONCAT"),
        ("IGNORE_SPACE,STRICT_TRANS_TABLES", "holds IGNORE_SPACE"),  # by init_connect
        (None, "could not read"),
    ):
        session.policy.started_in(started)
        for text in ("SELECT 1 || 0", "SET NAMES utf8mb4", "/* c */ SELECT 1; SELECT 2"):
            _, verdict = session.send(text)
            assert verdict.refusal is not None and verdict.refusal.rule == "sql-mode", text
            assert refused in verdict.refusal.reason
    session.policy.started_in("STRICT_TRANS_TABLES,ANSI_QUOTES,NO_BACKSLASH_ESCAPES")
    assert not session.send("SELECT 1 || 0")[1].refused
    # not known until told (the gateway's shell constructs it so)
    unknown = SessionPolicy(Policy(PolicyConfig(), ()), AGENT, "pub", UTF8MB4_GENERAL_CI, None)
    verdict = unknown.decide(_query(1, "SELECT 1"), 0, {})
    assert verdict.refusal is not None and verdict.refusal.rule == "sql-mode"


HIDDEN_DELETE = "SELECT '€\\' ; DELETE FROM secret; -- '".encode()
"""In UTF-8 one SELECT of a string; in gbk, the € (e2 82 ac) and the backslash are two
characters (e282, ac5c): the quote ends the string and the DELETE runs."""


def test_the_character_set_an_init_connect_set_is_the_one_texts_are_read_in() -> None:
    """The login named utf8mb4, the target's init_connect ran SET NAMES gbk: the text
    was read as UTF-8 and allowed as one SELECT, while the server ran the DELETE."""
    assert not Session().send(HIDDEN_DELETE)[1].refused  # one SELECT, in UTF-8
    session = Session()
    session.policy.started_with("gbk", "gbk")
    _, verdict = session.send(HIDDEN_DELETE)
    assert verdict.refusal is not None and verdict.refusal.rule == "not-understood"
    assert "gbk" in verdict.refusal.reason or "cannot read safely" in verdict.refusal.reason
    assert not session.send("SELECT 'plain ascii\\'' AS a")[1].refused
    assert session.policy.client_charset == "gbk"
    assert session.policy.results_charset == "gbk"
    # a reset brings back the login's or the server's own: only ASCII reads alike
    reset = ClientCommand(90, Command.RESET_CONNECTION, b"\x1f", b"\x1f")
    session.policy.decide(reset, 0, {})
    session.done(reset)
    assert session.policy.client_charset is None
    assert session.send("SELECT 'é'")[1].refused
    # the same character set as the login named changes nothing
    same = Session()
    same.policy.started_with("utf8mb4", "utf8mb4")
    assert not same.send("SELECT 'é'")[1].refused
    assert same.policy.client_charset == "utf8mb4"
    latin = Session()
    latin.policy.started_with("latin1", None)
    assert latin.policy.client_charset == "latin1"
    assert latin.policy.results_charset is None


@pytest.mark.parametrize("charset", ["swe7", "ucs2", "utf16"])
def test_a_session_started_in_a_character_set_that_changes_ascii_runs_nothing(
    charset: str,
) -> None:
    session = Session()
    session.policy.started_with(charset, "utf8mb4")
    for text in ("SELECT 1", "SET NAMES utf8mb4"):
        _, verdict = session.send(text)
        assert verdict.refusal is not None and verdict.refusal.rule == "charset", text
        assert f"character_set_client {charset}" in verdict.refusal.reason


def _query(cmd_id: int, sql: str) -> ClientCommand:
    payload = bytes([Command.QUERY]) + sql.encode()
    return ClientCommand(cmd_id, Command.QUERY, payload, payload)
