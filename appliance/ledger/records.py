"""Builders for the fields of each ledger record kind (SPEC §9), pure.

Each function returns the fields a caller hands to ``LedgerWriter.append``; the writer
adds ``seq``, ``ts``, ``prev_hash`` and ``hash``. Every key of a kind is always present
(None when unknown), so an auditor sees one shape per kind. Extra keyword arguments
become extra fields (identifier names; str, int, float, bool, None or list of str).

Conventions: ``client`` is ``ip:port``; ``groups`` and ``masked`` are lists of str;
``error`` is the MySQL error code (None on success); ``duration_ms`` is rounded to 3
decimals so its JSON is stable; ``sql_sha256`` is the SHA-256 of the exact statement
bytes received (``sql_sha256(payload)``), ``sql`` the text as decoded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from appliance.ledger.chain import FieldValue
from appliance.mysql.charsets import read_text

__all__ = [
    "Fields",
    "alert",
    "appliance_start",
    "approval",
    "auth_failed",
    "read_text",
    "result",
    "session_end",
    "session_start",
    "sql_sha256",
    "statement",
]

Fields = dict[str, FieldValue]


def sql_sha256(data: bytes | str) -> str:
    """Hex SHA-256 of the exact statement bytes (text is encoded as UTF-8)."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _ms(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _strings(values: Iterable[str] | None) -> list[str] | None:
    return None if values is None else [str(v) for v in values]


def appliance_start(
    *, appliance: str, version: str, config_sha256: str, **extra: FieldValue
) -> Fields:
    """The gateway started: its name, software version and the hash of its config file."""
    return {
        "kind": "appliance_start",
        "appliance": appliance,
        "version": version,
        "config_sha256": config_sha256,
        **extra,
    }


def session_start(
    *,
    session: str,
    identity: str | None,
    groups: Iterable[str],
    client: str,
    target: str,
    db: str | None = None,
    **extra: FieldValue,
) -> Fields:
    """A client authenticated and its session began."""
    return {
        "kind": "session_start",
        "session": session,
        "identity": identity,
        "groups": _strings(groups),
        "client": client,
        "target": target,
        "db": db,
        **extra,
    }


def auth_failed(
    *,
    client: str,
    target: str | None,
    identity: str | None,
    reason: str,
    session: str | None = None,
    **extra: FieldValue,
) -> Fields:
    """A client failed to authenticate (``identity`` is what it claimed, if anything)."""
    return {
        "kind": "auth_failed",
        "session": session,
        "identity": identity,
        "client": client,
        "target": target,
        "reason": reason,
        **extra,
    }


def statement(
    *,
    session: str,
    statement_seq: int,
    identity: str | None,
    groups: Iterable[str],
    client: str,
    target: str,
    db: str | None,
    command: str,
    sql: str,
    sql_sha256: str,
    decision: str,
    rule: str | None,
    reason: str | None,
    **extra: FieldValue,
) -> Fields:
    """A statement and the policy decision, committed before it is forwarded.

    ``decision`` is ``allowed``, ``blocked``, ``pending``, ``approved``, ``denied`` or
    ``expired``; ``statement_seq`` numbers statements within the session and is shared
    with the ``result`` record.
    """
    return {
        "kind": "statement",
        "session": session,
        "statement_seq": statement_seq,
        "identity": identity,
        "groups": _strings(groups),
        "client": client,
        "target": target,
        "db": db,
        "command": command,
        "sql": sql,
        "sql_sha256": sql_sha256,
        "decision": decision,
        "rule": rule,
        "reason": reason,
        **extra,
    }


def result(
    *,
    session: str,
    statement_seq: int,
    rows: int | None,
    affected: int | None,
    error: int | None,
    duration_ms: float | None,
    masked: Iterable[str] = (),
    approver: str | None = None,
    **extra: FieldValue,
) -> Fields:
    """What came back for a statement: rows returned, rows affected, error code, timing."""
    return {
        "kind": "result",
        "session": session,
        "statement_seq": statement_seq,
        "rows": rows,
        "affected": affected,
        "error": error,
        "duration_ms": _ms(duration_ms),
        "masked": _strings(masked),
        "approver": approver,
        **extra,
    }


def approval(
    *,
    session: str,
    statement_seq: int,
    decision: str,
    approver: str | None,
    reason: str | None,
    **extra: FieldValue,
) -> Fields:
    """A held statement was decided: ``approved``, ``denied`` or ``expired``."""
    return {
        "kind": "approval",
        "session": session,
        "statement_seq": statement_seq,
        "decision": decision,
        "approver": approver,
        "reason": reason,
        **extra,
    }


def session_end(
    *,
    session: str,
    reason: str | None = None,
    statements: int | None = None,
    duration_ms: float | None = None,
    **extra: FieldValue,
) -> Fields:
    """A session ended (``reason``: client quit, server closed, error text...)."""
    return {
        "kind": "session_end",
        "session": session,
        "reason": reason,
        "statements": statements,
        "duration_ms": _ms(duration_ms),
        **extra,
    }


def alert(*, alert: str, reason: str, session: str | None = None, **extra: FieldValue) -> Fields:
    """Something an operator must look at: ``alert`` names it, ``reason`` explains it."""
    return {"kind": "alert", "alert": alert, "session": session, "reason": reason, **extra}
