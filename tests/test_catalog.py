"""The view catalog's staleness (appliance/catalog.py): a statement that may change a
view makes its target stale as it goes, and only a read of the views that began after
its answer makes it current again; waiting for that is bounded. The reads are a fake
reader here (the real one is exercised through a gateway in test_masking_catalog.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import cast

from appliance.catalog import ViewCatalog
from appliance.config import Config, MaskingRuleConfig, MaskStrategy, TargetConfig
from appliance.policy.masking import ColumnRule, MaskingPolicy

RULE = MaskingRuleConfig("shop.cust.card", "shop", "cust", "card", MaskStrategy.REDACT)


class Reader:
    """Reads that each wait until released (``gate``), counted as they begin and end."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.begun = 0
        self.ended = 0

    def __call__(
        self, target: TargetConfig, timeout_s: float, mark: int, base: Sequence[ColumnRule]
    ) -> tuple[list[ColumnRule], frozenset[tuple[str, str, str]]]:
        self.begun += 1
        self.gate.wait(30)
        self.ended += 1
        return [], frozenset()


def catalog(reader: Reader, rules: list[MaskingRuleConfig] | None = None) -> ViewCatalog:
    config = SimpleNamespace(targets=[SimpleNamespace(name="db")], network=SimpleNamespace(mark=0))
    policy = MaskingPolicy([RULE] if rules is None else rules, b"k" * 32)
    return ViewCatalog(cast(Config, config), policy, timeout_s=0.5, read=reader)


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


def test_a_view_statement_holds_its_target_until_a_read_after_its_answer() -> None:
    async def story() -> None:
        reader = Reader()
        views = catalog(reader)
        await views.refresh()
        assert views.stale == set() and await views.current("db", 0)

        change = views.changing("db")  # CREATE VIEW goes to the target
        assert change is not None and views.stale == {"db"}
        waiting = asyncio.create_task(views.current("db", 10))
        await views.refresh()  # read while it runs: it may not have seen the view
        assert views.stale == {"db"} and not waiting.done()

        reader.gate.clear()  # a read begins before the answer and ends after it
        reading = asyncio.create_task(views.refresh())
        await wait_for(lambda: reader.begun == 3, "the read did not begin")
        views.changed(change)
        views.changed(change)  # once only
        reader.gate.set()
        await reading
        assert views.stale == {"db"} and not waiting.done()

        await views.refresh()  # began after the answer: current
        assert views.stale == set()
        assert await asyncio.wait_for(waiting, 1) is True

    asyncio.run(story())


def test_two_view_statements_hold_until_both_are_answered_and_read() -> None:
    async def story() -> None:
        views = catalog(Reader())
        await views.refresh()
        first, second = views.changing("db"), views.changing("db")
        assert first is not None and second is not None
        views.changed(first)
        await views.refresh()
        assert views.stale == {"db"}  # the second still runs
        views.changed(second)
        await views.refresh()
        assert views.stale == set()

    asyncio.run(story())


def test_the_wait_is_bounded_when_the_views_cannot_be_read() -> None:
    """Reads that never finish: ``current`` gives up after its time (the gateway then
    refuses the masked session's statement); the target stays stale."""

    async def story() -> None:
        reader = Reader()
        views = catalog(reader)
        assert views.hold_s == 1.5  # the read's own bound (timeout_s) and 1 s
        await views.refresh()
        change = views.changing("db")
        assert change is not None
        views.changed(change)
        reader.gate.clear()
        reading = asyncio.create_task(views.refresh())  # times out after timeout_s + 1
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert await views.current("db", 0.3) is False
        assert 0.25 < loop.time() - began < 5
        await reading
        assert views.stale == {"db"}  # the read failed: still stale
        assert await views.current("db", 0.05) is False
        reader.gate.set()
        await wait_for(lambda: reader.ended == reader.begun, "the held read did not end")
        await views.refresh()
        assert await views.current("db", 0) is True

    asyncio.run(story())


def test_the_background_reader_reads_again_at_once_after_the_answer() -> None:
    async def story() -> None:
        reader = Reader()
        views = catalog(reader)
        await views.start()
        try:
            change = views.changing("db")
            assert change is not None
            views.changed(change)
            assert await views.current("db", 1.5) is True
        finally:
            await views.close()

    asyncio.run(story())


def block_until(condition: Callable[[], bool]) -> None:
    """Hold the loop's thread until ``condition()`` (what a worker thread does then, and
    a little after, comes to the loop all at once)."""
    deadline = time.monotonic() + 5
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)


def test_a_close_in_the_turn_of_the_loop_a_read_ends_in_stops_the_reader() -> None:
    """Python 3.11's ``asyncio.wait_for`` returned a read that ended in the turn of the
    loop its cancel came in: the background reader went on reading, and the gateway's
    stop, which waits for it, never ended."""

    async def story() -> None:
        reader = Reader()
        views = catalog(reader)
        await views.start()
        reader.gate.clear()
        views.invalidate()  # (an EXECUTE was answered)
        await wait_for(lambda: reader.begun == 2, "the read did not begin")
        reader.gate.set()
        block_until(lambda: reader.ended == 2)  # the read's answer comes to the loop meanwhile
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # its answer is taken, the task that waits for it not woken
        async with asyncio.timeout(5):
            await views.close()

    asyncio.run(story())


def test_without_column_rules_no_view_is_read_nor_waited_for() -> None:
    async def story() -> None:
        views = catalog(Reader(), rules=[])
        assert views.changing("db") is None
        assert views.stale == set() and await views.current("db", 0)

    asyncio.run(story())
