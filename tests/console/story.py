"""A recorded morning on two gateways, for snapshots, pilot tests without a broker and
the README screenshot: sessions that read, one that was blocked, one waiting for
approval, an ended one, alerts and signed heads. Times are fixed (``NOW``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tui.sources import Recorded, RecordedSource

NOW = datetime(2026, 11, 26, 10, 15, 30, tzinfo=UTC).timestamp()
PREFIX = "sqlgate"

_seq = {"edge-1": 100, "edge-2": 500}


def _ts(seconds_before: float) -> str:
    when = datetime.fromtimestamp(NOW - seconds_before, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(appliance: str, kind: str, ago: float, **fields: Any) -> dict[str, Any]:
    _seq[appliance] += 1
    return {
        "v": 1,
        "seq": _seq[appliance],
        "ts": _ts(ago),
        "kind": kind,
        "appliance": appliance,
        **fields,
    }


def _who(identity: str, client: str, target: str, db: str = "shop") -> dict[str, Any]:
    return {
        "identity": identity,
        "groups": ["agents"],
        "client": client,
        "target": target,
        "db": db,
    }


def messages() -> list[Recorded]:
    """The story, oldest first."""
    _seq.update({"edge-1": 100, "edge-2": 500})
    out: list[Recorded] = []

    def put(appliance: str, suffix: str, payload: dict[str, Any] | None) -> None:
        out.append(Recorded(f"{PREFIX}/{appliance}/{suffix}", payload))

    for gw in ("edge-1", "edge-2"):
        put(gw, "status", {"v": 1, "appliance": gw, "state": "online"})

    def session(
        gw: str, sid: str, who: dict[str, Any], ago: float, statements: list[tuple[Any, ...]]
    ) -> None:
        put(gw, f"sessions/{sid}/start", _record(gw, "session_start", ago, session=sid, **who))
        for n, (sql, decision, rule, reason, result, later) in enumerate(statements, 1):
            at = ago - later
            put(
                gw,
                f"sessions/{sid}/statements",
                _record(
                    gw,
                    "statement",
                    at,
                    session=sid,
                    statement_seq=n,
                    command="COM_QUERY",
                    sql=sql,
                    sql_sha256=f"{n:064x}",
                    decision=decision,
                    rule=rule,
                    reason=reason,
                    **who,
                ),
            )
            if result is not None:
                put(
                    gw,
                    f"sessions/{sid}/results",
                    _record(gw, "result", at - 0.01, session=sid, statement_seq=n, **result, **who),
                )

    agent = _who("agent@example.com", "10.77.1.10:53122", "orders")
    session(
        "edge-1",
        "edge-1-7a01-1",
        agent,
        300,
        [
            (
                "SELECT id, email, card_number FROM customers WHERE id = 42",
                "allowed",
                None,
                None,
                {"rows": 1, "duration_ms": 0.8, "masked": ["card_number"]},
                1,
            ),
            (
                "SELECT COUNT(*) FROM orders WHERE created_at > NOW() - INTERVAL 1 DAY",
                "allowed",
                None,
                None,
                {"rows": 1, "duration_ms": 3.2},
                20,
            ),
            (
                "DELETE FROM orders",
                "blocked",
                "no-unbounded-writes",
                "DELETE without WHERE changes every row of shop.orders",
                {"error": 1227, "duration_ms": 0.1},
                42,
            ),
            (
                "DELETE FROM orders WHERE id = 17",
                "allowed",
                None,
                None,
                {"affected": 1, "duration_ms": 2.4},
                60,
            ),
            (
                "ALTER TABLE orders ADD COLUMN note TEXT",
                "pending",
                "review-schema-changes",
                "ALTER TABLE on shop.orders: a schema change needs a person's approval",
                None,
                90,
            ),
        ],
    )
    put(
        "edge-1",
        "approvals/4f0c2e9b1d7a",
        {
            "v": 1,
            "appliance": "edge-1",
            "session": "edge-1-7a01-1",
            "statement_seq": 5,
            **agent,
            "command": "COM_QUERY",
            "sql": "ALTER TABLE orders ADD COLUMN note TEXT",
            "rule": "review-schema-changes",
            "reason": "ALTER TABLE on shop.orders: a schema change needs a person's approval",
            "rows_estimate": None,
            "id": "4f0c2e9b1d7a",
            "sql_sha256": "5" * 64,
            "approver_groups": ["dba"],
            "fingerprint": "9d4e" * 16,
            "requested_at": NOW - 210,
            "expires_at": NOW + 90,
        },
    )
    bot = _who("ci-bot", "10.77.1.11:40210", "orders")
    session(
        "edge-1",
        "edge-1-7a01-2",
        bot,
        240,
        [
            (
                "UPDATE orders SET status = 'shipped' WHERE id IN (3, 4)",
                "pending",
                "review-bulk-updates",
                "UPDATE on shop.orders needs a person's approval",
                None,
                5,
            ),
        ],
    )
    put(
        "edge-1",
        "approvals/b81e44c0aa93",
        {
            "v": 1,
            "appliance": "edge-1",
            "session": "edge-1-7a01-2",
            "statement_seq": 1,
            **bot,
            "command": "COM_QUERY",
            "sql": "UPDATE orders SET status = 'shipped' WHERE id IN (3, 4)",
            "rule": "review-bulk-updates",
            "reason": "UPDATE on shop.orders needs a person's approval",
            "rows_estimate": 2,
            "id": "b81e44c0aa93",
            "sql_sha256": "6" * 64,
            "approver_groups": ["dba"],
            "fingerprint": "77aa" * 16,
            "requested_at": NOW - 235,
            "expires_at": NOW + 8,
        },
    )
    analyst = _who("dana@example.com", "10.77.1.12:41000", "billing", "billing")
    session(
        "edge-2",
        "edge-2-c3f0-9",
        analyst,
        1900,
        [
            (
                "SELECT invoice_id, total FROM invoices ORDER BY total DESC LIMIT 10",
                "allowed",
                None,
                None,
                {"rows": 10, "duration_ms": 5.1},
                3,
            ),
        ],
    )
    put(
        "edge-2",
        "sessions/edge-2-c3f0-9/end",
        _record(
            "edge-2",
            "session_end",
            1500,
            session="edge-2-c3f0-9",
            reason="client quit",
            statements=1,
            **analyst,
        ),
    )
    put(
        "edge-1",
        "alerts",
        _record(
            "edge-1",
            "alert",
            120,
            alert="runaway_statements",
            reason="agent@example.com ran 212 statements in 1 s (limit 200)",
            session="edge-1-7a01-1",
        ),
    )
    put(
        "edge-2",
        "alerts",
        _record(
            "edge-2",
            "alert",
            60,
            alert="bypass",
            reason="10.77.1.66:51544 reached 10.77.2.10:3306 without the gateway",
        ),
    )
    for gw in ("edge-1", "edge-2"):
        put(
            gw,
            "checkpoints",
            {
                "v": 1,
                "seq": _seq[gw],
                "hash": ("c0ffee" if gw == "edge-1" else "beef01") * 10 + "abcd",
                "ts": _ts(1),
                "signature": "c2lnbmF0dXJl",
                "key_id": "3f2a9c1e" if gw == "edge-1" else "77d0b2aa",
            },
        )
    return out


def source(**kwargs: Any) -> RecordedSource:
    return RecordedSource(messages(), prefix=PREFIX, name="shop-morning", **kwargs)
