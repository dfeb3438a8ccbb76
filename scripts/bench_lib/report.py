"""The summary: one row per figure, medians over rounds, ratios and acceptance thresholds."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Acceptance thresholds (docs/performance.md explains each).
POINT_SELECT_MIN_RATIO = 0.50  # oltp_point_select, 8 threads: gateway / direct QPS
POINT_SELECT_LEDGER_MIN_RATIO = 0.45  # the same figure, read as "with the ledger on"
SELECT1_MAX_ADDED_P50_US = 60.0  # SELECT 1: gateway p50 - direct p50
STREAM_MIN_RATIO = 0.70  # large result: gateway / direct MB/s
STREAM_MAX_RSS_GROWTH_MB = 16.0  # "flat": max RSS while streaming - RSS before
IDLE_MAX_RSS_MB = 150.0  # 1,000 idle sessions: the gateway's whole RSS
LEDGER_APPEND_MIN_PER_S = 20_000.0  # statement records/s, group commit, fsync = false
LEDGER_VERIFY_MIN_PER_S = 100_000.0  # records/s, ``sqlgate ledger verify`` wall time
POLICY_CACHED_MAX_US = 5.0  # SessionPolicy.decide, exact text decided before
POLICY_UNCACHED_MAX_US = 150.0  # the same, a new ~300-byte join (compiled sqlglot)
APPROVAL_MAX_ADDED_P50_MS = 50.0  # held statement p50 - the same statement direct, p50
MASK_MIN_RATIO = 0.50  # a large result, one column masked: masked / unmasked MB/s
MASK_NO_RULE_MIN_RATIO = 0.95  # a result no rule applies to: with / without rules MB/s


@dataclass
class Figure:
    """One row: a value per column (None when it does not apply) and its verdict."""

    key: str
    label: str
    unit: str
    direct: float | None = None
    socat: float | None = None
    gateway: float | None = None
    decimals: int = 0
    ratios: bool = True  # print gateway/direct and gateway/socat
    threshold: str = ""
    passed: bool | None = None
    rounds: dict[str, list[float]] = field(default_factory=dict)

    @property
    def vs_direct(self) -> float | None:
        return _ratio(self.gateway, self.direct) if self.ratios else None

    @property
    def vs_socat(self) -> float | None:
        return _ratio(self.gateway, self.socat) if self.ratios else None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["ratios"]
        data["gateway_vs_direct"] = self.vs_direct
        data["gateway_vs_socat"] = self.vs_socat
        return data


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, decimals: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{decimals}f}"


def format_table(figures: Sequence[Figure]) -> str:
    """A plain-text table (also valid Markdown) of every figure."""
    head = ["metric", "direct", "socat", "gateway", "gw/direct", "gw/socat", "threshold", ""]
    rows = [head]
    for f in figures:
        verdict = {True: "PASS", False: "MISS", None: ""}[f.passed]
        rows.append(
            [
                f"{f.label} ({f.unit})" if f.unit else f.label,
                _fmt(f.direct, f.decimals),
                _fmt(f.socat, f.decimals),
                _fmt(f.gateway, f.decimals),
                _fmt(f.vs_direct, 2),
                _fmt(f.vs_socat, 2),
                f.threshold,
                verdict,
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i in (0, 6, 7) else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if n == 0:
            lines.append(
                "|"
                + "|".join(
                    "-" * (w + 1) + ":" if i not in (0, 6, 7) else "-" * (w + 2)
                    for i, w in enumerate(widths)
                )
                + "|"
            )
    return "\n".join(lines)
