"""The gateway's own interception at its stop, when netlink refuses the removal."""

from __future__ import annotations

import asyncio
import logging

import pytest
from conftest import MakeConfig

from appliance.interception import Interception
from netconfig import nft


def test_rules_that_cannot_be_removed_at_stop_are_said_in_one_line(
    make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The stop raised a traceback out of the gateway instead of saying what to do."""
    interception = Interception(make_config())

    def refused(netns: str | None = None) -> bool:
        raise nft.NftError("netlink: permission denied (CAP_NET_ADMIN is needed)")

    monkeypatch.setattr(nft, "remove", refused)
    with caplog.at_level(logging.ERROR, logger="sqlgate.net"):
        assert asyncio.run(interception.stop()) is False
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("cannot remove the interception rules: netlink: permission denied")
    assert "'sqlgate net remove'" in line


def test_a_target_name_that_cannot_be_planned_is_said_once_not_at_every_look_up(
    make_config: MakeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway re-plans after every look-up of the names (30 s): a name without an
    address for longer than its addresses are kept would log an error each time."""
    answers: dict[str, list[str]] = {"db.example": ["10.77.2.10"]}

    def resolve(host: str) -> list[str]:
        found = answers.get(host)
        if not found:
            raise LookupError("Name or service not known")
        return found

    interception = Interception(make_config([("orders", "db.example")]), resolve=resolve)
    answers.clear()

    async def look_ups() -> None:
        for _ in range(3):
            await interception.replan()

    with caplog.at_level(logging.ERROR, logger="sqlgate.net"):
        asyncio.run(look_ups())
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("interception rules not changed: ")
    assert "cannot use 'db.example': Name or service not known" in line
