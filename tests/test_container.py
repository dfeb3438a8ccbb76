"""The image's entry point, ``python -m appliance.container`` (issue 11).

The pure parts (the ``setpriv`` command line, the broker's files) are checked directly;
the rest runs the entry point for real on this machine: switching to an unprivileged user
with only CAP_NET_ADMIN and CAP_NET_RAW, and the embedded Mosquitto beside a real gateway
(started, used, restarted when it dies, stopped with the gateway). The image built from
the Containerfile is tested by ``scripts/container-smoke`` (CI's container stage).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import pytest
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB, free_port

from appliance.config import BusConfig
from appliance.container import (
    CAP_NET_ADMIN,
    CAP_NET_RAW,
    CAP_SETPCAP,
    EntrypointError,
    _Broker,
    _embedded_broker,
    broker_files,
    config_path,
    setpriv_argv,
)
from appliance.ledger.chain import generate_key, private_key_pem

REPO = Path(__file__).resolve().parents[1]
DOCS_EVENTS = REPO / "docs" / "events.md"
START_TIMEOUT_S = 20.0


# --------------------------------------------------------------------------------------
# pure parts


def test_setpriv_keeps_only_the_network_capabilities_it_has() -> None:
    all_caps = (1 << 41) - 1
    argv = setpriv_argv(10001, 10002, all_caps, ["sqlgate", "run"])
    assert argv == [
        "setpriv",
        "--reuid=10001",
        "--regid=10002",
        "--init-groups",
        "--inh-caps=-all,+net_admin,+net_raw",
        "--ambient-caps=-all,+net_admin,+net_raw",
        "--no-new-privs",
        "--bounding-set=-all,+net_admin,+net_raw",
        "--",
        "sqlgate",
        "run",
    ]
    # No CAP_NET_RAW given and no CAP_SETPCAP to cut the bounding set with.
    argv = setpriv_argv(1, 1, 1 << CAP_NET_ADMIN, ["x"])
    assert "--ambient-caps=-all,+net_admin" in argv
    assert not any(a.startswith("--bounding-set") for a in argv)
    argv = setpriv_argv(1, 1, 1 << CAP_SETPCAP, ["x"])
    assert "--ambient-caps=-all" in argv and "--bounding-set=-all" in argv
    assert setpriv_argv(1, 1, 1 << CAP_NET_RAW, ["x"])[4] == "--inh-caps=-all,+net_raw"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sqlgate", "run"], "/etc/sqlgate/sqlgate.toml"),
        (["sqlgate", "run", "-c", "/x.toml"], "/x.toml"),
        (["sqlgate", "run", "--config", "/y.toml", "-v"], "/y.toml"),
        (["sqlgate", "run", "--config=/z.toml"], "/z.toml"),
        (["sqlgate", "run", "-c/w.toml"], "/w.toml"),
    ],
)
def test_config_path(argv: list[str], expected: str) -> None:
    assert config_path(argv) == expected


def bus(**kw: object) -> BusConfig:
    values: dict[str, object] = {
        "url": "mqtt://127.0.0.1:1883",
        "username": "sqlgate",
        "password": b"gw-secret",
        "enabled": True,
    }
    values.update(kw)
    return BusConfig(**values)  # type: ignore[arg-type]


def documented_acl() -> str:
    """The ACL block of docs/events.md (comments and alignment removed)."""
    text = DOCS_EVENTS.read_text()
    section = text[text.index("## Broker access control") :]
    block = section[section.index("```\n") + 4 :]
    block = block[: block.index("```")]
    return "".join(re.sub(r"\s+#.*", "", line) + "\n" for line in block.splitlines())


def test_broker_files_follow_the_documented_acl(tmp_path: Path) -> None:
    files = broker_files(bus(), tmp_path, b"op-secret", "sqlgate")
    assert files.acl == documented_acl()
    assert files.passwords == "sqlgate:gw-secret\noperator:op-secret\n"
    config = files.config.splitlines()
    for line in (
        "allow_anonymous false",
        "set_tcp_nodelay true",
        "max_queued_messages 10000",
        "max_queued_bytes 67108864",
        f"password_file {tmp_path / 'passwords'}",
        f"acl_file {tmp_path / 'acl'}",
        "user sqlgate",
        "listener 1883 127.0.0.1",
    ):
        assert line in config
    assert "gw-secret" not in files.config and "op-secret" not in files.acl


def test_broker_files_without_an_operator_and_with_another_prefix(tmp_path: Path) -> None:
    files = broker_files(
        bus(url="mqtt://[::1]:1884", host="::1", port=1884, topic_prefix="corp/db"),
        tmp_path,
        None,
        None,
    )
    assert files.acl == "user sqlgate\ntopic readwrite corp/db/#\n"
    assert files.passwords == "sqlgate:gw-secret\n"
    assert "listener 1884 ::1" in files.config.splitlines()
    assert not any(line.startswith("user ") for line in files.config.splitlines())


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"url": "mqtts://127.0.0.1:8883", "port": 8883, "tls": True}, "asks for TLS"),
        ({"username": None, "password": None}, "refuses anonymous clients"),
        ({"username": "operator"}, "is the console's user"),
        ({"password": b"two\nlines"}, "not one line"),
        ({"password": b"\xff"}, "not UTF-8"),
    ],
)
def test_broker_files_refuse(tmp_path: Path, kw: dict[str, object], message: str) -> None:
    with pytest.raises(EntrypointError, match=message) as caught:
        broker_files(bus(**kw), tmp_path, None, None)
    assert caught.value.status == 2


def test_a_refused_broker_password_leaves_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each refused start left an empty sqlgate-broker-* directory in /tmp."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(EntrypointError, match="not one line"):
        _Broker(bus(password=b"two\nlines"), None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_an_operator_password_file_with_a_crlf_end_is_read(
    mariadb: MariaDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """operator.pw written on Windows ("secret\\r\\n") was "not one line" (exit 2),
    while the configuration's own password files take such an end."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gw = gateway_with_bus(mariadb, tmp_path / "gw", f"mqtt://127.0.0.1:{free_port()}")
    (gw.workdir / "operator.pw").write_bytes(b"operator-bus-secret\r\n")
    argv = ["sqlgate", "run", "-c", str(gw.config_path)]
    broker = _embedded_broker(argv, {"SQLGATE_EMBEDDED_BROKER": "1"})
    assert broker is not None
    try:
        assert "operator:" in (broker.directory / "passwords").read_text()
    finally:
        broker.stop()
    assert not broker.directory.exists()


