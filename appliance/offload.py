"""Large statement texts are classified in a worker process, off the event loop.

Parsing takes about 2 µs a byte of SQL, and the compiled parser keeps the interpreter
lock while it runs, so a thread would not help: a megabyte-long text (an IN list of
100,000 values, a bulk INSERT) would hold the loop, and with it every other session,
for seconds. ``Offload`` hands such a text (``policy.gate.TextJob``) to one worker
process, started when the first one comes, and gives back what it made of it
(``policy.gate.Classified``); the session decides it then, in its turn.

Texts take turns by identity, round robin, and in the order they come within one: an
agent with many sessions sending slow texts gets one turn in the worker while each other
identity waiting gets one (first come, first served, three sessions of one agent each
sending 1 MB texts held another agent's 9 KB text for 10 to 12 s). A text the
worker has not read within ``JOB_TIMEOUT_S`` of starting on it is refused as not
understood (fail closed; the worker is replaced), and the texts after it wait their turn
with a new worker: time spent waiting does not count, so a burst of large texts from many
sessions is read one after the other, not refused. When the worker cannot answer at all (it died,
it could not start), ``classify`` gives None and the text is classified on the loop as
before: slower for everyone for a moment, never a different decision.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import multiprocessing
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from appliance.policy.gate import Classified, TextJob, classify_text, unclassified

log = logging.getLogger("sqlgate.offload")

JOB_TIMEOUT_S = 30.0
"""How long the worker may take over one text (a megabyte of SQL takes about 2 s)."""
_RETRY_S = 60.0  # after the worker could not be started, the loop classifies until then
_START_S = 60.0  # a new worker (a Python that imports the parser) must be ready by then
_PR_SET_PDEATHSIG = 1


def _ready() -> bool:
    """The worker has started (and imported what it needs): its first, empty job."""
    return True


def _worker_init() -> None:
    """The worker ends with the gateway, however the gateway ends (even SIGKILL), and
    leaves what a terminal sends the whole process group (Ctrl-C, Ctrl-\\, a hangup) to
    it: the gateway drains on the first two and ignores the third."""
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


class Offload:
    """One worker process for the gateway's large statement texts."""

    def __init__(self, timeout_s: float = JOB_TIMEOUT_S) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._timeout_s = timeout_s
        self._retry_at = 0.0  # the worker could not start: not before this (monotonic)
        self.jobs = 0  # texts the worker classified
        self._busy = False  # one text in the worker at a time
        # texts waiting for their turn, by identity, identities in the order they go next
        self._waiting: collections.OrderedDict[str, collections.deque[asyncio.Future[None]]]
        self._waiting = collections.OrderedDict()
        self._running = ""  # the identity whose text is in the worker (or was last)

    async def classify(self, job: TextJob, who: str = "") -> Classified | None:
        """What the worker made of the text, once its turn came (``who``: the identity
        whose text it is, see the module); a refusal if it took too long; None if it
        could not answer (decide it on the loop)."""
        await self._turn(who)
        try:
            return await self._classify(job)
        finally:
            self._pass_turn()

    async def _turn(self, who: str) -> None:
        """Wait until this text is the one in the worker."""
        if not self._busy:
            self._busy = True
            self._running = who
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(who, collections.deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._pass_turn()  # it was given the turn as it was cancelled: next one
            else:
                queue = self._waiting.get(who)
                if queue is not None and turn in queue:
                    queue.remove(turn)
                    if not queue:
                        del self._waiting[who]
            raise
        self._running = who

    def _pass_turn(self) -> None:
        """The worker is free: the next identity's first text goes, and that identity's
        next text (if any) waits behind every other identity's."""
        if len(self._waiting) > 1 and next(iter(self._waiting)) == self._running:
            self._waiting.move_to_end(self._running)  # it just had its turn
        while self._waiting:
            who, queue = next(iter(self._waiting.items()))
            turn = queue.popleft()
            if queue:
                self._waiting.move_to_end(who)
            else:
                del self._waiting[who]
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False

    async def _classify(self, job: TextJob) -> Classified | None:
        pool = self._pool
        if pool is None:
            if time.monotonic() < self._retry_at:
                return None
            try:
                pool = self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_worker_init,
                )
            except OSError as exc:  # no /dev/shm for its locks, no processes left, ...
                self._not_started(exc)
                return None
            if not await self._started(pool):
                return None
        loop = asyncio.get_running_loop()
        try:
            classified = await asyncio.wait_for(
                loop.run_in_executor(pool, classify_text, job), self._timeout_s
            )
        except TimeoutError:
            log.warning(
                "the classifier worker took more than %g s over a %d-byte text: refused, "
                "and the worker replaced",
                self._timeout_s,
                len(job.sql),
            )
            self._discard(pool)
            return unclassified(
                job,
                f"the gateway could not read this {len(job.sql)}-byte text within "
                f"{self._timeout_s:g} s; send shorter or simpler statements",
            )
        except BrokenProcessPool as exc:
            log.warning("the classifier worker stopped (%s); starting a new one", exc)
            self._discard(pool)
            return None
        except Exception as exc:  # a bug in the worker: the loop classifies it instead
            log.error("the classifier worker failed on a %d-byte text: %r", len(job.sql), exc)
            return None
        self.jobs += 1
        return classified

    async def _started(self, pool: ProcessPoolExecutor) -> bool:
        """Wait for a new worker to be up, so that a text's time limit counts its reading
        only, not the start of a process (seconds on a loaded machine)."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(pool, _ready), _START_S)
        except Exception as exc:  # it died, or never came up
            self._discard(pool)
            self._not_started(exc)
            return False
        return True

    def _not_started(self, why: BaseException) -> None:
        """No worker: the loop classifies large texts until a new try, a minute on."""
        log.error(
            "cannot start the classifier worker (%r); large texts are classified on the "
            "event loop for a minute",
            why,
        )
        self._retry_at = time.monotonic() + _RETRY_S

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Stop a worker (a job still running is abandoned): the next job starts anew."""
        if self._pool is pool:
            self._pool = None
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(OSError, AttributeError):
                process.kill()

    def close(self) -> None:
        """Stop the worker now: shutting down does not wait for a text it is reading."""
        if self._pool is not None:
            self._discard(self._pool)
