"""Messages that carry data from workers to the app; handlers alone change state."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from appliance.replay import Step
from tui.ledger import Verification
from tui.sources import Item

__all__ = ["FromLedger", "FromSource", "LedgerRead", "ReplayLoaded", "Verified"]


class FromSource(Message):
    """Items from the live source, in order (bus events, changes of the link,
    ``Synced``, ``TooLarge``): a batch of what came within ``BATCH_S``."""

    def __init__(self, items: list[Item]) -> None:
        super().__init__()
        self.items = items


class FromLedger(Message):
    """Recent session records read from the ledger file at start."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        super().__init__()
        self.records = records


class LedgerRead(Message):
    """Records for the ledger screen (recent ones, or a search's hits), or why not."""

    def __init__(self, records: list[dict[str, Any]], query: str | None, error: str | None) -> None:
        super().__init__()
        self.records = records
        self.query = query
        self.error = error


class Verified(Message):
    """The ledger file's verification."""

    def __init__(self, verification: Verification) -> None:
        super().__init__()
        self.verification = verification


class ReplayLoaded(Message):
    """A session's steps read from the ledger file for the replay screen, or why not."""

    def __init__(self, session: str, steps: list[Step], error: str | None) -> None:
        super().__init__()
        self.session = session
        self.steps = steps
        self.error = error
