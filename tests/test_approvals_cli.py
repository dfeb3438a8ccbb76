"""``sqlgate approvals`` against a real Mosquitto and a real gateway with approvals on:
the operator lists what is held and decides with a token, using an operator's own
configuration (the broker's ``operator`` user, which may only read requests and publish
decisions)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab.approvals import Held, approvals_toml, operator_config, publish
from lab.broker import Broker
from lab.clients import run_sqlgate as sqlgate
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB
from lab.tokens import Provider

from appliance import operator

pytestmark = pytest.mark.integration

TIMEOUT_S = 30  # long enough for a decision that does not count to be seen not to count
APPROVER = "dba@example.com"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Provider:
    return Provider(tmp_path_factory.mktemp("idp"))


@pytest.fixture(scope="module")
def gw(
    mariadb: MariaDB,
    broker: Broker,
    provider: Provider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("gw")
    extra = approvals_toml(work, broker, provider, timeout_s=TIMEOUT_S)
    mariadb.admin_sql(
        "CREATE TABLE IF NOT EXISTS shop.appr_cli (id INT PRIMARY KEY)",
        "DELETE FROM shop.appr_cli",
        "INSERT INTO shop.appr_cli VALUES (1), (2)",
    )
    gw = GatewayProcess(work, mariadb, mariadb.pki, extra_toml=extra).start()
    yield gw
    assert gw.stop() == 0
    log = gw.log()
    assert "Traceback" not in log
    assert broker.users[broker.gateway_user] not in log


@pytest.fixture(scope="module")
def config(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return operator_config(tmp_path_factory.mktemp("operator"), broker)


@pytest.fixture(scope="module")
def tokens(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Token files: an approver's and a valid token of someone who is not one."""
    directory = tmp_path_factory.mktemp("tokens")
    files = {
        "dba": provider.token(email=APPROVER, groups=["dba"]),
        "eve": provider.token(email="eve@example.com", groups=["agents"]),
    }
    for name, token in files.items():
        (directory / name).write_text(f"\n  {token}\n")  # whitespace around it is fine
    return {name: directory / name for name in files}


