"""Measurements that run in a Python process of their own.

A fresh process keeps what the benchmark itself imported, cached or allocated from
weighing on the figure, as in the gateway, which runs nothing else. The worker is
``python -m MODULE ARGS`` with this checkout on its path, and its last line of output is
one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .errors import BenchError

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600.0


def run_json(module: str, args: list[str], what: str) -> dict[str, Any]:
    """Run ``python -m module ARGS`` and return the JSON object it prints last."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SCRIPTS), str(REPO), env.get("PYTHONPATH", "")) if p
    )
    cmd = [sys.executable, "-m", module, *args]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} did not finish in {TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
        raise BenchError(f"{what} failed: {lines[-1]}")
    try:
        data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"{what}: no result in its output") from None
    return data