@pytest.mark.timeout(30)  # a FIFO held the entry point for ever
@pytest.mark.parametrize("kind", ["fifo", "directory", "over-64-KiB"])
def test_an_operator_password_file_that_holds_no_password_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "orders.pw").write_text("orders-secret\n")
    (tmp_path / "bus.pw").write_text("gateway-bus-secret\n")
    (tmp_path / "ledger.key").write_bytes(private_key_pem(generate_key()))
    (tmp_path / "ledger.key").chmod(0o600)  # the gateway refuses a key others can read
    config = tmp_path / "sqlgate.toml"
    config.write_text(
        '[appliance]\nname = "edge-1"\nlisten = "127.0.0.1:3307"\n\n'
        '[[targets]]\nname = "orders"\nhost = "10.77.2.10"\nuser = "sqlgate"\n'
        'password_file = "orders.pw"\n\n[ledger]\npath = "ledger.db"\nsigning_key = "ledger.key"\n'
        '\n[bus]\nurl = "mqtt://127.0.0.1:1883"\nusername = "sqlgate"\npassword_file = "bus.pw"\n'
    )
    operator = tmp_path / "operator.pw"
    if kind == "fifo":
        os.mkfifo(operator)
    elif kind == "directory":
        operator.mkdir()
    else:
        operator.write_bytes(b"#" * (64 * 1024 + 1))
    why = {"fifo": "not a regular file", "directory": "is a directory"}.get(kind, "larger than")
    argv = ["sqlgate", "run", "-c", str(config)]
    with pytest.raises(EntrypointError, match=f"{operator}: cannot read: {why}") as caught:
        _embedded_broker(argv, {"SQLGATE_EMBEDDED_BROKER": "1"})
    assert caught.value.status == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("sqlgate-broker")] == []


