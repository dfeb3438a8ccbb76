"""The ``sqlgate`` command line, run as a real process: exit codes, and every failure is
exactly one line on stderr, never a traceback."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lab.clients import run_sqlgate as sqlgate
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB
from lab.tokens import write_jwks

from appliance.cli import build_parser, main
from appliance.ledger.chain import generate_key, private_key_pem
from appliance.mysql.auth import native_password_hash

CONFIG = """
[appliance]
name = "edge-1"
listen = "127.0.0.1:3307"
default_target = "orders"
state_dir = "state"

[[targets]]
name = "orders"
host = "10.77.2.10"
user = "sqlgate"
password_file = "orders.pw"
allow_groups = ["agents"]

[ledger]
path = "ledger.db"
signing_key = "ledger.key"
"""


def assert_one_line_failure(result: subprocess.CompletedProcess[str], status: int = 2) -> str:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stderr.endswith("\n")
    return lines[0]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (tmp_path / "orders.pw").write_text("orders-secret\n")
    (tmp_path / "ledger.key").write_bytes(private_key_pem(generate_key()))
    (tmp_path / "ledger.key").chmod(0o600)  # the gateway refuses a key others can read
    path = tmp_path / "sqlgate.toml"
    path.write_text(CONFIG)
    return path


def test_check_ok(config_file: Path) -> None:
    result = sqlgate("check", "-c", str(config_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok: {config_file}: 1 targets\n"
    assert result.stderr == ""


def test_check_escapes_the_file_name_it_echoes(config_file: Path) -> None:
    """A file name with a line break split the one line of output, as errors do not."""
    odd = config_file.with_name("sql\ngate.toml")
    odd.write_text(config_file.read_text())
    result = sqlgate("check", "-c", str(odd))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok: {config_file.parent}/sql\\ngate.toml: 1 targets\n"


def test_check_long_option(config_file: Path) -> None:
    assert sqlgate("check", "--config", str(config_file)).returncode == 0


def test_operator_commands_need_none_of_the_gateways_secrets(config_file: Path) -> None:
    """An operator's desk has the configuration, not the vaulted password, the TLS keys
    or the ledger key: the console and `approvals` refused to start without them."""
    with socket.socket() as probe:  # a broker port where nobody listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config_file.write_text(
        CONFIG
        + '\n[tls]\ncert_file = "gateway.crt"\nkey_file = "gateway.key"\n'
        + f'\n[bus]\nurl = "mqtt://127.0.0.1:{port}"\n'
        + '\n[identity]\nissuer = "https://idp.example"\naudience = "sqlgate"\n'
        + 'jwks_url = "https://idp.example/jwks"\n\n[approvals]\n'
    )
    (config_file.parent / "orders.pw").unlink()
    (config_file.parent / "ledger.key").unlink()
    line = assert_one_line_failure(sqlgate("approvals", "list", "-c", str(config_file)), 1)
    assert "broker" in line and "password_file" not in line, line
    # the gateway itself still needs every one of them
    line = assert_one_line_failure(sqlgate("check", "-c", str(config_file)))
    assert "password_file" in line or "cert_file" in line, line


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("127.0.0.1:3307", "127.0.0.1", 3307), ("0.0.0.0:3307", "127.0.0.1", 3307)],
)
def test_check_refuses_a_target_that_is_the_gateway_itself(
    config_file: Path, listen: str, host: str, port: int
) -> None:
    """The gateway would dial its own listener for every client (run refuses each such
    connection with 1105); check said ok. A target on another port of the host is fine."""
    text = CONFIG.replace('"127.0.0.1:3307"', f'"{listen}"')
    config_file.write_text(text.replace('host = "10.77.2.10"', f'host = "{host}"\nport = {port}'))
    line = assert_one_line_failure(sqlgate("check", "-c", str(config_file)))
    assert line == (
        f"sqlgate: {config_file}: targets[0]: {host}:{port} is this gateway's own listener "
        f"(appliance.listen '{listen}'): every client would be sent to the gateway again; "
        "give the database's address and port"
    )
    config_file.write_text(text.replace('host = "10.77.2.10"', f'host = "{host}"\nport = 3306'))
    assert sqlgate("check", "-c", str(config_file)).returncode == 0


def test_check_invalid_config_names_file_and_key(config_file: Path) -> None:
    config_file.write_text(CONFIG.replace("password_file", "pasword_file"))
    line = assert_one_line_failure(sqlgate("check", "-c", str(config_file)))
    assert line.startswith(f"sqlgate: {config_file}: targets[0].pasword_file: unknown key")


def test_check_missing_secret(config_file: Path) -> None:
    (config_file.parent / "orders.pw").unlink()
    line = assert_one_line_failure(sqlgate("check", "-c", str(config_file)))
    assert line.startswith(f"sqlgate: {config_file}: targets[0].password_file: cannot read ")


def test_check_toml_syntax_error(config_file: Path) -> None:
    config_file.write_text(CONFIG + "\n[ledger\n")
    line = assert_one_line_failure(sqlgate("check", "-c", str(config_file)))
    assert line.startswith(f"sqlgate: {config_file}: invalid TOML: ")
    assert "line " in line


def test_check_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    line = assert_one_line_failure(sqlgate("check", "-c", str(missing)))
    assert line == f"sqlgate: {missing}: cannot read the file: No such file or directory"


def test_check_config_is_a_directory(tmp_path: Path) -> None:
    line = assert_one_line_failure(sqlgate("check", "-c", str(tmp_path)))
    assert line == f"sqlgate: {tmp_path}: cannot read the file: is a directory"


def test_check_with_an_empty_config_name_says_so() -> None:
    """An empty name used to read as the current directory ("is a directory")."""
    line = assert_one_line_failure(sqlgate("check", "-c", ""))
    assert line == "sqlgate: -c: the configuration file's name is empty"


def test_run_invalid_config_exits_2(config_file: Path) -> None:
    config_file.write_text(CONFIG.replace('"127.0.0.1:3307"', '"127.0.0.1"'))
    line = assert_one_line_failure(sqlgate("run", "-c", str(config_file)))
    assert line.startswith(f"sqlgate: {config_file}: appliance.listen: ")


def test_run_missing_config_exits_2(tmp_path: Path) -> None:
    assert_one_line_failure(sqlgate("run", "-v", "-c", str(tmp_path / "absent.toml")))


def test_unknown_subcommand() -> None:
    line = assert_one_line_failure(sqlgate("frobnicate"))
    assert line.startswith("sqlgate: ")
    assert "frobnicate" in line


def test_no_subcommand() -> None:
    line = assert_one_line_failure(sqlgate())
    assert line.startswith("sqlgate: ")


def test_unknown_option() -> None:
    line = assert_one_line_failure(sqlgate("check", "--colour"))
    assert line.startswith("sqlgate: unrecognized arguments: --colour")


def test_missing_required_argument() -> None:
    line = assert_one_line_failure(sqlgate("keygen"))
    assert line.startswith("sqlgate: the following arguments are required: --out")


def test_replay_of_an_unknown_session_is_one_line_and_exit_1(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    (tmp_path / "keys").mkdir()
    assert sqlgate("keygen", "--out", str(tmp_path / "keys")).returncode == 0
    import sqlite3

    from appliance.ledger.store import APPLICATION_ID

    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE records (seq INTEGER PRIMARY KEY, ts TEXT, kind TEXT, "
            "session TEXT, body TEXT)"
        )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    result = sqlgate("replay", "S1", "--ledger", str(db))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"sqlgate: {db}: no session S1 (sqlgate ledger export --ledger {db} "
        "--kind session_start lists them)\n"
    )


def test_version() -> None:
    result = sqlgate("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("sqlgate ")


# In-process: main() returns the status instead of exiting, for every command of SPEC §3.


def test_replay_of_a_missing_ledger_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "S1", "--ledger", str(tmp_path / "db"), "--speed", "2.5"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"sqlgate: {tmp_path / 'db'}: no such file\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["net"],
        ["ledger", "verify", "--ledger", "db"],
        ["replay", "S1", "--ledger", "db", "--speed", "0"],
        ["approvals", "approve", "A1", "-c", "f"],
    ],
)
def test_usage_errors_return_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sqlgate: ") and err.count("\n") == 1


def test_help_returns_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    commands = ("run", "check", "keygen", "account", "net", "ledger", "replay", "approvals", "tui")
    for command in commands:
        assert command in out


def test_config_defaults_to_etc() -> None:
    args = build_parser().parse_args(["check"])
    assert args.config == "/etc/sqlgate/sqlgate.toml"


# net: what needs no kernel (the namespaces tests cover apply, remove, status, probe)


def test_net_apply_dry_run_prints_the_plan(config_file: Path) -> None:
    result = sqlgate("net", "apply", "--dry-run", "-c", str(config_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("table inet sqlgate {")
    assert "redirect to :" in result.stdout
    assert 'comment "sqlgate:bypass-drop:' in result.stdout


def test_net_commands_with_a_missing_config_exit_2(tmp_path: Path) -> None:
    for action in ("apply", "remove", "status"):
        assert_one_line_failure(sqlgate("net", action, "-c", str(tmp_path / "nope.toml")))


@pytest.mark.parametrize(
    "target",
    [
        "10.0.0.1:0",
        "10.0.0.1:99999",
        "[::1",
        "host:port",
        ":3306",
        "::1]:x",
        "[db]:3306",
        "a:b:c",
        "db..example:3306",
        "a" * 64 + ".example",
        "-db.example",
    ],
)
def test_net_probe_bad_target_exits_2(target: str) -> None:
    err = assert_one_line_failure(sqlgate("net", "probe", "--target", target))
    assert "--target" in err


def test_net_probe_reads_the_configuration_it_is_given(tmp_path: Path) -> None:
    """``-c`` was accepted and never read: a missing or broken file went unnoticed."""
    for bad in (tmp_path / "absent.toml", tmp_path):
        err = assert_one_line_failure(
            sqlgate("net", "probe", "-c", str(bad), "--target", "127.0.0.1:1")
        )
        assert err.startswith(f"sqlgate: {bad}"), err
    (tmp_path / "broken.toml").write_text("[appliance\n")
    err = assert_one_line_failure(
        sqlgate("net", "probe", "-c", str(tmp_path / "broken.toml"), "--target", "127.0.0.1:1")
    )
    assert "broken.toml" in err, err
    err = assert_one_line_failure(sqlgate("net", "probe"))
    assert err == "sqlgate: net probe: give --target HOST[:PORT], or -c FILE to probe its targets"


def test_net_probe_without_a_target_probes_each_of_the_configurations(
    gateway: GatewayProcess, mariadb: MariaDB, tmp_path: Path
) -> None:
    """Each target is probed in turn (exit 0 only when every one is intercepted): here
    the gateway's own address, and the database's, which answers for itself."""
    config = tmp_path / "sqlgate.toml"
    text = gateway.config_path.read_text()
    through = text.replace('name = "orders"', 'name = "through"').replace(
        f"port = {mariadb.port}\n", f"port = {gateway.port}\n"
    )
    config.write_text(text + through[through.index("[[targets]]") : through.index("[ledger]")])
    (tmp_path / "orders.pw").write_text("x\n")
    done = sqlgate("net", "probe", "-c", str(config))
    assert done.returncode == 1, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith(f"NOT intercepted 127.0.0.1:{mariadb.port}: "), first
    assert second.startswith(f"intercepted 127.0.0.1:{gateway.port}: "), second
    one = sqlgate("net", "probe", "-c", str(config), "--target", f"127.0.0.1:{gateway.port}")
    assert one.returncode == 0 and one.stdout.startswith("intercepted "), one


def test_net_apply_unknown_interface_exits_2(config_file: Path) -> None:
    text = config_file.read_text() + '\n[network]\ninterfaces = ["nosuch0"]\n'
    config_file.write_text(text)
    err = assert_one_line_failure(sqlgate("net", "apply", "-c", str(config_file)))
    assert "network.interfaces[0]" in err and "nosuch0" in err


def test_net_apply_target_without_an_address_exits_2(config_file: Path) -> None:
    text = config_file.read_text().replace('host = "10.77.2.10"', 'host = "db.invalid"')
    config_file.write_text(text)
    err = assert_one_line_failure(sqlgate("net", "apply", "--dry-run", "-c", str(config_file)))
    assert "targets[0].host" in err and "db.invalid" in err


def test_net_apply_multicast_target_exits_2(config_file: Path) -> None:
    text = config_file.read_text().replace('host = "10.77.2.10"', 'host = "224.0.0.5"')
    config_file.write_text(text)
    err = assert_one_line_failure(sqlgate("net", "apply", "-c", str(config_file)))
    assert "targets[0].host" in err


@pytest.mark.parametrize(
    ("listen", "host", "problem"),
    [
        ("127.0.0.1:3307", "10.77.2.10", "appliance.listen: '127.0.0.1:3307' is a loopback"),
        ("0.0.0.0:3307", "fd77:2::10", "appliance.listen: '0.0.0.0:3307' takes IPv4 only"),
        ("[::]:3307", "db.invalid", "targets[0].host: cannot use 'db.invalid': "),
    ],
)
def test_check_with_manage_rules_finds_what_would_refuse_redirected_clients(
    config_file: Path, listen: str, host: str, problem: str
) -> None:
    """`check` passed these, and `run` then refused every redirected client (or could
    not install the rules)."""
    text = (
        config_file.read_text()
        .replace('listen = "127.0.0.1:3307"', f'listen = "{listen}"')
        .replace('host = "10.77.2.10"', f'host = "{host}"')
    )
    config_file.write_text(text + "\n[network]\nmanage_rules = true\n")
    line = assert_one_line_failure(sqlgate("check", "-c", str(config_file)))
    assert line.startswith(f"sqlgate: {config_file}: {problem}"), line
    config_file.write_text(
        text.replace(f'listen = "{listen}"', 'listen = "[::]:3307"').replace(
            f'host = "{host}"', 'host = "fd77:2::10"'
        )
        + "\n[network]\nmanage_rules = true\n"
    )
    assert sqlgate("check", "-c", str(config_file)).returncode == 0


def test_run_with_rules_it_cannot_install_exits_1_in_one_line(config_file: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = (
        config_file.read_text()
        .replace('listen = "127.0.0.1:3307"', f'listen = "127.0.0.1:{port}"')
        .replace('host = "10.77.2.10"', 'host = "db.invalid"')
    )
    config_file.write_text(text + "\n[network]\nmanage_rules = true\n")
    assert sqlgate("keygen", "--out", str(config_file.parent / "keys")).returncode == 0
    (config_file.parent / "keys" / "ledger.key").replace(config_file.parent / "ledger.key")
    result = sqlgate("run", "-c", str(config_file))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "cannot install the interception rules" in errors[0]
    assert "targets[0].host" in errors[0]


def test_run_on_a_port_in_use_says_so_in_plain_words(config_file: Path) -> None:
    """It logged asyncio's "error while attempting to bind on address ('127.0.0.1',
    3307): address already in use"."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = config_file.read_text().replace('"127.0.0.1:3307"', f'"127.0.0.1:{port}"')
        config_file.write_text(text.replace('host = "10.77.2.10"', 'host = "127.0.0.1"'))
        result = sqlgate("run", "-c", str(config_file), timeout=60)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].endswith(f"cannot listen on 127.0.0.1:{port}: Address already in use")


