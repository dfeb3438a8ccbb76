"""``sqlgate health -c FILE`` against a real gateway, MariaDB and Mosquitto (issue 11).

One gateway runs for the module with a ``[bus]`` on the session's broker. Each failure
case writes a variant of its configuration beside it (so relative paths still resolve)
that breaks exactly one thing, and expects exit 1 with that check's ``FAIL`` line while
the others still pass.
"""

from __future__ import annotations

import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pymysql
import pytest
from lab.broker import Broker
from lab.clients import run_sqlgate
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB, free_port
from lab.topology import python_env

from appliance.health import Check, _dial_addresses

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gw(
    mariadb: MariaDB, broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("health-gw")
    bus = broker.bus_toml(work)
    gateway = GatewayProcess(work, mariadb, mariadb.pki, extra_toml=bus, name="health-gw").start()
    yield gateway
    assert gateway.stop() == 0
    assert "Traceback" not in gateway.log()


def variant(gw: GatewayProcess, name: str, *replacements: tuple[str, str]) -> Path:
    """The gateway's configuration with each ``old`` replaced by ``new`` (old must occur)."""
    text = gw.config_path.read_text()
    for old, new in replacements:
        assert old in text, f"{old!r} is not in the configuration"
        text = text.replace(old, new)
    path = gw.workdir / f"{name}.toml"
    path.write_text(text)
    return path


def health(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_sqlgate("health", "-c", config, *args, timeout=30)


def lines(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Check name -> its whole line."""
    found = {}
    for line in done.stdout.splitlines():
        verdict, name, _ = line.split(" ", 2)
        assert verdict in ("ok", "FAIL", "skip"), line
        found[name] = line
    assert list(found) == ["listener", "ledger", "broker"], done.stdout
    return found


def kinds(ledger: Path) -> list[str]:
    with sqlite3.connect(f"{ledger.resolve().as_uri()}?mode=ro", uri=True) as conn:
        return [k for (k,) in conn.execute("SELECT kind FROM records ORDER BY seq")]


def report(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


def test_everything_passes(gw: GatewayProcess, broker: Broker) -> None:
    before = [k for k in kinds(gw.ledger) if k != "checkpoint"]
    done = health(gw.config_path)
    assert done.returncode == 0, report(done)
    assert done.stderr == ""
    found = lines(done)
    assert re.fullmatch(
        rf"ok listener 127\.0\.0\.1:{gw.port} \(backend .*MariaDB.*\)", found["listener"]
    ), found
    assert re.fullmatch(
        rf"ok ledger {re.escape(str(gw.ledger))} \(seq \d+ at \d{{4}}-.*Z, .*\)", found["ledger"]
    ), found
    assert found["broker"] == (
        f"ok broker mqtt://{broker.host}:{broker.port} (connected as '{broker.gateway_user}')"
    )
    # Nothing was written: the probe closed before logging in.
    assert [k for k in kinds(gw.ledger) if k != "checkpoint"] == before


def test_gateway_still_serves_after_health(gw: GatewayProcess) -> None:
    for _ in range(3):
        assert health(gw.config_path).returncode == 0
    conn = gw.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM shop.customers")
            assert cur.fetchone() == (3,)
    finally:
        conn.close()


def test_without_a_bus_the_broker_is_skipped(gw: GatewayProcess) -> None:
    text = gw.config_path.read_text()
    config = gw.workdir / "nobus.toml"
    config.write_text(text[: text.index("[bus]")])
    done = health(config)
    assert done.returncode == 0, report(done)
    assert lines(done)["broker"] == "skip broker - (no [bus] section)"


def test_listener_refused(gw: GatewayProcess) -> None:
    port = free_port()
    config = variant(gw, "refused", (f':{gw.port}"', f':{port}"'))
    done = health(config)
    assert done.returncode == 1, report(done)
    found = lines(done)
    assert found["listener"] == f"FAIL listener 127.0.0.1:{port}: connection refused"
    assert found["ledger"].startswith("ok ledger ")
    assert found["broker"].startswith("ok broker ")


def test_listener_that_is_not_the_gateway(gw: GatewayProcess, mariadb: MariaDB) -> None:
    config = variant(gw, "notgw", (f':{gw.port}"', f':{mariadb.port}"'))
    done = health(config)
    assert done.returncode == 1, report(done)
    listener = lines(done)["listener"]
    assert listener.startswith(f"FAIL listener 127.0.0.1:{mariadb.port}: not the gateway: "), (
        listener
    )
    assert "server version" in listener and "MariaDB" in listener


def test_listener_that_never_greets(gw: GatewayProcess) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        config = variant(gw, "silent", (f':{gw.port}"', f':{port}"'))
        done = health(config, "--timeout", "0.5")
    assert done.returncode == 1, report(done)
    assert lines(done)["listener"] == (
        f"FAIL listener 127.0.0.1:{port}: accepted, but sent no greeting in time"
    )


def test_gateway_refusing_is_still_serving(gw: GatewayProcess, mariadb: MariaDB) -> None:
    """The default target does not answer: the gateway answers with its own error."""
    nowhere = SimpleNamespace(
        host="127.0.0.1", port=free_port(), native_user="nobody", native_password="x"
    )
    work = gw.workdir.parent / "health-gw-nodb"
    other = GatewayProcess(work, nowhere, mariadb.pki, name="health-gw-nodb")  # type: ignore[arg-type]
    other.start()
    try:
        done = health(other.config_path)
    finally:
        assert other.stop() == 0
    assert done.returncode == 0, report(done)
    listener = lines(done)["listener"]
    assert listener.startswith(f"ok listener 127.0.0.1:{other.port} (answered, refusing: sqlgate: ")
    assert "cannot reach target 'orders'" in listener


def test_ledger_missing(gw: GatewayProcess) -> None:
    config = variant(gw, "noledger", (f'path = "{gw.ledger}"', 'path = "absent.db"'))
    done = health(config)
    assert done.returncode == 1, report(done)
    found = lines(done)
    assert found["ledger"] == f"FAIL ledger {gw.workdir / 'absent.db'}: no such file"
    assert found["listener"].startswith("ok listener ")


def test_a_ledger_on_a_full_file_system_fails(gw: GatewayProcess, tmp_path: Path) -> None:
    """Health said ok while the gateway refused every statement (1105): its ledger's file
    system was full. A copy of the ledger on a full tmpfs, in a mount namespace of its
    own (nothing stays mounted)."""
    full = tmp_path / "full"
    full.mkdir()
    config = variant(gw, "fullfs", (f'path = "{gw.ledger}"', f'path = "{full}/ledger.db"'))
    holder = (  # the gateway has the ledger open, its WAL index made, as it fills up
        "import sqlite3, sys, time; "
        f"d = sqlite3.connect('{full}/ledger.db'); "
        f"sqlite3.connect('{gw.ledger}').backup(d); "
        "d.execute('SELECT count(*) FROM records').fetchall(); "
        "print('open', flush=True); time.sleep(60)"
    )
    script = (
        f"mount -t tmpfs -o size=2m tmpfs {full} && "
        f'{{ {sys.executable} -c "{holder}" > {tmp_path}/holder.out & }}; holder=$!; '
        f"while ! grep -q open {tmp_path}/holder.out 2>/dev/null; do sleep 0.05; done && "
        f"(dd if=/dev/zero of={full}/filler bs=64k 2>/dev/null; true) && "
        f"{sys.executable} -m appliance.cli health -c {config}; "
        'status=$?; kill "$holder"; exit $status'
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=python_env(),
    )
    assert done.returncode == 1, report(done)
    assert lines(done)["ledger"] == (
        f"FAIL ledger {full}/ledger.db: its file system is full (0 KiB free): the gateway "
        "refuses every statement (1105) until it is"
    )


def _lock_holder(ledger: Path, hold_s: float) -> subprocess.Popen[str]:
    """Another process in a write transaction on ``ledger`` for ``hold_s`` seconds (as a
    `sqlite3` shell left at ``BEGIN IMMEDIATE`` would be); returns once it holds it."""
    script = (
        "import sqlite3, time; "
        f"c = sqlite3.connect('{ledger}', isolation_level=None, timeout=10); "
        "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); "
        f"time.sleep({hold_s}); c.execute('ROLLBACK')"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_a_ledger_another_process_holds_locked_fails(gw: GatewayProcess) -> None:
    """Health said ok while the gateway refused every statement (1105): another process
    held the ledger's write lock. It names the process, and passes again once it lets go."""
    holder = _lock_holder(gw.ledger, 60)
    name = Path(f"/proc/{holder.pid}/comm").read_text().strip()  # python3, python...
    try:
        done = health(gw.config_path)
        with pytest.raises(pymysql.err.OperationalError) as refused:  # as health says
            with gw.connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
        assert refused.value.args[0] == 1105, refused.value
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 1, report(done)
    found = lines(done)
    assert found["ledger"] == (
        f"FAIL ledger {gw.ledger}: its write lock has been held by process {holder.pid} "
        f"({name}) for 0.5 s and more: the gateway cannot commit, and refuses statements "
        "(1105), until it is released"
    ), found
    assert found["listener"].startswith("ok listener "), found
    deadline = time.monotonic() + 20  # the gateway retries the file after its back-off
    while True:
        try:
            with gw.connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                break
        except pymysql.err.OperationalError:
            assert time.monotonic() < deadline, "the gateway did not recover"
            time.sleep(0.2)
    after = health(gw.config_path)
    assert after.returncode == 0, report(after)


def test_a_write_lock_let_go_within_half_a_second_is_not_a_failure(gw: GatewayProcess) -> None:
    """A commit holds the lock for moments: only a lock held at every look over 0.5 s
    fails the check (this one is held for 0.1 s after the check starts, at most)."""
    holder = _lock_holder(gw.ledger, 0.1)
    try:
        done = health(gw.config_path)
    finally:
        holder.wait(10)
    assert done.returncode == 0, report(done)
    assert lines(done)["ledger"].startswith(f"ok ledger {gw.ledger} ")


def test_a_tls_broker_that_never_answers_is_bounded_by_the_timeout(gw: GatewayProcess) -> None:
    """The TLS handshake ran under paho's own 5 s limit whatever --timeout said."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        config = variant(gw, "silenttls", ("mqtt://", "mqtts://"))
        text = re.sub(r"mqtts://[^\"]+", f"mqtts://127.0.0.1:{port}", config.read_text())
        config.write_text(text)
        started = time.monotonic()
        done = health(config, "--timeout", "0.5")
        took = time.monotonic() - started
    assert done.returncode == 1, report(done)
    assert lines(done)["broker"].startswith(f"FAIL broker mqtts://127.0.0.1:{port}: ")
    assert took < 4.5, f"{took:.1f}s"  # the interpreter's start and the other checks


def test_ledger_not_a_ledger(gw: GatewayProcess) -> None:
    other = gw.workdir / "other.db"
    sqlite3.connect(other).executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);").close()
    done = health(variant(gw, "otherdb", (f'path = "{gw.ledger}"', 'path = "other.db"')))
    assert done.returncode == 1, report(done)
    assert lines(done)["ledger"] == f"FAIL ledger {other}: not a sqlgate ledger"


def test_ledger_tail_tampered(gw: GatewayProcess) -> None:
    """A record after the last checkpoint changed behind the gateway's back."""
    copy = gw.workdir / "tampered.db"
    src = sqlite3.connect(f"{gw.ledger.resolve().as_uri()}?mode=ro", uri=True)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.executescript(
        "DROP TRIGGER records_no_update;"
        "INSERT INTO records (seq, ts, kind, session, body) SELECT seq + 1, ts, kind, session,"
        " replace(body, '\"seq\":' || seq, '\"seq\":' || (seq + 1)) FROM records"
        " WHERE seq = (SELECT max(seq) FROM records);"
    )
    dst.close()
    done = health(variant(gw, "tampered", (f'path = "{gw.ledger}"', 'path = "tampered.db"')))
    assert done.returncode == 1, report(done)
    ledger = lines(done)["ledger"]
    assert re.fullmatch(rf"FAIL ledger {re.escape(str(copy))}: record \d+: .+", ledger), ledger


def test_ledger_signed_by_another_key(gw: GatewayProcess, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert run_sqlgate("keygen", "--out", keys).returncode == 0
    shutil.copy(keys / "ledger.key", gw.workdir / "other.key")
    (gw.workdir / "other.key").chmod(0o600)
    done = health(
        variant(gw, "otherkey", ('signing_key = "ledger.key"', 'signing_key = "other.key"'))
    )
    assert done.returncode == 1, report(done)
    ledger = lines(done)["ledger"]
    assert ledger.startswith(f"FAIL ledger {gw.ledger}: record "), ledger


def test_broker_refuses_the_password(gw: GatewayProcess, broker: Broker) -> None:
    (gw.workdir / "wrong.pw").write_text("not-the-password\n")
    config = variant(gw, "wrongpw", ('password_file = "bus.pw"', 'password_file = "wrong.pw"'))
    done = health(config)
    assert done.returncode == 1, report(done)
    found = lines(done)
    assert found["broker"].startswith(
        f"FAIL broker mqtt://{broker.host}:{broker.port}: refused the connection as 'sqlgate': "
    ), found
    assert "not-the-password" not in done.stdout + done.stderr
    assert found["listener"].startswith("ok ") and found["ledger"].startswith("ok ")


def test_broker_unreachable(gw: GatewayProcess, broker: Broker) -> None:
    port = free_port()
    url = f"mqtt://{broker.host}:{broker.port}"
    config = variant(gw, "nobroker", (url, f"mqtt://127.0.0.1:{port}"))
    done = health(config)
    assert done.returncode == 1, report(done)
    assert lines(done)["broker"] == f"FAIL broker mqtt://127.0.0.1:{port}: connection refused"


def test_everything_fails_with_the_gateway_gone(gw: GatewayProcess, broker: Broker) -> None:
    config = variant(
        gw,
        "allbad",
        (f':{gw.port}"', f':{free_port()}"'),
        (f'path = "{gw.ledger}"', 'path = "absent.db"'),
        (f"mqtt://{broker.host}:{broker.port}", f"mqtt://127.0.0.1:{free_port()}"),
    )
    done = health(config, "--timeout", "1")
    assert done.returncode == 1, report(done)
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["FAIL"] * 3
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "/nonexistent/sqlgate.toml"], "/nonexistent/sqlgate.toml"),
        (["-c", "{cfg}", "--timeout", "0"], "--timeout"),
    ],
)
def test_bad_usage_is_exit_2(gw: GatewayProcess, args: list[str], message: str) -> None:
    argv = [a.replace("{cfg}", str(gw.config_path)) for a in args]
    done = run_sqlgate("health", *argv, timeout=30)
    assert done.returncode == 2, report(done)
    assert done.stdout == ""
    assert done.stderr.startswith("sqlgate: ") or done.stderr.startswith("/nonexistent")
    assert message in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_invalid_configuration_is_exit_2(gw: GatewayProcess) -> None:
    config = variant(gw, "invalid", ("[ledger]", "[ledger]\nbogus = 1"))
    done = health(config)
    assert done.returncode == 2, report(done)
    assert done.stdout == ""
    assert "ledger.bogus" in done.stderr and "Traceback" not in done.stderr


