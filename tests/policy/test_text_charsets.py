"""A statement held in a string (PREPARE ... FROM, EXECUTE IMMEDIATE) is converted by the
server from the string's character set before it is read: from an introducer's
(`_swe7'...'`, `_sjis'...'`) or to the connection's (`SET character_set_connection`).
Where that conversion can make a quote of a letter or a letter of a quote, or change
characters beyond ASCII, the gateway would read another statement than the server."""

from __future__ import annotations

import pytest
from policy.test_stored_functions import decision

from appliance.config import PolicyConfig, RuleAction, RuleConfig
from appliance.mysql.constants import Command
from appliance.mysql.relay import ClientCommand
from appliance.policy.gate import Policy, SessionPolicy
from appliance.policy.rules import Subject

NO_SECRET = RuleConfig("no-secret", ("*",), RuleAction.BLOCK, ("shop.secret",))
NO_KUENDIGUNG = RuleConfig("no-k", ("*",), RuleAction.BLOCK, ("shop.kündigung",))

REFUSED_TEXTS = [
    # in swe7 the backtick is a letter: the server reads FROM secret as code
    "EXECUTE IMMEDIATE _swe7'SELECT val ` FROM secret -- `'",
    "PREPARE s FROM _swe7'SELECT id, val ` FROM secret -- `'",
    "EXECUTE IMMEDIATE _swe7'UPDATE pub ` , secret SET secret.val = 1 -- ` SET v = 2 WHERE id = 1'",
    # the last byte of a character and the backtick are one sjis character
    "EXECUTE IMMEDIATE _sjis'SELECT val あ` FROM secret -- `'",
    "EXECUTE IMMEDIATE _cp932'SELECT 1'",
    "EXECUTE IMMEDIATE _gbk'SELECT 1'",
    "EXECUTE IMMEDIATE _utf16'SELECT 1'",
]


@pytest.mark.parametrize("sql", REFUSED_TEXTS)
def test_a_text_in_a_character_set_that_converts_unlike_it_reads_is_refused(sql: str) -> None:
    refused = decision(sql, NO_SECRET)
    assert refused.action is RuleAction.BLOCK and refused.rule == "not-understood", refused


def test_a_text_beyond_ascii_in_a_converted_character_set_is_refused() -> None:
    """_latin1 'k\\xfcndigung' is kündigung once converted; as sent, it is no UTF-8."""
    raw = decision_bytes(b"EXECUTE IMMEDIATE _latin1'SELECT * FROM k\xfcndigung'")
    assert raw == "not-understood"
    assert decision("EXECUTE IMMEDIATE _latin1'SELECT 1'").rule == "default-allow"
    assert decision("EXECUTE IMMEDIATE _binary'SELECT 1'").rule == "default-allow"
    utf8 = decision("EXECUTE IMMEDIATE _utf8mb4'SELECT * FROM kündigung'", NO_KUENDIGUNG)
    assert utf8.rule == "no-k"


def decision_bytes(sql: bytes) -> str:
    who = Subject("agent", frozenset(), "orders")
    policy = SessionPolicy(Policy(PolicyConfig(), (NO_KUENDIGUNG,)), who, "shop", 45)
    payload = bytes([Command.QUERY]) + sql
    verdict = policy.decide(ClientCommand(1, Command.QUERY, payload, payload), 0, {})
    assert verdict.refusal is not None
    return verdict.refusal.rule


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        ("SET character_set_connection = swe7", "charset"),
        ("SET collation_connection = swe7_swedish_ci", "charset"),
        ("SET @@session.collation_connection = utf16_bin", "charset"),
        ("SET character_set_connection = ucs2", "charset"),
        # a client's text converts character by character: gbk's stay whole
        ("SET collation_connection = gbk_chinese_ci", "default-allow"),
        ("SET character_set_connection = DEFAULT", "charset"),
        ("SET NAMES latin1 COLLATE swe7_bin", "charset"),
        ("SET NAMES swe7", "charset"),
        ("SET character_set_results = swe7", "charset"),
        # what clients and ORMs send
        ("SET character_set_connection = latin1", "default-allow"),
        ("SET collation_connection = utf8mb4_unicode_ci", "default-allow"),
        ("SET NAMES utf8mb4 COLLATE utf8mb4_bin", "default-allow"),
        ("SET NAMES latin1", "default-allow"),
        # the defaults of new databases: what Perl's DBD::MariaDB sets at connect
        ("SET character_set_server = 'utf8mb4'", "default-allow"),
        ("SET collation_server = utf8mb4_general_ci", "default-allow"),
        ("SET character_set_server = swe7", "charset"),
        ("SET collation_server = DEFAULT", "charset"),
    ],
)
def test_the_connection_character_set_may_not_be_one_that_converts_quotes(
    sql: str, rule: str
) -> None:
    """With character_set_connection = swe7 a backslash in a string becomes '?':
    EXECUTE IMMEDIATE 'SELECT ''a\\'' AS x, val FROM secret -- ''' read shop.secret."""
    assert decision(sql).rule == rule