def one_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def secrets_absent(result: subprocess.CompletedProcess[str], *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.stdout and secret not in result.stderr


def listed(config: Path, sql: str, timeout: float = 15) -> str:
    """The ``approvals list`` line of the pending request for ``sql`` (it shows once the
    gateway has published it)."""
    deadline = time.monotonic() + timeout
    while True:
        result = sqlgate("approvals", "list", "-c", config)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        for line in result.stdout.splitlines():
            if line.endswith(sql):
                return line
        assert time.monotonic() < deadline, f"{sql!r} never listed: {result.stdout!r}"
        time.sleep(0.2)


def request_id(line: str) -> str:
    return line.split()[0]


def test_list_shows_a_held_statement(
    gw: GatewayProcess, config: Path, tokens: dict[str, Path]
) -> None:
    sql = "DROP TABLE IF EXISTS appr_cli_listed"
    held = Held(gw, sql)
    try:
        line = listed(config, sql)
        match = re.fullmatch(r"([0-9a-f]{32})  agent  test-gw/orders  (\d+)s left  (.*)", line)
        assert match is not None, line
        assert 0 < int(match[2]) <= TIMEOUT_S and match[3] == sql
        assert not held.done.is_set()
        only = sqlgate("approvals", "list", "-c", config, "--appliance", "test-gw")
        assert only.returncode == 0 and line.split("  ")[0] in only.stdout
        elsewhere = sqlgate("approvals", "list", "-c", config, "--appliance", "elsewhere")
        assert elsewhere.returncode == 0, elsewhere.stderr
        assert elsewhere.stdout == "" and elsewhere.stderr == "no pending approvals\n"
        denied = sqlgate(
            "approvals", "deny", request_id(line), "-c", config, "--token-file", tokens["dba"]
        )
        assert denied.returncode == 0, denied.stderr
        assert held.result() is not None
    finally:
        held.close()


def test_a_slow_subscription_does_not_cut_the_list(
    gw: GatewayProcess, broker: Broker, config: Path, tokens: dict[str, Path]
) -> None:
    """The broker's answer to the subscriptions comes after the retained requests: they
    are all read, however long subscribing took (``wait_s`` = 0 stands for a broker
    slower than the whole wait; the listing said there was nothing pending)."""
    sql = "DROP TABLE IF EXISTS appr_cli_slow"
    held = Held(gw, sql)
    try:
        as_operator = broker.bus_config(broker.operator_user)
        deadline = time.monotonic() + 15
        while not (found := asyncio.run(operator.list_pending(as_operator, "test-gw"))):
            assert time.monotonic() < deadline, "the request was never published"
        assert [r.sql for r in found] == [sql]
        again = asyncio.run(operator.list_pending(as_operator, "test-gw", wait_s=0))
        assert [(r.id, r.sql) for r in again] == [(found[0].id, sql)]
        shown = asyncio.run(operator.show_pending(as_operator, found[0].id))
        assert shown.sql == sql
        denied = sqlgate(
            "approvals", "deny", found[0].id, "-c", config, "--token-file", tokens["dba"]
        )
        assert denied.returncode == 0, denied.stderr
        assert held.result() is not None
    finally:
        held.close()


def test_show_prints_the_whole_statement_that_list_cuts(
    gw: GatewayProcess, config: Path, tokens: dict[str, Path]
) -> None:
    """``list`` cuts a statement to the line: past the cut, a comment may hide what
    runs. ``show`` prints it whole, line breaks kept, before anyone approves it."""
    words = "harmless words " * 40
    sql = f"ALTER TABLE appr_cli COMMENT '{words}' -- nothing else\n, DROP COLUMN id"
    held = Held(gw, sql)
    try:
        start = sql[:40]
        deadline = time.monotonic() + 15
        while True:
            result = sqlgate("approvals", "list", "-c", config)
            assert result.returncode == 0, result.stderr
            line = next((x for x in result.stdout.splitlines() if start in x), None)
            if line is not None:
                break
            assert time.monotonic() < deadline, result.stdout
            time.sleep(0.2)
        assert line.endswith("...") and "DROP COLUMN" not in line  # cut to 200
        rid = request_id(line)
        shown = sqlgate("approvals", "show", rid, "-c", config)
        assert shown.returncode == 0 and shown.stderr == "", shown.stderr
        head, statement = shown.stdout.split(f"statement, whole ({len(sql):,} characters):\n")
        assert statement == sql + "\n"  # as sent: the DROP on its own line
        lines = head.splitlines()
        assert lines[0] == f"id {rid}"
        assert re.fullmatch(r"from agent on test-gw/orders, schema shop, \d+s left", lines[1]), (
            lines[1]
        )
        assert lines[2].startswith("rule ") and lines[3].startswith("sha256 ")
        assert len(lines) == 4
        helped = sqlgate("approvals", "approve", "--help")
        assert "read it first with 'approvals show ID'" in " ".join(helped.stdout.split())
        denied = sqlgate("approvals", "deny", rid, "-c", config, "--token-file", tokens["dba"])
        assert denied.returncode == 0, denied.stderr
        assert held.result() is not None
    finally:
        held.close()
    gone = sqlgate("approvals", "show", rid, "-c", config)
    assert one_line(gone, 1) == f"sqlgate: no pending approval {rid}"
    bad = sqlgate("approvals", "show", "sqlgate/#", "-c", config)
    assert "ID 'sqlgate/#'" in one_line(bad, 2)


def test_list_and_show_escape_what_would_not_show_as_itself(
    gw: GatewayProcess, config: Path, tokens: dict[str, Path]
) -> None:
    """U+00A0 and U+3164 printed as blanks (``list``, and ``show`` for U+3164), yet the
    server reads them as letters of a name: ``--`` and one of them starts no comment.
    They are escaped, and ``show`` names the characters outside ASCII (a Cyrillic
    ``о`` passes for an ``o``)."""
    sql = "ALTER TABLE appr_cli COMMENT 'r\u043eute\u00a0A' --\u3164x /*\u202e*/"
    held = Held(gw, sql)
    try:
        escaped = "ALTER TABLE appr_cli COMMENT 'r\u043eute\\xa0A' --\\u3164x /*\\u202e*/"
        rid = request_id(listed(config, escaped))
        shown = sqlgate("approvals", "show", rid, "-c", config)
        assert shown.returncode == 0 and shown.stderr == "", shown.stderr
        head, statement = shown.stdout.split(f"statement, whole ({len(sql):,} characters):\n")
        assert statement == escaped + "\n"
        assert head.splitlines()[-1] == (
            "outside ASCII (each may look like another): \u043e U+043E CYRILLIC SMALL LETTER O"
        )
        denied = sqlgate("approvals", "deny", rid, "-c", config, "--token-file", tokens["dba"])
        assert denied.returncode == 0, denied.stderr
        assert held.result() is not None
    finally:
        held.close()


def test_approve_lets_the_held_client_finish(
    gw: GatewayProcess,
    config: Path,
    tokens: dict[str, Path],
    mariadb: MariaDB,
) -> None:
    sql = "ALTER TABLE appr_cli ADD COLUMN note VARCHAR(20)"
    held = Held(gw, sql)
    try:
        rid = request_id(listed(config, sql))
        result = sqlgate(
            "approvals",
            "approve",
            rid,
            "-c",
            config,
            "--token-file",
            tokens["dba"],
            "--reason",
            "planned change",
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"approved {rid}\n" and result.stderr == ""
        secrets_absent(result, tokens["dba"].read_text().strip())
        assert held.result() is None
        columns = mariadb.admin_sql(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'shop' AND table_name = 'appr_cli'"
        )
        assert "note" in [str(row[0]) for row in columns]
    finally:
        held.close()
        mariadb.admin_sql("ALTER TABLE shop.appr_cli DROP COLUMN IF EXISTS note")
    assert rid not in sqlgate("approvals", "list", "-c", config).stdout
    time.sleep(0.2)
    export = sqlgate("ledger", "export", "--ledger", gw.ledger, "--kind", "approval")
    approvals = [json.loads(line) for line in export.stdout.splitlines()]
    approval = next(r for r in approvals if r.get("request") == rid)
    assert approval["decision"] == "approved" and approval["approver"] == APPROVER
    assert approval["reason"] == "planned change"


def test_approve_with_a_grant_lets_the_same_shape_through(
    gw: GatewayProcess,
    config: Path,
    tokens: dict[str, Path],
    mariadb: MariaDB,
) -> None:
    sql = "ALTER TABLE appr_cli COMMENT = 'one'"
    held = Held(gw, sql)
    try:
        rid = request_id(listed(config, sql))
        result = sqlgate(
            "approvals",
            "approve",
            rid,
            "-c",
            config,
            "--token-file",
            tokens["dba"],
            "--grant-minutes",
            "10",
        )
        assert result.returncode == 0, result.stderr
        assert held.result() is None
    finally:
        held.close()
    with gw.connect(database="shop") as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE appr_cli COMMENT = 'two'")  # no request: granted
    time.sleep(0.2)
    export = sqlgate("ledger", "export", "--ledger", gw.ledger, "--kind", "approval")
    approval = next(json.loads(line) for line in export.stdout.splitlines() if rid in line)
    assert approval["grant_minutes"] == 10
    bad = sqlgate(
        "approvals",
        "approve",
        rid,
        "-c",
        config,
        "--token-file",
        tokens["dba"],
        "--grant-minutes",
        "5000",
    )
    assert bad.returncode == 2 and "--grant-minutes" in bad.stderr
    # 0 was taken as "no grant" while 5000 was refused
    zero = sqlgate(
        "approvals", "approve", rid, "-c", config, "--token-file", tokens["dba"],
        "--grant-minutes", "0",
    )  # fmt: skip
    assert zero.returncode == 2, zero.stdout
    assert zero.stderr == "sqlgate: --grant-minutes: expected 1 to 1440, not 0\n"


def test_deny_gives_the_client_1227_with_the_reason(
    gw: GatewayProcess, config: Path, tokens: dict[str, Path], mariadb: MariaDB
) -> None:
    sql = "DROP TABLE appr_cli"
    held = Held(gw, sql)
    try:
        rid = request_id(listed(config, sql))
        result = sqlgate(
            "approvals",
            "deny",
            rid,
            "-c",
            config,
            "--token-file",
            tokens["dba"],
            "--reason",
            "we still need that table",
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"denied {rid}\n"
        error = held.result()
    finally:
        held.close()
    assert error is not None and error[0] == 1227
    assert error[1] == (
        f"sqlgate: denied by {APPROVER}: we still need that table. The statement did not run"
    )
    assert mariadb.admin_sql("SELECT COUNT(*) FROM shop.appr_cli")[0][0] == 2


def test_a_token_that_is_not_an_approvers_changes_nothing(
    gw: GatewayProcess, config: Path, tokens: dict[str, Path], mariadb: MariaDB
) -> None:
    sql = "ALTER TABLE appr_cli ADD COLUMN eve INT"
    held = Held(gw, sql)
    try:
        rid = request_id(listed(config, sql))
        result = sqlgate("approvals", "approve", rid, "-c", config, "--token-file", tokens["eve"])
        line = one_line(result, 1)
        assert line.startswith(f"sqlgate: the gateway did not accept the decision on {rid}: ")
        assert result.stdout == ""
        secrets_absent(result, tokens["eve"].read_text().strip())
        assert not held.done.is_set()  # still held, and still listed
        assert rid in sqlgate("approvals", "list", "-c", config).stdout
        denied = sqlgate("approvals", "deny", rid, "-c", config, "--token-file", tokens["dba"])
        assert denied.returncode == 0, denied.stderr
        error = held.result()
    finally:
        held.close()
    assert error is not None and error[0] == 1227
    assert mariadb.admin_sql("SELECT COUNT(*) FROM shop.appr_cli")[0][0] == 2


def held_once_the_broker_is_back(gw: GatewayProcess, sql: str, timeout: float = 30) -> Held:
    """``sql`` held for approval: a test before may have restarted the broker, and until
    the gateway is back on it a statement for review is refused at once."""
    deadline = time.monotonic() + timeout
    while True:
        held = Held(gw, sql)
        if not held.done.wait(1.0):
            return held
        held.close()
        assert time.monotonic() < deadline, "the gateway never got back on the broker"


def columns(mariadb: MariaDB) -> list[str]:
    rows = mariadb.admin_sql(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'shop' AND table_name = 'appr_cli'"
    )
    return [str(row[0]) for row in rows]


def mosquitto_pub(broker: Broker, topic: str, message: str) -> None:
    """Publish as the gateway's user, retained: a stand-in for a gateway."""
    publish(broker, broker.gateway_user, topic, message, retain=True)


def test_a_decision_that_nobody_takes_up_exits_1_after_5s(
    config: Path, broker: Broker, tokens: dict[str, Path]
) -> None:
    """A request whose gateway is gone (and so says nothing about the decision)."""
    rid = "f" * 32
    topic = f"{broker.prefix}/gone-gw/approvals/{rid}"
    request = {
        "v": 1,
        "appliance": "gone-gw",
        "identity": "agent",
        "target": "orders",
        "sql": "ALTER TABLE t ADD COLUMN c INT",
        "id": rid,
        "sql_sha256": "0" * 64,
        "requested_at": time.time(),
        "expires_at": time.time() + 60,
    }
    mosquitto_pub(broker, topic, json.dumps(request))
    try:
        line = listed(config, request["sql"])
        assert line.startswith(f"{rid}  agent  gone-gw/orders  ")
        started = time.monotonic()
        result = sqlgate("approvals", "deny", rid, "-c", config, "--token-file", tokens["dba"])
        assert 4.5 < time.monotonic() - started < 15
        line = one_line(result, 1)
        assert line.startswith(
            f"sqlgate: the gateway did not accept the decision on {rid}: "
            "it is still pending after 5s. Likely: the token is not valid for this gateway"
        )
    finally:
        mosquitto_pub(broker, topic, "")


def test_a_request_of_a_gateway_that_is_offline_is_not_sent_a_decision(
    config: Path, broker: Broker, tokens: dict[str, Path]
) -> None:
    """A gateway killed while a request was pending leaves it retained, and its will says
    ``offline``: ``list`` and ``show`` say so, and a decision is refused at once (it was
    sent, with the operator's token, to nobody; after 5 s it blamed the token)."""
    rid = "e" * 32
    topic = f"{broker.prefix}/dead-gw/approvals/{rid}"
    status = f"{broker.prefix}/dead-gw/status"
    now = time.time()
    request = {"v": 1, "appliance": "dead-gw", "identity": "agent", "target": "orders"}
    request |= {"sql": "DROP TABLE dead_t", "id": rid, "sql_sha256": "0" * 64}
    request |= {"requested_at": now, "expires_at": now + 60}
    mosquitto_pub(broker, status, json.dumps({"v": 1, "appliance": "dead-gw", "state": "offline"}))
    mosquitto_pub(broker, topic, json.dumps(request))
    try:
        listed(config, request["sql"])  # listed: it is on the broker
        result = sqlgate("approvals", "list", "-c", config, "--appliance", "dead-gw")
        assert result.returncode == 0 and rid in result.stdout
        assert result.stderr == (
            "note: gateway 'dead-gw' is offline: its requests listed are left from a run "
            "that ended, and nobody can decide them\n"
        )
        shown = sqlgate("approvals", "show", rid, "-c", config)
        assert shown.stdout.splitlines()[1].startswith("gateway OFFLINE: ")
        started = time.monotonic()
        refused = sqlgate("approvals", "approve", rid, "-c", config, "--token-file", tokens["dba"])
        assert time.monotonic() - started < 4.5
        assert one_line(refused, 1) == (
            f"sqlgate: approval {rid} is left from a run of gateway 'dead-gw' that ended (its "
            "status is offline): nobody can decide it; the gateway clears it when it starts again"
        )
        mosquitto_pub(broker, status, json.dumps({"v": 1, "state": "online"}))  # back
        back = sqlgate("approvals", "list", "-c", config, "--appliance", "dead-gw")
        assert rid in back.stdout and back.stderr == ""
    finally:
        mosquitto_pub(broker, topic, "")
        mosquitto_pub(broker, status, "")


def test_an_unknown_id_exits_1(gw: GatewayProcess, config: Path, tokens: dict[str, Path]) -> None:
    result = sqlgate("approvals", "approve", "0" * 32, "-c", config, "--token-file", tokens["dba"])
    assert one_line(result, 1) == f"sqlgate: no pending approval {'0' * 32}"


@pytest.mark.parametrize(
    "case", ["missing", "empty", "not a JWT", "no email claim", "bad id", "no [bus]"]
)
def test_bad_input_is_one_line_and_exit_2(
    case: str, config: Path, broker: Broker, provider: Provider, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    args = ["approvals", "approve", "a" * 32, "-c", str(config), "--token-file", str(token_file)]
    secret = "not-a-jwt-but-secret"
    if case == "empty":
        token_file.write_text("\n")
    elif case == "not a JWT":
        token_file.write_text(secret + "\n")
    elif case == "no email claim":
        token_file.write_text(provider.token(email=None))
    elif case == "bad id":
        token_file.write_text(provider.token())
        args[2] = "sqlgate/#"
    elif case == "no [bus]":
        token_file.write_text(provider.token())
        args[4] = str(operator_config(tmp_path / "nobus", broker, bus=False))
    result = sqlgate(*args)
    line = one_line(result, 2)
    assert line.startswith("sqlgate: ") and result.stdout == ""
    secrets_absent(result, secret)
    expected = {
        "missing": "cannot read the file",
        "empty": "the file is empty",
        "not a JWT": "is not a JWT",
        "no email claim": "has no 'email' claim",
        "bad id": "ID 'sqlgate/#'",
        "no [bus]": "no [bus] section",
    }[case]
    assert expected in line


def test_list_with_the_broker_down_exits_1(
    gw: GatewayProcess, config: Path, broker: Broker
) -> None:
    broker.stop()
    try:
        result = sqlgate("approvals", "list", "-c", config)
    finally:
        broker.start()
    line = one_line(result, 1)
    assert line.startswith("sqlgate: cannot connect to the MQTT broker at mqtt://")
    assert result.stdout == ""


def test_refused_credentials_exit_1(config: Path, broker: Broker, tmp_path: Path) -> None:
    wrong = operator_config(tmp_path, broker)
    (tmp_path / "bus.pw").write_text("wrong-password\n")
    result = sqlgate("approvals", "list", "-c", wrong)
    line = one_line(result, 1)
    assert "refused the connection as 'operator'" in line
    secrets_absent(result, "wrong-password")


def test_a_listed_statement_is_one_line_cut_to_the_width() -> None:
    from appliance.operator import Request, format_request

    request = Request(
        id="a1",
        appliance="edge-1",
        identity="agent@example.com",
        target="orders",
        sql="UPDATE t\n  SET a = '\x1b[2J'\tWHERE id = 1 " + "x" * 300,
        sql_sha256="0" * 64,
        requested_at=100.0,
        expires_at=220.0,
    )
    line = format_request(request, now=110.2, width=200)
    assert len(line) == 200 and line.endswith("...")
    assert line.startswith(
        "a1  agent@example.com  edge-1/orders  110s left  UPDATE t \u23ce SET a = '\\x1b[2J' WHERE"
    )
    assert format_request(request, now=500.0).split("  ")[3] == "0s left"


def test_a_shown_statement_folds_runs_of_blanks_and_blank_lines_saying_how_many() -> None:
    """BUG: 300 blank lines inside a string scrolled the DELETE, and the lines saying who
    asks and by which rule, off the terminal, leaving a SELECT in view; they then showed
    on one line as 298 ``\\x0a``, and 300 spaces before an ``OR 1=1`` pushed it past the
    edge of a pager that does not wrap, where ``sqlgate replay`` counts both. Two blank
    lines or more show as one line saying how many, a run of more than 16 blanks as one
    marker saying how many, as in replay; single blank lines and short runs stay."""
    from appliance.operator import Request, format_whole

    sql = "DELETE FROM orders WHERE note <> '" + "\n" * 300 + "SELECT id FROM orders WHERE id = 42'"
    request = Request(
        id="a1",
        appliance="edge-1",
        identity="agent@example.com",
        target="orders",
        sql=sql,
        sql_sha256="0" * 64,
        requested_at=100.0,
        expires_at=220.0,
    )
    whole = format_whole(request, now=110.2)
    assert whole.count("\n") < 12
    assert whole.endswith(
        "DELETE FROM orders WHERE note <> '\n\u27e8299 blank lines\u27e9\n"
        "SELECT id FROM orders WHERE id = 42'"
    )
    padded = dataclasses.replace(request, sql="DELETE FROM t WHERE id = 1" + " " * 300 + "OR 1=1")
    assert format_whole(padded, now=0).endswith("WHERE id = 1\u27e8300 spaces\u27e9OR 1=1")
    one_blank = dataclasses.replace(request, sql="UPDATE t\n\nSET a = 1\n \n\t\nWHERE b\t\t= 2")
    assert format_whole(one_blank, now=0).endswith(
        "UPDATE t\n\nSET a = 1\n\u27e82 blank lines\u27e9\nWHERE b\t\t= 2"
    )


def test_a_shown_statement_keeps_its_lines_and_says_when_it_was_cut() -> None:
    from appliance.operator import Request, format_request, format_whole

    request = Request(
        id="a1",
        appliance="edge-1",
        identity="agent@example.com",
        target="orders",
        sql="UPDATE t -- x\n  SET a = '\x1b[2J'\rWHERE id = 1 \u202e" + "x" * 300,
        sql_sha256="0" * 64,
        requested_at=100.0,
        expires_at=220.0,
        rule="review",
        reason="an UPDATE needs a person",
    )
    assert format_whole(request, now=110.2) == (
        "id a1\n"
        "from agent@example.com on edge-1/orders, schema NOT KNOWN (sent before a USE was "
        "answered: it may run in either), 110s left\n"
        "rule review: an UPDATE needs a person\n"
        f"sha256 {'0' * 64}\n"
        "statement, whole (345 characters):\n"
        "UPDATE t -- x\n  SET a = '\\x1b[2J'\\x0dWHERE id = 1 \\u202e" + "x" * 300
    )
    # the schema it runs in and the rows it would touch are what an approver weighs
    counted = operator.Request.from_message(
        "edge-1",
        "a1",
        json.dumps(
            {"v": 1, "sql_sha256": "0" * 64, "db": "shop", "rows_estimate": 1234, "sql": "x"}
        ).encode(),
    )
    assert counted is not None
    assert format_whole(counted, now=0).splitlines()[1:4] == [
        "from ? on edge-1/?, schema shop, 0s left",
        "rule ?: ?",
        "rows it would touch: 1,234 (counted before approval)",
    ]
    spoofed = dataclasses.replace(
        request, sql="DELETE FROM t WHERE id = 2 --\u00a0x OR 1 --\u3164y e\u0301\ufe0f"
    )
    assert format_request(spoofed, now=110.2).endswith(
        "DELETE FROM t WHERE id = 2 --\\xa0x OR 1 --\\u3164y e\\u0301\\ufe0f"
    )
    assert format_whole(spoofed, now=110.2).endswith(
        "DELETE FROM t WHERE id = 2 --\\xa0x OR 1 --\\u3164y e\\u0301\\ufe0f"
    )
    assert "outside ASCII" not in format_whole(spoofed, now=110.2)
    cut = dataclasses.replace(request, sql_truncated=True)
    assert "statement: ONLY ITS FIRST 345 CHARACTERS came (the gateway cut it" in format_whole(
        cut, now=110.2
    )


def test_an_approval_of_a_request_another_operator_denied_first_does_not_say_approved(
    gw: GatewayProcess,
    broker: Broker,
    provider: Provider,
    config: Path,
    tokens: dict[str, Path],
    mariadb: MariaDB,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two operators on one request: the other one's denial came first, while this
    approval was on its way. The request was cleared, which the command took for its own
    approval counting: it said ``approved`` of a statement that was refused."""
    sql = "ALTER TABLE appr_cli ADD COLUMN late INT"
    held = held_once_the_broker_is_back(gw, sql)
    send = operator._Connection.publish

    async def denied_first(connection: operator._Connection, topic: str, payload: bytes) -> None:
        other = {"v": 1, "decision": "deny", "operator": "dba2@example.com"}
        other |= {"token": provider.token(email="dba2@example.com", groups=["dba"])}
        other |= {"sql_sha256": json.loads(payload)["sql_sha256"], "reason": "not today"}
        publish(broker, broker.operator_user, topic, json.dumps(other))
        await asyncio.to_thread(held.result)  # it was denied and its request cleared
        await send(connection, topic, payload)

    monkeypatch.setattr(operator._Connection, "publish", denied_first)
    try:
        rid = request_id(listed(config, sql))
        token = tokens["dba"].read_text().strip()
        with pytest.raises(operator.OperatorError) as info:
            asyncio.run(
                operator.decide(
                    broker.bus_config(Broker.operator_user), rid, "approve", token, APPROVER
                )
            )
        error = held.result()
    finally:
        held.close()
    assert "the request ended otherwise: denied by dba2@example.com (not today)" in str(info.value)
    assert error is not None and error[0] == 1227
    assert "late" not in columns(mariadb)


def test_an_approval_the_gateway_could_not_record_does_not_say_approved(
    gw: GatewayProcess, config: Path, tokens: dict[str, Path], mariadb: MariaDB
) -> None:
    """The gateway refuses an approved statement whose approval it cannot write (1105, it
    does not run) and clears the request: the command took the clear for its approval
    counting and said ``approved`` of a statement that never ran."""
    sql = "ALTER TABLE appr_cli ADD COLUMN unrecorded INT"
    held = Held(gw, sql)
    lock = sqlite3.connect(gw.ledger, isolation_level=None, timeout=30)
    try:
        rid = request_id(listed(config, sql))
        lock.execute("BEGIN EXCLUSIVE")  # the ledger cannot be written now
        result = sqlgate("approvals", "approve", rid, "-c", config, "--token-file", tokens["dba"])
        error = held.result()
    finally:
        lock.close()
        held.close()
    assert result.stdout == ""
    assert one_line(result, 1).startswith(
        f"sqlgate: approval {rid} was cleared, but its approval record did not come within 3s: "
        "the decision may not have counted"
    )
    assert error is not None and error[0] == 1105
    assert "unrecorded" not in columns(mariadb)


def test_a_retained_request_that_cannot_be_read_is_skipped_not_a_traceback() -> None:
    """One bad retained message (nested past the parser's depth, a time past a float's
    range) ended ``list`` for every appliance with a traceback."""
    deep = b"[" * 100_000 + b"]" * 100_000
    assert operator.Request.from_message("gw", "r1", deep) is None
    assert operator._alert_reason(deep, "r1") is None
    body = {"v": 1, "sql_sha256": "0" * 64, "sql": "SELECT 1", "expires_at": 10**400}
    request = operator.Request.from_message("gw", "r1", json.dumps(body).encode())
    assert request is not None and request.expires_at == 0.0 and request.sql == "SELECT 1"