# --------------------------------------------------------------------------------------
# for real


def entrypoint_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_entrypoint(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``argv`` (the entry point, perhaps under setpriv) run with ``env`` added."""
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=30,
        env=entrypoint_env(**env),
        cwd=cwd,
        check=False,
    )


def test_root_becomes_the_user_with_only_the_network_capabilities(tmp_path: Path) -> None:
    # The interpreter must be usable by that user: Debian's own, not one under /root.
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    done = subprocess.run(
        [
            python,
            "-m",
            "appliance.container",
            "sh",
            "-c",
            "id -u; grep -E '^Cap(Eff|Amb):' /proc/self/status",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=entrypoint_env(SQLGATE_USER="nobody"),
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    uid, eff, amb = done.stdout.split("\n")[:3]
    wanted = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
    assert int(uid) == 65534
    assert int(eff.split()[1], 16) == wanted
    assert int(amb.split()[1], 16) == wanted


def test_root_without_setuid_and_setgid_is_refused(tmp_path: Path) -> None:
    """Without CAP_SETUID/CAP_SETGID the entry point ran the command as root (a root
    with no capabilities still owns the venv's code and /etc, and has no
    no_new_privs): it refuses now, unless SQLGATE_USER=root asks for root."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    without = [
        setpriv,
        "--inh-caps=-setuid,-setgid",
        "--bounding-set=-setuid,-setgid",
        "--",
        sys.executable,
        "-m",
        "appliance.container",
        "sh",
        "-c",
        "id -u",
    ]
    done = run_entrypoint(without, tmp_path, SQLGATE_USER="nobody")
    assert (done.returncode, done.stdout) == (1, ""), done.stdout + done.stderr
    assert done.stderr.startswith(
        "sqlgate-entrypoint: no CAP_SETUID/CAP_SETGID to become 'nobody': refusing to run as root"
    )
    done = run_entrypoint(without, tmp_path, SQLGATE_USER="root")
    assert (done.returncode, done.stdout, done.stderr) == (0, "0\n", "")


