"""``sqlgate tui``: build the console from a configuration and run it in the terminal.

The configuration is the operator's: ``[bus]`` with their broker credentials (the
operator ACL of docs/events.md), ``[identity] username_claim`` to name them from their
token, and ``[ledger]`` when the ledger file is on this machine (read-only: history, the
ledger screen and its verification). Problems are ``ConsoleError``: one line, and the
exit status.
"""

from __future__ import annotations

import os
import sys

from appliance.config import Config
from appliance.operator import OperatorError, read_token_for
from tui.ledger import LedgerFile, public_key_beside

__all__ = ["ConsoleError", "run_console"]


class ConsoleError(Exception):
    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _ledger(config: Config) -> tuple[LedgerFile | None, str]:
    path = config.ledger.path
    if not path.is_file():
        return None, f"{path} is not on this machine (history comes from the bus only)"
    if not os.access(path, os.R_OK):
        return None, f"{path} is not readable by this user"
    return LedgerFile(path, public_key_beside(config.ledger.signing_key)), ""


def run_console(
    config: Config,
    config_path: str,
    token_file: str | None = None,
    recording: str | None = None,
    speed: float | None = None,
) -> int:
    """Run the console until the operator quits; 0, or ConsoleError."""
    from tui.app import ConsoleApp, Operator
    from tui.sources import MqttSource, RecordedSource, Source

    operator = None
    if token_file is not None:
        claim = config.identity.username_claim if config.identity is not None else "email"
        try:
            token, name = read_token_for(token_file, claim)
        except OperatorError as exc:
            raise ConsoleError(str(exc), exc.status) from None
        operator = Operator(name, token)
    source: Source
    if recording is not None:
        try:
            source = RecordedSource.from_file(
                recording, prefix=config.bus.topic_prefix, speed=speed
            )
        except OSError as exc:
            raise ConsoleError(f"--recording {recording}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ConsoleError(f"--recording {exc}") from None
    else:
        if not config.bus.enabled:
            raise ConsoleError(
                f"{config_path}: no [bus] section: the console reads the MQTT broker"
            )
        source = MqttSource(config.bus)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise ConsoleError("the console needs a terminal (standard input and output)")
    ledger, note = _ledger(config)
    ConsoleApp(source, ledger=ledger, ledger_note=note, operator=operator).run()
    return 0
