"""What the gateway's own background reads of a target (views, global sql_mode) say
when they fail: one warning per reason, not one per retry."""

from __future__ import annotations

import logging

import pytest

from appliance.side_connection import ReadFailures


def test_a_failing_read_is_logged_once_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.side_connection")
    failures = ReadFailures("its views for masking", log)
    with caplog.at_level(logging.WARNING, logger=log.name):
        for _ in range(3):
            failures.failed("shop", ConnectionRefusedError("refused"))
        failures.failed("shop", TimeoutError())  # a new reason: said again
        failures.failed("billing", ConnectionRefusedError("refused"))  # another target
    assert [r.getMessage() for r in caplog.records] == [
        "target shop: cannot read its views for masking: refused",
        "target shop: cannot read its views for masking: TimeoutError",
        "target billing: cannot read its views for masking: refused",
    ]
    assert failures.succeeded("shop") is True
    assert failures.succeeded("shop") is False  # already forgotten
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=log.name):
        failures.failed("shop", TimeoutError())  # after a success, a failure is news
    assert len(caplog.records) == 1
