"""The worker process that classifies large texts: it answers as ``classify_text`` does
in-process, and when it dies the gateway gets None (and classifies on the loop) and the
next text gets a new worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance import offload as offload_module
from appliance.offload import Offload
from appliance.policy.gate import Classified, TextJob, classify_text
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


def test_a_text_the_worker_cannot_read_in_time_is_refused_and_the_worker_replaced() -> None:
    async def main() -> tuple[object, bool, object]:
        offload = Offload(timeout_s=0.5)
        try:
            await offload.classify(job("SELECT 1 FROM t WHERE " + ORS[:20_000]))  # started
            pool = offload._pool
            assert pool is not None
            (worker,) = pool._processes.values()
            late = await offload.classify(job(f"SELECT 2 FROM t WHERE {ORS} OR {ORS}"))
            await asyncio.sleep(0.5)
            again = await offload.classify(job("SELECT 3 FROM t WHERE " + ORS[:20_000]))
            return late, worker.is_alive(), again
        finally:
            offload.close()

    late, alive, again = asyncio.run(main())
    assert isinstance(late, Classified) and late.found is not None
    (refused,) = late.found
    assert refused.kind == "UNKNOWN" and refused.problem is not None
    assert "could not read this" in refused.problem and "within 0.5 s" in refused.problem
    assert not alive  # killed, not left to finish
    assert again == classify_text(job("SELECT 3 FROM t WHERE " + ORS[:20_000]))


def test_texts_of_many_sessions_take_turns_and_waiting_does_not_count() -> None:
    """A burst of large texts (one per session) is read one after the other, each with
    the whole time limit from its start: the later ones were refused for the time they
    waited behind the others, and a refusal's worker replacement cancelled the ones
    queued behind it (their sessions then waited forever)."""
    texts = [f"SELECT {i} FROM t WHERE " + ORS[:120_000] for i in range(16)]

    async def main() -> list[object]:
        offload = Offload(timeout_s=1.5)  # several times one text, less than all 16
        try:
            await offload.classify(job("SELECT 1"))  # the worker is up
            started = time.monotonic()
            await offload.classify(job(texts[0]))
            one = time.monotonic() - started
            assert 16 * one > 1.5, f"one text took {one:.2f} s: the burst would fit anyway"

            async def session(i: int) -> object:
                await asyncio.sleep(0.02 * i)  # they come one after the other
                return await offload.classify(job(texts[i]))

            return await asyncio.gather(*(session(i) for i in range(16)), return_exceptions=True)
        finally:
            offload.close()

    assert asyncio.run(main()) == [classify_text(job(t)) for t in texts]


def test_closing_stops_a_worker_in_the_middle_of_a_text() -> None:
    """Shutting down does not wait for the text the worker is reading: it is killed."""

    async def main() -> int | None:
        offload = Offload()
        await offload.classify(job("SELECT 1"))
        pool = offload._pool
        assert pool is not None
        (worker,) = pool._processes.values()
        task = asyncio.create_task(offload.classify(job(f"SELECT 2 FROM t WHERE {ORS}")))
        await asyncio.sleep(0.2)
        offload.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # The pool's own thread reaps the worker too: whichever waitpid loses sees no
        # child for a moment, so wait for the exit code rather than trust one join.
        deadline = time.monotonic() + 10
        while worker.exitcode is None and time.monotonic() < deadline:
            worker.join(0.05)
        return worker.exitcode

    assert asyncio.run(main()) == -signal.SIGKILL


def test_the_worker_ends_with_the_gateway_even_when_it_is_killed() -> None:
    """SIGKILL leaves no chance to stop the worker: the kernel's parent-death signal does."""
    script = (
        "import asyncio, os, sys\n"
        "from appliance.offload import Offload\n"
        "from appliance.policy.gate import TextJob\n"
        "from appliance.policy.lexer import LexMode\n"
        "async def main():\n"
        "    o = Offload()\n"
        "    await o.classify(TextJob(b'SELECT 1', LexMode(), False, 1 << 20, False))\n"
        "    print(*[p.pid for p in o._pool._processes.values()], flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        worker = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
            if "Z" in Path(f"/proc/{worker}/stat").read_text().split(")")[-1][:3]:
                break  # a zombie: ended, waiting for init to reap it
            time.sleep(0.05)
        stat = Path(f"/proc/{worker}/stat")
        assert not stat.exists() or "Z" in stat.read_text().split(")")[-1][:3]
    finally:
        proc.kill()


def test_a_worker_that_cannot_start_leaves_the_texts_to_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_processes(*args: object, **kwargs: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(offload_module, "ProcessPoolExecutor", no_processes)

    async def main() -> tuple[object, object]:
        offload = Offload()
        return await offload.classify(job("SELECT 1")), await offload.classify(job("SELECT 2"))

    assert asyncio.run(main()) == (None, None)


def test_identities_take_turns_in_the_worker() -> None:
    """One agent's many sessions each sending large texts had the worker first come,
    first served: another agent's text waited behind all of theirs (three sessions of 1
    MB texts held a 9 KB one for 10 to 12 s). Identities now take turns: it goes second."""
    order: list[str] = []

    async def main() -> None:
        offload = Offload()
        try:
            await offload.classify(job("SELECT 1"))  # the worker is up

            async def text(who: str, i: int, after: float) -> None:
                await asyncio.sleep(after)  # the other comes while the first is read
                await offload.classify(job(f"SELECT {i} FROM t WHERE " + ORS[:150_000]), who)
                order.append(who)

            await asyncio.gather(*(text("flood", i, 0) for i in range(5)), text("other", 6, 0.05))
        finally:
            offload.close()

    asyncio.run(main())
    assert order.index("other") == 1, order