def test_run_with_a_bad_ledger_key_exits_2_naming_the_key(config_file: Path) -> None:
    key = config_file.parent / "ledger.key"
    key.write_bytes(b"\x00" * 32)
    line = assert_one_line_failure(sqlgate("run", "-c", str(config_file)))
    assert line == (
        f"sqlgate: {config_file}: ledger.signing_key: {key}: not a PEM private key "
        "(expected 'sqlgate keygen' output)"
    )


def test_tui_speed_without_a_recording_is_a_usage_error(config_file: Path) -> None:
    """``--speed`` paces a recording; with the broker it was silently ignored."""
    line = assert_one_line_failure(sqlgate("tui", "-c", str(config_file), "--speed", "2"))
    assert line == (
        "sqlgate: --speed: only with --recording (the broker's events come as they happen)"
    )


# account hash: the password from stdin (one line) or the terminal (asked twice)


def account_hash(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "account", "hash"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("stdin", ["s3cret pass\n", "s3cret pass", "s3cret pass\r\nignored\n"])
def test_account_hash_reads_one_line_of_stdin(stdin: str) -> None:
    result = account_hash(stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout == native_password_hash(b"s3cret pass") + "\n"
    assert result.stderr == ""


@pytest.mark.parametrize("stdin", ["", "\n"])
def test_account_hash_refuses_an_empty_password(stdin: str) -> None:
    line = assert_one_line_failure(account_hash(stdin))
    assert line == "sqlgate: account hash: the password is empty; a gateway account needs one"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_account_hash_asks_twice_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import getpass

    answers = iter(["pässword", "pässword", "pässword", "typo"])
    prompts: list[str] = []

    def ask(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(sys, "stdin", _Tty())
    monkeypatch.setattr(getpass, "getpass", ask)
    assert main(["account", "hash"]) == 0
    assert capsys.readouterr().out == native_password_hash("pässword".encode()) + "\n"
    assert prompts == ["password: ", "again: "]
    assert main(["account", "hash"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "sqlgate: account hash: the two passwords differ; nothing printed\n"


# --- ledger commands on a small ledger, in-process ---------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> tuple[Path, Path]:
    """A ledger of four statements (sessions S1, S2) and its public key."""
    import asyncio

    from appliance.ledger import LedgerWriter
    from appliance.ledger.chain import public_key_pem

    key = generate_key()
    db, pub = tmp_path / "ledger.db", tmp_path / "ledger.pub"
    pub.write_bytes(public_key_pem(key.public_key()))

    async def write() -> None:
        async with LedgerWriter(db, key, checkpoint_interval=3600) as writer:
            for n in range(4):
                fields = {"kind": "statement", "session": f"S{n % 2 + 1}", "statement_seq": n}
                await writer.append({**fields, "sql": f"SELECT {n}", "decision": "allowed"})

    asyncio.run(write())
    return db, pub


def exported(db: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["ledger", "export", "--ledger", str(db), *args]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out.splitlines()


@pytest.mark.parametrize("since", ["0999-01-01", "0001-01-01T00:00:00+01:00"])
def test_since_before_the_year_1000_matches_every_record(
    ledger: tuple[Path, Path], since: str, capsys: pytest.CaptureFixture[str]
) -> None:
    every = exported(ledger[0], capsys=capsys)
    assert len(every) == 5  # and the checkpoint written at close
    assert exported(ledger[0], "--since", since, capsys=capsys) == every


def test_since_after_the_year_9999_in_utc_matches_nothing(
    ledger: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert exported(ledger[0], "--since", "9999-12-31T23:59:59-01:00", capsys=capsys) == []


def test_export_to_a_closed_stdout_is_one_line_and_exit_1(
    ledger: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["ledger", "export", "--ledger", str(ledger[0])]) == 1
    assert main(["replay", "S1", "--ledger", str(ledger[0])]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "sqlgate: ledger export: standard output is closed: nowhere to write",
        "sqlgate: replay: standard output is closed: nowhere to write",
    ]


def test_a_ledger_behind_a_directory_without_search_permission_cannot_be_opened(
    ledger: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db, pub = ledger
    exists = Path.exists

    def refused(path: Path) -> bool:  # what stat() says as another user (tests run as root)
        if path == db:
            raise PermissionError(13, "Permission denied", str(path))
        return exists(path)

    monkeypatch.setattr(Path, "exists", refused)
    for argv in (
        ["ledger", "export", "--ledger", str(db)],
        ["ledger", "head", "--ledger", str(db)],
        ["ledger", "verify", "--ledger", str(db), "--pubkey", str(pub)],
        ["replay", "S1", "--ledger", str(db)],
    ):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err == f"sqlgate: {db}: cannot open: Permission denied\n"


def test_an_empty_checkpoint_or_session_says_it_is_empty(
    ledger: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--checkpoint ''`` said "--checkpoint: : cannot read the file", ``replay ''`` said
    "no session " with nothing after it."""
    db, pub = ledger
    verify = ["ledger", "verify", "--ledger", str(db), "--pubkey", str(pub), "--checkpoint", ""]
    assert main(verify) == 2
    assert capsys.readouterr().err == (
        "sqlgate: --checkpoint: empty: give a head as JSON text or the file holding it\n"
    )
    assert main(["replay", " ", "--ledger", str(db)]) == 2
    assert capsys.readouterr().err == (
        "sqlgate: replay: the session id is empty (sqlgate ledger export --kind "
        "session_start lists them)\n"
    )


def test_a_checkpoint_nested_too_deeply_is_one_line(
    ledger: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, pub = ledger
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    for held in (str(deep), '{"seq": ' + "[" * 100_000 + "]" * 100_000 + "}"):
        argv = ["ledger", "verify", "--ledger", str(db), "--pubkey", str(pub), "--checkpoint"]
        assert main([*argv, held]) == 2
        err = capsys.readouterr().err
        assert err.startswith("sqlgate: --checkpoint") and err.count("\n") == 1
        assert "nested too deeply" in err


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_files_that_never_end_are_refused_not_read(
    ledger: tuple[Path, Path], fifo: Path, tmp_path: Path
) -> None:
    """A FIFO (no writer: opening it would wait for ever) or a file over 1 MiB, as the
    configuration, the public key or the held checkpoint."""
    db, pub = ledger
    big = tmp_path / "big"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    verify = ("ledger", "verify", "--ledger", str(db), "--pubkey")
    for path, why in ((fifo, "not a regular file"), (big, "larger than 1 MiB")):
        line = assert_one_line_failure(sqlgate("check", "-c", str(path), timeout=20))
        assert line == f"sqlgate: {path}: cannot read the file: {why}"
        line = assert_one_line_failure(sqlgate(*verify, str(path), timeout=20))
        assert line == f"sqlgate: {path}: cannot read the key: {why}"
        result = sqlgate(*verify, str(pub), "--checkpoint", str(path), timeout=20)
        line = assert_one_line_failure(result)
        assert line == f"sqlgate: --checkpoint: {path}: cannot read the file: {why}"


def test_keygen_refuses_an_empty_directory_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["keygen", "--out", ""]) == 2
    assert capsys.readouterr().err == "sqlgate: --out: the directory name is empty\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("speed", ["1e-300", "0.0001", "inf", "1e7"])
def test_replay_speed_out_of_range_is_a_usage_error(
    ledger: tuple[Path, Path], speed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "S1", "--ledger", str(ledger[0]), "--speed", speed]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"sqlgate: argument --speed: '{speed}' must be from 0.001 to 1000000")


@pytest.mark.parametrize(
    "argv",
    [
        [b"ledger", b"export", b"--ledger", b"ledger.db", b"--session", b"s\xff"],
        [b"replay", b"s\xff", b"--ledger", b"ledger.db"],
        [b"net", b"probe", b"-c", b"sqlgate.toml", b"--target", b"h\xff"],
    ],
)
def test_an_argument_that_is_not_utf8_gets_one_line(tmp_path: Path, argv: list[bytes]) -> None:
    result = subprocess.run(
        [sys.executable.encode(), b"-m", b"appliance.cli", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    line = assert_one_line_failure(result)
    assert line.endswith(": the argument is not valid UTF-8 text")


MASKING = """
[[masking]]
column = "shop.customers.card_number"
strategy = "hash"
"""


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        ('state_dir = "/dev/null"', "appliance.state_dir", "/dev/null: not a directory"),
        (
            'state_dir = "state"\n\n[policy]\nmasking_key_file = "short.key"',
            "policy.masking_key_file",
            "a masking key needs at least 16 bytes, it has 8",
        ),
    ],
)
def test_check_finds_a_masking_key_the_gateway_could_not_load(
    config_file: Path, change: str, key: str, problem: str
) -> None:
    """It used to pass check, then `run` failed saying it could not listen."""
    (config_file.parent / "short.key").write_bytes(b"8 bytes!")
    config_file.write_text(CONFIG.replace('state_dir = "state"', change) + MASKING)
    line = assert_one_line_failure(sqlgate("check", "-c", str(config_file)))
    assert line.startswith(f"sqlgate: {config_file}: {key}: ") and problem in line


TLS = '\n[tls]\ncert_file = "pki/server.crt"\nkey_file = "pki/server.key"\n'
IDENTITY = '\n[identity]\nissuer = "https://idp.example"\naudience = "sqlgate"\n'
BUS = '\n[bus]\nurl = "mqtts://127.0.0.1"\nusername = "gw"\n'

# key -> the configuration with {bad} where the key names the file; "state/masking.key"
# is the key made in state_dir (named by appliance.state_dir)
FILE_KEYS = {
    "targets[0].password_file": CONFIG.replace('"orders.pw"', '"{bad}"'),
    "ledger.signing_key": CONFIG.replace('"ledger.key"', '"{bad}"'),
    "targets[0].tls_ca_file": CONFIG.replace(
        'user = "sqlgate"', 'user = "sqlgate"\ntls_ca_file = "{bad}"'
    ),
    "tls.cert_file": CONFIG + TLS.replace('"pki/server.crt"', '"{bad}"'),
    "tls.key_file": CONFIG + TLS.replace('"pki/server.key"', '"{bad}"'),
    "identity.jwks_file": CONFIG + TLS + IDENTITY + 'jwks_file = "{bad}"\n',
    "identity.ca_file": CONFIG + TLS + IDENTITY + 'ca_file = "{bad}"\n',
    "bus.password_file": CONFIG + BUS + 'password_file = "{bad}"\n',
    "bus.ca_file": CONFIG + BUS + 'ca_file = "{bad}"\n',
    "policy.masking_key_file": CONFIG + '\n[policy]\nmasking_key_file = "{bad}"\n' + MASKING,
    "appliance.state_dir": CONFIG + MASKING,
}


@pytest.mark.parametrize("kind", ["fifo", "directory", "over-1-MiB"])
@pytest.mark.parametrize("key", sorted(FILE_KEYS))
def test_check_and_run_refuse_a_file_they_cannot_use_in_one_line(
    config_file: Path, key: str, kind: str
) -> None:
    """Every file the configuration names, as a FIFO (opening it would wait for ever), a
    directory, or more than 1 MiB (of no key, certificate or password): exit 2 and one
    line naming the key, never a traceback (the masking key over 1 MiB or a FIFO in
    state_dir was one; a JWKS file over 1 MiB passed, and the gateway read it whole)."""
    from lab.certs import make_pki

    home = config_file.parent
    make_pki(home / "pki")
    write_jwks(home / "jwks.json")
    (home / "state").mkdir()
    bad = home / "state" / "masking.key" if key == "appliance.state_dir" else home / "bad"
    if kind == "fifo":
        os.mkfifo(bad)
    elif kind == "directory":
        bad.mkdir()
    else:
        bad.write_bytes(b"#" * (1024 * 1024 + 1))
    config_file.write_text(FILE_KEYS[key].format(bad="bad"))
    for command in ("check", "run"):
        line = assert_one_line_failure(sqlgate(command, "-c", str(config_file), timeout=20))
        assert line.startswith(f"sqlgate: {config_file}: {key}: "), line
        assert str(bad) in line, line
        problem = {"fifo": "not a regular file", "directory": "is a directory"}.get(kind)
        if problem is None:  # over 1 MiB: too large, or not what a PEM file holds
            problem = "larger than" if "PEM" not in line else "PEM"
        assert problem in line, line


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        (".", "is a directory: name the ledger's file, such as"),
        ("missing/ledger.db", "missing: no such directory, so the ledger cannot be made there"),
        ("orders.pw/ledger.db", "orders.pw: not a directory, so the ledger cannot be made there"),
        ("fifo", "fifo: not a regular file"),
    ],
    ids=["directory", "missing-directory", "under-a-file", "fifo"],
)
def test_check_refuses_a_ledger_path_no_ledger_can_be_made_at(
    config_file: Path, where: str, problem: str
) -> None:
    """They passed check; the gateway then refused every statement (ledger unavailable).
    A ledger file that does not exist yet is fine (test_check_ok): it is made."""
    os.mkfifo(config_file.parent / "fifo")
    config_file.write_text(CONFIG.replace('path = "ledger.db"', f'path = "{where}"'))
    line = assert_one_line_failure(sqlgate("check", "-c", str(config_file)))
    assert line.startswith(f"sqlgate: {config_file}: ledger.path: ") and problem in line, line


def _write_ledger(path: Path, key_file: Path | None) -> None:
    """A ledger of one signed record, by the key in ``key_file`` (None: a new key)."""
    import asyncio

    from appliance.ledger import LedgerWriter, load_private_key

    key = generate_key() if key_file is None else load_private_key(key_file)

    async def write() -> None:
        async with LedgerWriter(path, key) as writer:
            await writer.append({"kind": "alert", "alert": "test", "reason": "first"})
            await writer.checkpoint()

    asyncio.run(write())


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("other-database", "not a sqlgate ledger; the gateway cannot extend it"),
        ("text", "not a sqlgate ledger (file is not a database); the gateway cannot"),
        ("another-key", "not this public key"),
    ],
)
def test_check_refuses_a_ledger_file_run_could_not_extend(
    config_file: Path, content: str, problem: str
) -> None:
    """check said ok to all of these; run then stopped at once ("cannot open the audit
    ledger"), or (a file that is no database) refused every statement with 1105."""
    import sqlite3

    ledger = config_file.parent / "ledger.db"
    if content == "other-database":
        with contextlib.closing(sqlite3.connect(ledger)) as conn:
            conn.execute("CREATE TABLE orders (id INTEGER)")
            conn.commit()
    elif content == "text":
        ledger.write_text(CONFIG)
    else:
        _write_ledger(ledger, None)
    before = ledger.read_bytes()
    line = assert_one_line_failure(sqlgate("check", "-c", str(config_file)))
    assert line.startswith(f"sqlgate: {config_file}: ledger.path: {ledger}: "), line
    assert problem in line, line
    if content == "another-key":
        assert f"with ledger.signing_key {config_file.parent / 'ledger.key'}" in line, line
    assert ledger.read_bytes() == before  # read, never written
    if content != "text":
        started = sqlgate("run", "-c", str(config_file))
        assert started.returncode == 1 and "cannot open the audit ledger" in started.stderr


@pytest.mark.parametrize("content", ["empty-file", "empty-database", "own-ledger"])
def test_check_accepts_a_ledger_file_run_can_extend(config_file: Path, content: str) -> None:
    import sqlite3

    ledger = config_file.parent / "ledger.db"
    if content == "empty-file":
        ledger.write_bytes(b"")
    elif content == "empty-database":
        with contextlib.closing(sqlite3.connect(ledger)) as conn:
            conn.execute("PRAGMA user_version = 7")  # a database file, with no table
            conn.commit()
    else:
        _write_ledger(ledger, config_file.parent / "ledger.key")
    result = sqlgate("check", "-c", str(config_file))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_run_still_starts_with_a_ledger_it_cannot_open_yet(config_file: Path) -> None:
    """`run` does not ask what `check` does of the ledger's path: it starts, refuses
    statements while the ledger cannot be written, and recovers once it can."""
    from lab.mariadb import free_port

    port = free_port()
    config_file.write_text(
        CONFIG.replace('path = "ledger.db"', 'path = "later/ledger.db"').replace(
            "127.0.0.1:3307", f"127.0.0.1:{port}"
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "run", "-c", str(config_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the gateway did not listen"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "is empty: it must hold the password"), (b"x" * 2_000_000, "larger than")],
    ids=["empty", "2 MB"],
)
def test_check_refuses_a_password_file_that_holds_no_password(
    config_file: Path, content: bytes, problem: str
) -> None:
    (config_file.parent / "orders.pw").write_bytes(content)
    line = assert_one_line_failure(sqlgate("check", "-c", str(config_file)))
    assert line.startswith(f"sqlgate: {config_file}: targets[0].password_file: ")
    assert problem in line


def test_check_refuses_a_dotted_key_too_long_to_parse_in_time(config_file: Path) -> None:
    """tomllib takes time quadratic in a dotted key's parts: 32,000 of them took 19 s."""
    config_file.write_text(CONFIG + "a." * 32_000 + "b = 1\n")
    line = assert_one_line_failure(sqlgate("check", "-c", str(config_file), timeout=10))
    assert line.endswith("invalid TOML: a dotted key of more than 64 parts (line 18)")


def test_a_second_gateway_on_a_ledger_in_use_refuses_to_start(config_file: Path) -> None:
    """One ledger file, one writer: a gateway whose ledger another process writes stops
    at once, in one line naming that process; the readers are not kept out."""
    import asyncio

    from appliance.ledger import LedgerWriter, load_private_key

    tmp = config_file.parent
    (tmp / "ledger.pub").write_text("")
    ledger = tmp / "ledger.db"

    async def main() -> None:
        writer = LedgerWriter(ledger, load_private_key(tmp / "ledger.key"))
        async with writer:
            await writer.append({"kind": "alert", "alert": "test", "reason": "first"})
            await writer.checkpoint()
            started = await asyncio.to_thread(sqlgate, "run", "-c", str(config_file))
            line = assert_one_line_failure(started, status=1)
            assert f"in use by another gateway (pid {os.getpid()})" in line, line
            head = await asyncio.to_thread(sqlgate, "ledger", "head", "--ledger", str(ledger))
            assert head.returncode == 0, head.stderr
            exported = await asyncio.to_thread(sqlgate, "ledger", "export", "--ledger", str(ledger))
            assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 2

    asyncio.run(main())


def test_a_line_break_or_terminal_escape_in_an_error_stays_on_one_line(
    config_file: Path,
) -> None:
    """A configured value or a file name echoed in an error split it over several lines
    (a script reading the one line got half of it) and drove the terminal (ESC)."""
    config_file.write_text(CONFIG.replace('"edge-1"', '"edge\\n1\\u001b[2J"'))
    line = assert_one_line_failure(sqlgate("check", "-c", str(config_file)))
    assert line.startswith(f"sqlgate: {config_file}: appliance.name: 'edge\\n1\\x1b[2J' is not")
    missing = config_file.parent / "led\nger\x1b[31m.db"
    line = assert_one_line_failure(sqlgate("ledger", "export", "--ledger", str(missing)))
    assert line == f"sqlgate: {config_file.parent}/led\\nger\\x1b[31m.db: no such file"
    line = assert_one_line_failure(sqlgate("replay", "S1", "--ledger", "x", "--speed", "1\n2"))
    assert line.startswith("sqlgate: argument --speed: '1\\n2' is not a number")


def _to_a_reader_gone(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``sqlgate ARGS | head -0``, deterministically: standard output is a pipe whose
    reader has already closed it; buffered as for anyone (no PYTHONUNBUFFERED)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "appliance.cli", *map(str, args)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


def test_output_to_a_reader_gone_keeps_the_exit_status_and_says_nothing(
    config_file: Path, ledger: tuple[Path, Path]
) -> None:
    """`sqlgate check | grep -q ok` and the like: the reader leaves before the output is
    written. Python then printed "Exception ignored ... BrokenPipeError" and exited 120
    (with PYTHONUNBUFFERED: "sqlgate: [Errno 32] Broken pipe", exit 1), although the
    command had done its work (keygen had written the key pair)."""
    db, pub = ledger
    config_file.write_text(CONFIG.replace('"ledger.db"', '"gateway.db"'))  # not that one
    out = config_file.parent / "keys"
    for args, status in [
        (("check", "-c", config_file), 0),
        (("keygen", "--out", out), 0),
        (("ledger", "head", "--ledger", db), 0),
        (("ledger", "verify", "--ledger", db, "--pubkey", pub), 0),
        (("ledger", "export", "--ledger", db), 0),
        (("health", "-c", config_file, "--timeout", "1"), 1),  # nothing listens
        (("--help",), 0),
    ]:
        result = _to_a_reader_gone(*args)
        assert (result.returncode, result.stderr) == (status, ""), args
    assert (out / "ledger.key").exists() and (out / "ledger.pub").exists()


def test_verbose_logs_the_gateways_debug_messages_not_the_libraries_data() -> None:
    """``sqlgate run -v`` set the root logger to debug: aiosqlite then logged every
    statement's parameters, i.e. each ledger record and recording (result rows) the
    gateway wrote, into the log."""
    script = (
        "import asyncio, logging, aiosqlite\n"
        "from appliance.cli import _setup_logging\n"
        "_setup_logging(True)\n"
        "logging.getLogger('sqlgate.server').debug('own debug message')\n"
        "async def main():\n"
        "    async with aiosqlite.connect(':memory:') as db:\n"
        "        await db.execute('CREATE TABLE t (a)')\n"
        "        await db.execute('INSERT INTO t VALUES (?)', ('row-data-4111111111111111',))\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "own debug message" in done.stderr
    assert "row-data-4111111111111111" not in done.stderr
