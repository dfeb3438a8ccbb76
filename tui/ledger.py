"""The ledger file, read-only, for the console's history, ledger screen and search.

The console opens the file only for reading (SQLite ``mode=ro``), so it can run beside
a gateway that is writing. Every call is synchronous and meant for a worker thread; every
problem is a ``LedgerError`` (a file, a key, a damaged ledger) whose text the screen shows.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.ledger.chain import Head, LedgerKeyError, VerifyResult, load_public_key
from appliance.ledger.store import LedgerFileError, open_ledger, read_head, verify_file

__all__ = ["LedgerFile", "LedgerKeyError", "LedgerFileError", "Verification"]

HISTORY_RECORDS = 5000
"""Records read at start to show recent sessions before live events arrive."""


@dataclass(frozen=True, slots=True)
class Verification:
    """What ``verify`` found, in words for the screen."""

    ok: bool
    summary: str
    result: VerifyResult | None = None


class LedgerFile:
    """One ledger database and, when known, its public key (``ledger.pub``)."""

    def __init__(self, path: Path, public_key: Path | None) -> None:
        self.path = path
        self.public_key = public_key

    def _load(self, sql: str, params: tuple[object, ...]) -> list[dict[str, Any]]:
        """The bodies ``sql`` selects, oldest first. Each query reads ``records NOT
        INDEXED``: the text shown is the table's, not that of an index rewritten in the
        file (``ledger verify`` reports one)."""
        conn = open_ledger(self.path)
        try:
            rows = conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise LedgerFileError(f"{self.path}: cannot read: {exc}") from None
        finally:
            conn.close()
        records = []
        for (body,) in reversed(rows):
            try:
                record = json.loads(body)
            except (TypeError, ValueError):
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def recent(self, limit: int = 200) -> list[dict[str, Any]]:
        """The last ``limit`` records, oldest first."""
        return self._load(
            "SELECT body FROM records NOT INDEXED ORDER BY seq DESC LIMIT ?", (limit,)
        )

    def history(self, limit: int = HISTORY_RECORDS) -> list[dict[str, Any]]:
        """The last ``limit`` records of the kinds the sessions screen shows, each with the
        gateway that wrote it (``appliance``, as live events carry it)."""
        started = self._load(
            "SELECT body FROM records NOT INDEXED WHERE kind = 'appliance_start' "
            "ORDER BY seq DESC LIMIT 1",
            (),
        )
        name = started[0].get("appliance") if started else None
        records = self._load(
            "SELECT body FROM records NOT INDEXED WHERE kind IN "
            "('session_start', 'statement', 'result', 'approval', 'session_end', 'alert') "
            "ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        if isinstance(name, str):
            for record in records:
                record.setdefault("appliance", name)
        return records

    def search(self, text: str, limit: int = 200) -> list[dict[str, Any]]:
        """The last ``limit`` records whose JSON contains ``text`` (case-insensitive for
        ASCII), oldest first."""
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return self._load(
            "SELECT body FROM records NOT INDEXED WHERE body LIKE ? ESCAPE '\\' "
            "ORDER BY seq DESC LIMIT ?",
            (f"%{escaped}%", limit),
        )

    def head(self) -> Head | None:
        return read_head(self.path)

    def verify(self) -> Verification:
        """The whole chain and its signatures, in one read snapshot."""
        if self.public_key is None:
            return Verification(
                False, "not verified: no public key (ledger.pub beside [ledger] signing_key)"
            )
        key = load_public_key(self.public_key)
        result = verify_file(self.path, key)
        if result.ok:
            signed = (
                f"signed through seq {result.last_checkpoint_seq}"
                if result.last_checkpoint_seq is not None
                else "no checkpoint yet"
            )
            late = "".join(
                f"; records {first} to {last} signed after the fact, not the gateway's word"
                for first, last in result.signed_after_the_fact
            )
            return Verification(
                True,
                f"verified: {result.records} records intact, {signed}, "
                f"{result.unsigned} after the last checkpoint{late}",
                result,
            )
        return Verification(False, f"FAILED at seq {result.first_bad_seq}: {result.reason}", result)


def public_key_beside(signing_key: Path) -> Path | None:
    """``ledger.pub`` where ``sqlgate keygen`` put it, next to the signing key."""
    candidate = signing_key.with_name("ledger.pub")
    return candidate if candidate.is_file() else None
