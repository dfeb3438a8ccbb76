"""The worker process that classifies large texts: it answers as ``classify_text`` does
in-process, and when it dies the gateway gets None (and classifies on the loop) and the
next text gets a new worker."""

from __future__ import annotations

import asyncio
import os
import signal

from appliance.offload import Offload
from appliance.policy.gate import TextJob, classify_text
from appliance.policy.lexer import LexMode

ORS = " OR ".join(f"id = {i}" for i in range(40_000))


def job(sql: str, references: bool = False) -> TextJob:
    return TextJob(sql.encode(), LexMode(), False, 1024 * 1024, references)


def test_the_worker_answers_as_the_classifier_does_in_process() -> None:
    texts = [f"SELECT id FROM customers WHERE {ORS}", f"DELETE FROM t WHERE {ORS}; SELECT 1"]

    async def main() -> list[object]:
        offload = Offload()
        try:
            return [await offload.classify(job(t, references=True)) for t in texts]
        finally:
            offload.close()

    assert asyncio.run(main()) == [classify_text(job(t, references=True)) for t in texts]


def test_a_worker_that_dies_gives_none_and_the_next_text_a_new_worker() -> None:
    async def main() -> tuple[object, object, int | None, int | None]:
        offload = Offload()
        try:
            await offload.classify(job("SELECT 1 FROM t WHERE " + ORS[:40_000]))
            pool = offload._pool
            assert pool is not None
            (first,) = [p.pid for p in pool._processes.values()]
            task = asyncio.create_task(offload.classify(job(f"SELECT 2 FROM t WHERE {ORS}")))
            await asyncio.sleep(0.2)  # it is parsing now
            assert first is not None
            os.kill(first, signal.SIGKILL)
            lost = await task
            again = await offload.classify(job("SELECT 3 FROM t WHERE " + ORS[:40_000]))
            assert offload._pool is not None
            (second,) = [p.pid for p in offload._pool._processes.values()]
            return lost, again, first, second
        finally:
            offload.close()

    lost, again, first, second = asyncio.run(main())
    assert lost is None
    assert again == classify_text(job("SELECT 3 FROM t WHERE " + ORS[:40_000]))
    assert second != first