def test_wildcards_are_reached_through_loopback() -> None:
    assert _dial_addresses("0.0.0.0") == ["127.0.0.1"]
    assert _dial_addresses("::") == ["::1", "127.0.0.1"]
    assert _dial_addresses("10.77.2.1") == ["10.77.2.1"]
    assert _dial_addresses("fd77:2::1") == ["fd77:2::1"]


def test_check_lines() -> None:
    assert Check("listener", "127.0.0.1:3307", True).line() == "ok listener 127.0.0.1:3307"
    assert Check("ledger", "/x.db", True, "seq 3").line() == "ok ledger /x.db (seq 3)"
    assert (
        Check("broker", "mqtt://h:1883", False, "connection refused").line()
        == "FAIL broker mqtt://h:1883: connection refused"
    )
    assert (
        Check("broker", "-", None, "no [bus] section").line() == "skip broker - (no [bus] section)"
    )


@pytest.mark.parametrize("timeout", ["inf", "1e10", "3601"])
def test_a_timeout_out_of_range_is_a_usage_error(
    timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from appliance.cli import main

    assert main(["health", "-c", "/nonexistent/sqlgate.toml", "--timeout", timeout]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(
        f"sqlgate: argument --timeout: '{timeout}' must be greater than 0 and at most 3600 seconds"
    )
