"""``sqlgate tui`` in a real terminal (tmux) against a real broker and gateway: keys are
typed with send-keys and the screen is read back with capture-pane."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lab.approvals import Held, approvals_toml, operator_config
from lab.broker import Broker
from lab.gateway import GatewayProcess
from lab.mariadb import MariaDB
from lab.tokens import Provider

pytestmark = pytest.mark.integration

APPROVER = "dba@example.com"
TABLE = "shop.console_tmux"


class Terminal:
    """One tmux server of its own, with one window running a command."""

    def __init__(self, socket: str, command: list[str], size: tuple[int, int]) -> None:
        self.socket = socket
        shell = shlex.join(command) + "; echo sqlgate-exit=$?; sleep 60"
        self.tmux(
            "new-session", "-d", "-s", "console", "-x", str(size[0]), "-y", str(size[1]), shell
        )

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "console", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "console")

    def until(self, what: str, check: Callable[[str], bool], timeout_s: float = 20) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.screen()
            if check(text):
                return text
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{text}"
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture(scope="module")
def gw(
    mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory, broker: Broker
) -> Iterator[tuple[GatewayProcess, Provider]]:
    work = tmp_path_factory.mktemp("gw")
    provider = Provider(work / "idp")
    extra = (
        approvals_toml(work, broker, provider, timeout_s=60)
        + f"""
[[rules]]
name = "review-tmux-deletes"
statements = ["DELETE"]
tables = ["{TABLE}"]
action = "review"
"""
    )
    gw = GatewayProcess(work, mariadb, mariadb.pki, extra_toml=extra, name="tmux-gw").start()
    yield gw, provider
    assert gw.stop() == 0


def test_an_operator_approves_in_a_real_terminal(
    gw: tuple[GatewayProcess, Provider], broker: Broker, mariadb: MariaDB, tmp_path: Path
) -> None:
    gateway, provider = gw
    mariadb.admin_sql(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (id INT PRIMARY KEY)",
        f"DELETE FROM {TABLE}",
        f"INSERT INTO {TABLE} VALUES (1), (2)",
    )
    config = operator_config(tmp_path / "operator", broker, gateway=gateway)
    token = tmp_path / "token"
    token.write_text(provider.token(email=APPROVER, groups=["dba"]))
    command = [sys.executable, "-m", "appliance.cli", "tui", "-c", str(config)]
    terminal = Terminal(
        f"sqlgate-{tmp_path.name}", [*command, "--token-file", str(token)], (80, 24)
    )
    held: Held | None = None
    try:
        terminal.until("the console", lambda s: "Sessions" in s and "connected to mqtt://" in s)
        sql = f"DELETE FROM {TABLE} WHERE id = 1"
        held = Held(gateway, sql)
        terminal.until("the badge", lambda s: "1 PENDING" in s)
        terminal.keys("2")
        screen = terminal.until("the request", lambda s: sql in s)
        assert "agent" in screen and "review-tmux-deletes" in screen
        assert "Approve" in screen and "Deny" in screen  # the footer shows the keys
        terminal.keys("a")
        assert held.result() is None
        terminal.until("no request left", lambda s: "No statement is waiting" in s)
        terminal.keys("1")
        terminal.until("the session", lambda s: "agent" in s and "waiting" not in s)
        terminal.keys("3")
        terminal.until("the verified ledger", lambda s: "verified:" in s)
        terminal.keys("q")
        terminal.until("the exit", lambda s: "sqlgate-exit=0" in s)
        assert "Traceback" not in terminal.screen()
    finally:
        if held is not None:
            held.close()
        terminal.close()
    assert [int(r[0]) for r in mariadb.admin_sql(f"SELECT id FROM {TABLE}")] == [2]


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("no-terminal", [], "sqlgate: the console needs a terminal (standard input and output)"),
        ("no-bus", [], "sqlgate: {config}: no [bus] section: the console reads the MQTT broker"),
        (
            "token",
            ["--token-file", "{dir}/missing"],
            "sqlgate: --token-file {dir}/missing: cannot read the file: No such file or directory",
        ),
        (
            "recording",
            ["--recording", "{dir}/bad.jsonl"],
            "sqlgate: --recording {dir}/bad.jsonl:1: not a recorded message (no 'topic')",
        ),
    ],
)
def test_what_stops_it_is_said_in_one_line(
    broker: Broker, tmp_path: Path, setup: str, extra: list[str], message: str
) -> None:
    config = operator_config(tmp_path / "a", broker, bus=setup != "no-bus")
    (tmp_path / "bad.jsonl").write_text('{"payload": null}\n')
    args = [a.format(dir=tmp_path) for a in extra]
    done = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "tui", "-c", str(config), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [message.format(config=config, dir=tmp_path)]