def test_files_the_commands_make_are_not_for_other_users(tmp_path: Path) -> None:
    """The umask was the runtime's (022): the ledger, its -wal and -shm came out
    world-readable (statements, results) in a state directory others may reach."""
    script = (
        "import sqlite3; c = sqlite3.connect('ledger.db'); "
        "c.execute('PRAGMA journal_mode=WAL'); c.execute('CREATE TABLE t (a)'); "
        "c.execute('INSERT INTO t VALUES (1)'); c.commit(); "
        "import os; print({n: oct(os.stat(n).st_mode & 0o777) for n in "
        "('ledger.db', 'ledger.db-wal', 'ledger.db-shm')})"
    )
    done = run_entrypoint(
        [sys.executable, "-m", "appliance.container", sys.executable, "-c", script],
        tmp_path,
        SQLGATE_USER="root",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(
        {"ledger.db": "0o640", "ledger.db-wal": "0o640", "ledger.db-shm": "0o640"}
    )


def test_other_commands_keep_ctrl_c() -> None:
    """The entry point blocks the signals it forwards until the gateway handles them;
    another command (health, approvals, a shell) got them blocked too: Ctrl-C did
    nothing."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance.container",
            sys.executable,  # not sh: dash clears the mask of what it starts
            "-c",
            "print(open('/proc/self/status').read().split('SigBlk:')[1].split()[0])",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=entrypoint_env(SQLGATE_USER="root"),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    blocked = int(done.stdout, 16)
    forwarded = (
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGHUP,
        signal.SIGUSR1,
        signal.SIGUSR2,
    )
    assert blocked & sum(1 << (sig - 1) for sig in forwarded) == 0, done.stdout


def test_unknown_user_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "appliance.container", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        env=entrypoint_env(SQLGATE_USER="no-such-user-here"),
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "sqlgate-entrypoint: SQLGATE_USER: no user 'no-such-user-here' in this image\n"
    )


def test_missing_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "appliance.container", "no-such-command-here"],
        capture_output=True,
        text=True,
        timeout=30,
        env=entrypoint_env(SQLGATE_USER="root"),
        check=False,
    )
    assert done.returncode == 127
    assert done.stderr.startswith("sqlgate-entrypoint: no-such-command-here: ")


class Entrypoint:
    """``python -m appliance.container sqlgate run -c CFG`` as root, its stderr in a file."""

    def __init__(self, gw: GatewayProcess, bin_dir: Path, **env: str) -> None:
        self.gw = gw
        self.log_path = gw.workdir / "entrypoint.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "appliance.container",
                    "sqlgate",
                    "run",
                    "-c",
                    str(gw.config_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=entrypoint_env(
                    SQLGATE_USER="root",
                    PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                    **env,
                ),
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = START_TIMEOUT_S) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log())
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the log:\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(45)


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """``sqlgate`` on PATH: this tree's, as the image's venv has its own."""
    directory = tmp_path / "bin"
    directory.mkdir()
    shim = directory / "sqlgate"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m appliance.cli "$@"\n')
    shim.chmod(0o755)
    return directory


def gateway_with_bus(mariadb: MariaDB, workdir: Path, url: str) -> GatewayProcess:
    workdir.mkdir(parents=True)
    (workdir / "bus.pw").write_text("gateway-bus-secret\n")
    (workdir / "operator.pw").write_text("operator-bus-secret\n")
    toml = f'[bus]\nurl = "{url}"\nusername = "sqlgate"\npassword_file = "bus.pw"\n'
    gw = GatewayProcess(workdir, mariadb, mariadb.pki, extra_toml=toml, name="entry-gw")
    gw.write_config()
    return gw


def children(pid: int, name: str) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            comm = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and comm == name:
            found.append(int(stat.parent.name))
    return found


async def mqtt_connect(port: int, user: str | None, password: str | None) -> None:
    async with aiomqtt.Client("127.0.0.1", port, username=user, password=password, timeout=5):
        pass


def health(gw: GatewayProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "health", "-c", str(gw.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.integration
def test_embedded_broker_beside_the_gateway(
    mariadb: MariaDB, tmp_path: Path, bin_dir: Path
) -> None:
    port = free_port()
    gw = gateway_with_bus(mariadb, tmp_path / "gw", f"mqtt://127.0.0.1:{port}")
    entry = Entrypoint(gw, bin_dir, SQLGATE_EMBEDDED_BROKER="1")
    try:
        entry.wait_log(rf"embedded broker listening on mqtt://127\.0\.0\.1:{port}")
        files = Path(entry.wait_log(r"Config loaded from (\S+)/mosquitto\.conf")[1])
        assert files.parent == Path(tempfile.gettempdir())
        assert oct(files.stat().st_mode & 0o777) == "0o700"
        entry.wait_log(r"bus: connected to mqtt://")
        done = health(gw)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"ok broker mqtt://127.0.0.1:{port} (connected as 'sqlgate')" in done.stdout
        # The operator of operator.pw may connect; nobody else.
        asyncio.run(mqtt_connect(port, "operator", "operator-bus-secret"))
        with pytest.raises(aiomqtt.MqttCodeError):
            asyncio.run(mqtt_connect(port, None, None))
        with pytest.raises(aiomqtt.MqttCodeError):
            asyncio.run(mqtt_connect(port, "operator", "wrong"))
        # Only on loopback.
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) == 0

        # SIGHUP, forwarded to the gateway, is ignored there (it reloads nothing).
        entry.proc.send_signal(signal.SIGHUP)
        entry.wait_log(r"SIGHUP ignored")
        assert entry.proc.poll() is None and health(gw).returncode == 0, entry.log()

        # Mosquitto dies: it is started again, and the gateway reconnects.
        [broker] = children(entry.proc.pid, "mosquitto")
        os.kill(broker, signal.SIGKILL)
        entry.wait_log(r"mosquitto was killed by SIGKILL: restarting it in 1s")
        deadline = time.monotonic() + START_TIMEOUT_S
        while (done := health(gw)).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.returncode == 0, done.stdout + entry.log()
        [again] = children(entry.proc.pid, "mosquitto")
        assert again != broker
    finally:
        code = entry.stop()
    assert code == 0, entry.log()
    assert not children(entry.proc.pid, "mosquitto")
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # the broker went with the gateway
    log = entry.log()
    assert "Traceback" not in log
    assert "gateway-bus-secret" not in log and "operator-bus-secret" not in log
    assert not files.exists()  # its configuration and password file were removed


@pytest.mark.integration
def test_an_embedded_broker_whose_port_is_taken_stops_the_start(
    mariadb: MariaDB, tmp_path: Path, bin_dir: Path
) -> None:
    """Another program on the broker's port (a broker of the host's, without the
    gateway's passwords and ACL) was taken for the embedded one: the gateway connected
    to it and health said ok."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(8)
        port = other.getsockname()[1]
        gw = gateway_with_bus(mariadb, tmp_path / "gw", f"mqtt://127.0.0.1:{port}")
        entry = Entrypoint(gw, bin_dir, SQLGATE_EMBEDDED_BROKER="1")
        try:
            code = entry.proc.wait(START_TIMEOUT_S)
        finally:
            entry.stop()
    assert code == 1, entry.log()
    assert f"127.0.0.1:{port} is already in use by another program" in entry.log()
    assert "bus: connected" not in entry.log() and "Traceback" not in entry.log()


@pytest.mark.integration
def test_a_stop_while_the_broker_waits_to_restart_is_not_delayed(
    mariadb: MariaDB, tmp_path: Path, bin_dir: Path
) -> None:
    """The supervisor slept out the broker's restart delay before it reaped the gateway:
    a stop then took up to 30 s (past podman's 10, so SIGKILL, exit 137)."""
    port = free_port()
    gw = gateway_with_bus(mariadb, tmp_path / "gw", f"mqtt://127.0.0.1:{port}")
    entry = Entrypoint(gw, bin_dir, SQLGATE_EMBEDDED_BROKER="1")
    try:
        entry.wait_log(r"bus: connected to mqtt://")
        for n, delay in enumerate(("1s", "2s", "4s", "8s")):  # the delay doubles to 8 s
            [broker] = children(entry.proc.pid, "mosquitto")
            os.kill(broker, signal.SIGKILL)
            entry.wait_log(rf"restarting it in {delay}\b")
            if n < 3:
                deadline = time.monotonic() + START_TIMEOUT_S
                while children(entry.proc.pid, "mosquitto") in ([], [broker]):
                    assert time.monotonic() < deadline, entry.log()
                    time.sleep(0.05)
        started = time.monotonic()
        code = entry.stop()
        took = time.monotonic() - started
    finally:
        entry.stop()
    assert code == 0, entry.log()
    assert took < 4, f"{took:.1f}s\n{entry.log()}"  # not the rest of the broker's delay
    assert not children(entry.proc.pid, "mosquitto")


def _pid_of_child(parent: int) -> int | None:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                return int(stat.parent.name)
        except (OSError, IndexError, ValueError):
            continue
    return None


@pytest.mark.integration
def test_a_stop_while_the_gateway_starts_as_pid_1_is_not_lost(
    mariadb: MariaDB, tmp_path: Path, bin_dir: Path
) -> None:
    """As a container's PID 1, a SIGTERM that came before the gateway's handlers existed
    was dropped by the kernel: the stop ended in SIGKILL (exit 137) with the rules left.
    The entry point blocks it until the gateway handles it."""
    gw = GatewayProcess(tmp_path / "gw", mariadb, mariadb.pki, name="pid1-gw")
    gw.write_config()
    with (tmp_path / "log").open("wb") as log:
        unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-m",
             "appliance.container", "sqlgate", "run", "-c", str(gw.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=entrypoint_env(
                SQLGATE_USER="root", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
            ),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        pid1 = None
        while time.monotonic() < deadline:  # the gateway's interpreter, not yet serving
            pid1 = _pid_of_child(unshare.pid)
            if pid1 is not None:
                cmdline = Path(f"/proc/{pid1}/cmdline").read_bytes()
                if b"appliance.cli\0run" in cmdline:
                    break
            time.sleep(0.002)
        assert pid1 is not None
        os.kill(pid1, signal.SIGHUP)  # ignored, once there is a handler to say so
        os.kill(pid1, signal.SIGTERM)
        code = unshare.wait(START_TIMEOUT_S)
    finally:
        if unshare.poll() is None:
            unshare.kill()
            unshare.wait()
    log_text = (tmp_path / "log").read_text()
    assert code == 0, log_text
    assert "stopped" in log_text and "Traceback" not in log_text
    assert "SIGHUP ignored" in log_text


@pytest.mark.integration
def test_a_broker_elsewhere_starts_nothing(mariadb: MariaDB, tmp_path: Path, bin_dir: Path) -> None:
    gw = gateway_with_bus(mariadb, tmp_path / "gw", "mqtt://192.0.2.1:1883")
    entry = Entrypoint(gw, bin_dir, SQLGATE_EMBEDDED_BROKER="1")
    try:
        entry.wait_log(r"listening on 127\.0\.0\.1:\d+")
        assert (
            "sqlgate-entrypoint: SQLGATE_EMBEDDED_BROKER: bus.url mqtt://192.0.2.1:1883 is not "
            "on this machine: no broker started" in entry.log()
        )
        assert not children(entry.proc.pid, "mosquitto")
    finally:
        code = entry.stop()
    assert code == 0, entry.log()


@pytest.mark.integration
def test_without_the_variable_no_broker(mariadb: MariaDB, tmp_path: Path, bin_dir: Path) -> None:
    port = free_port()
    gw = gateway_with_bus(mariadb, tmp_path / "gw", f"mqtt://127.0.0.1:{port}")
    entry = Entrypoint(gw, bin_dir)
    try:
        entry.wait_log(r"listening on 127\.0\.0\.1:\d+")
        # The gateway itself is the process (exec'd), and no broker listens.
        cmdline = Path(f"/proc/{entry.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[2:5] == [b"appliance.cli", b"run", b"-c"]
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        code = entry.stop()
    assert code == 0, entry.log()


@pytest.mark.integration
def test_a_tls_bus_cannot_be_embedded(mariadb: MariaDB, tmp_path: Path, bin_dir: Path) -> None:
    gw = gateway_with_bus(mariadb, tmp_path / "gw", "mqtts://127.0.0.1:8883")
    entry = Entrypoint(gw, bin_dir, SQLGATE_EMBEDDED_BROKER="1")
    assert entry.proc.wait(30) == 2
    assert entry.log() == (
        "sqlgate-entrypoint: SQLGATE_EMBEDDED_BROKER: bus.url mqtts://127.0.0.1:8883 asks for "
        "TLS; the embedded broker listens on plain MQTT on loopback only: use "
        "mqtt://127.0.0.1:8883\n"
    )


@pytest.mark.integration
def test_the_embedded_broker_forwards_no_message_bigger_than_anyone_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone with the operator's login could publish 200 MB on a decision topic: the
    broker forwarded it whole, and the gateway held it in memory before it dropped it
    as too large (three took it from 87 MB to 920 MB)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    port = free_port()
    gateway = bus(url=f"mqtt://127.0.0.1:{port}", port=port)
    broker = _Broker(gateway, b"op-secret")
    broker.start()
    topic = "sqlgate/edge-1/approvals/x/decision"

    async def scenario() -> list[int]:
        async with (
            aiomqtt.Client("127.0.0.1", port, username="sqlgate", password="gw-secret") as gw,
            aiomqtt.Client("127.0.0.1", port, username="operator", password="op-secret") as op,
        ):
            await gw.subscribe(topic, qos=1)
            await op.publish(topic, b'{"v": 1, "pad": "' + b" " * 2 * 1024 * 1024 + b'"}', qos=1)
            await op.publish(topic, b'{"v": 1}', qos=1)  # after it, on the same topic
            sizes = []
            async for message in gw.messages:
                assert isinstance(message.payload, bytes)
                sizes.append(len(message.payload))
                if message.payload == b'{"v": 1}':
                    return sizes
        return sizes

    try:
        broker.wait_ready()
        sizes = asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        broker.stop()
    assert sizes == [8]  # the big one never reached the gateway
