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
