"""The live source's plumbing without a broker: items reach the app in batches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from console.drive import Run, drive
from console.story import NOW, source

from tui.app import ConsoleApp
from tui.sources import Batcher, BusEvent, Item, RecordedSource, Synced


def event(n: int) -> BusEvent:
    return BusEvent(
        "gw",
        ("sessions", f"s{n % 40}", "statements"),
        {
            "v": 1,
            "seq": n,
            "kind": "statement",
            "session": f"s{n % 40}",
            "statement_seq": n,
            "sql": f"SELECT {n}",
            "decision": "allowed",
        },
    )


def test_items_go_on_in_order_in_batches_at_most_every_50_ms() -> None:
    batches: list[tuple[float, list[Item]]] = []
    burst: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # (``most`` out of the way: a full batch goes at once, test_a_full_batch_goes_at_once)
        batcher = Batcher(
            lambda items: batches.append((loop.time(), items)), every_s=0.05, most=100_000
        )
        batcher(event(0))  # after a quiet spell: at the loop's next turn
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(batches) == 1
        burst.append(loop.time())
        for n in range(1, 2001):  # a burst, as fast as the broker sends it
            batcher(event(n))
            if n % 100 == 0:
                await asyncio.sleep(0.005)
        batcher(Synced())
        burst.append(loop.time())
        await asyncio.sleep(0.2)

    asyncio.run(main())
    items = [item for _, batch in batches for item in batch]
    assert items[:-1] == [event(n) for n in range(2001)] and items[-1] == Synced()
    # 1, then one per 50 ms of the burst (however long a loaded machine made it last)
    assert len(batches) <= 3 + (burst[1] - burst[0]) / 0.05
    gaps = [b[0] - a[0] for a, b in zip(batches[1:], batches[2:], strict=False)]
    assert all(gap >= 0.049 for gap in gaps)


def test_a_full_batch_goes_at_once() -> None:
    batches: list[list[Item]] = []

    async def main() -> None:
        batcher = Batcher(batches.append, every_s=60, most=100)
        batcher(event(0))
        await asyncio.sleep(0)
        for n in range(1, 201):
            batcher(event(n))  # no await: only the size can flush

    asyncio.run(main())
    assert [len(batch) for batch in batches] == [1, 100, 100]


def test_a_burst_of_events_is_one_message_to_the_app() -> None:
    src = source()
    app = ConsoleApp(src, clock=lambda: NOW)
    sizes: list[int] = []
    post = app._inbox._post
    app._inbox._post = lambda items: (sizes.append(len(items)), post(items))  # type: ignore[method-assign]

    async def scenario(run: Run) -> None:
        await src.played.wait()
        await run.settle()
        sizes.clear()
        for n in range(2000):
            run.app._deliver(event(n))
        await run.until("the burst", lambda: sum(sizes) == 2000)
        await run.until(
            "every statement",
            lambda: (
                sum(s.statements for s in run.app.model.sessions.values() if s.appliance == "gw")
                == 2000
            ),
        )

    drive(app, scenario)
    assert sizes == [1000, 1000]  # BATCH_MAX each, instead of 2,000 messages


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"topic": "t", "at": 0}\n\xce\x00\n', "2: not UTF-8 text"),
        (
            b'["topic", "payload"]\n',
            "1: not a recorded message (a JSON object with topic, payload and at is expected)",
        ),
        (b'{"payload": null}\n', "1: not a recorded message (no 'topic')"),
        (
            b'{"topic": "t", "at": "soon"}\n',
            "1: not a recorded message (could not convert string to float: 'soon')",
        ),
    ],
    ids=["binary", "array", "no-topic", "bad-at"],
)
def test_a_recording_that_is_not_one_is_named_by_its_line(
    tmp_path: Path, content: bytes, why: str
) -> None:
    """A line that was not UTF-8 came out as the codec's words, naming no file or line;
    a JSON array as "list indices must be integers or slices, not str"."""
    path = tmp_path / "rec.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError) as caught:
        RecordedSource.from_file(path)
    assert str(caught.value) == f"{path}:{why}"
