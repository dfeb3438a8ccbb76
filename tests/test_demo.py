"""``scripts/demo`` end to end in a real terminal (tmux), as a newcomer runs it: it
reaches the console with the held ALTER TABLE in under three minutes, the operator
approves it with keys, the column exists in MariaDB, and quitting tears everything down.

The demo uses its own namespaces (``sgdemo-*``) and addresses (10.79.x), apart from
``scripts/lab`` (``sqlgate-*``, 10.77.x) and the suite's labs (``sgtXXXX-*``)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pymysql
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
DEMO_PREFIX = "sgdemo-"
ALTER = "ALTER TABLE orders ADD COLUMN note TEXT"
CONSOLE_DEADLINE_S = 180  # from the start of scripts/demo, its install-deps included
TEARDOWN_S = 120


class Terminal:
    """One tmux server of its own, with one window running a command; ``screen`` reads
    the visible screen, or with ``history`` everything the window printed."""

    def __init__(self, socket: str, command: list[str], size: tuple[int, int]) -> None:
        self.socket = socket
        shell = shlex.join(command) + "; echo sqlgate-exit=$?; sleep 600"
        try:
            self.tmux(
                "new-session", "-d", "-s", "demo", "-x", str(size[0]), "-y", str(size[1]), shell
            )
        except BaseException:
            self.close()  # a server may have started all the same
            raise

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "demo", *keys)

    def screen(self, history: bool = False) -> str:
        return self.tmux("capture-pane", "-p", "-t", "demo", *(["-S", "-"] if history else []))

    def until(
        self, what: str, check: Callable[[str], bool], timeout_s: float, history: bool = False
    ) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.screen(history)
            if check(text):
                return text
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out waiting for {what}:\n{self.screen(history=True)}")
            time.sleep(0.2)

    def close(self) -> None:
        """Ends the window: the demo gets SIGHUP and tears down by itself."""
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def demo_processes(base: Path) -> list[str]:
    """Command lines of running processes that name the demo's work directory (its
    MariaDB, Mosquitto, gateway and console all do), the tmux window's shell aside."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(base) in cmdline and "sqlgate-exit=" not in cmdline:
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def demo_namespaces() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(DEMO_PREFIX))
    except FileNotFoundError:
        return []


def order_columns(base: Path) -> list[str]:
    """shop.orders' columns, asked of the demo's MariaDB itself (root, Unix socket)."""
    state = json.loads((base / "state.json").read_text())
    conn = pymysql.connect(
        unix_socket=state["db_socket"], user="root", password=state["root_password"]
    )
    with conn, conn.cursor() as cur:
        cur.execute("SHOW COLUMNS FROM shop.orders")
        return [str(row[0]) for row in cur.fetchall()]


def wait_for(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.mark.timeout(CONSOLE_DEADLINE_S + 2 * TEARDOWN_S)
def test_the_demo_reaches_the_console_and_an_approval_completes(tmp_path: Path) -> None:
    base = tmp_path / "demo"
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    command = ["env", f"PATH={path}", f"SQLGATE_DEMO_DIR={base}", str(REPO / "scripts/demo")]
    started = time.monotonic()
    terminal = Terminal(f"sqlgate-demo-{os.getpid()}", command, (120, 40))
    try:
        # The agent's story is printed first; Enter opens the console without the pause.
        text = terminal.until(
            "the scripted session",
            lambda s: "Press Enter to open the console" in s,
            CONSOLE_DEADLINE_S,
            history=True,
        )
        assert "************1111" in text and "4111111111111111 and ada@example.com" in text
        assert "blocked: (1227) sqlgate: blocked by rule 'delete-without-where'" in text
        assert "held for approval" in text
        terminal.keys("Enter")
        remaining = CONSOLE_DEADLINE_S - (time.monotonic() - started)
        terminal.until("the pending badge", lambda s: "1 PENDING" in s, max(remaining, 1))
        took = time.monotonic() - started
        assert took < CONSOLE_DEADLINE_S, f"the console showed the request after {took:.0f} s"

        terminal.keys("2")
        screen = terminal.until("the request", lambda s: ALTER in s, 20)
        assert "review-schema-changes" in screen
        terminal.keys("a")
        terminal.until("no request left", lambda s: "No statement is waiting" in s, 20)
        assert wait_for(lambda: "note" in order_columns(base), 20), order_columns(base)

        terminal.keys("q")
        text = terminal.until(
            "the demo's end", lambda s: "sqlgate-exit=" in s, TEARDOWN_S, history=True
        )
        assert "sqlgate-exit=0" in text
        assert f"{ALTER}: completed" in text
        assert "the ledger's approval record: approved by dba@example.com" in text
        assert "gateway stopped with SIGTERM (exit 0), its rules removed" in text
        assert "demo torn down: nothing left running" in text
        assert "Traceback" not in text
    finally:
        terminal.close()  # after a failure: the demo tears down on SIGHUP; wait for it
        wait_for(lambda: not demo_processes(base) and not demo_namespaces(), TEARDOWN_S)
    assert demo_processes(base) == []
    assert demo_namespaces() == []
    assert not base.exists()
    print(f"scripts/demo showed the pending approval after {took:.1f} s")


def test_no_console_runs_everything_else_and_tears_down(tmp_path: Path) -> None:
    """``--no-console``: the same story, nothing approved, everything removed (and it
    runs again right after the interactive run above)."""
    base = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts/demo.py"), "--no-console"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, SQLGATE_DEMO_DIR=str(base)),
        timeout=TEARDOWN_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "intercepting: 10.79.2.10:3306 -> :3307" in out
    assert "  1   Ada Lovelace  ****   ************1111" in out
    assert "blocked: (1227) sqlgate: blocked by rule 'delete-without-where'" in out
    assert "sqlgate approvals list: " in out and f"sgdemo-gw/orders  600s left  {ALTER}" in out
    assert f"{ALTER}: refused after" in out and "the gateway is shutting down" in out
    assert "sqlgate ledger verify: ok:" in out
    assert out.rstrip().endswith("demo torn down: nothing left running")
    assert (done.stderr, demo_processes(base), demo_namespaces()) == ("", [], [])
    assert not base.exists()
