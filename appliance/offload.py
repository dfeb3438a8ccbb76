"""Large statement texts are classified in a worker process, off the event loop.

Parsing takes about 2 µs a byte of SQL, and the compiled parser keeps the interpreter
lock while it runs, so a thread would not help: a megabyte-long text (an IN list of
100,000 values, a bulk INSERT) would hold the loop, and with it every other session,
for seconds. ``Offload`` hands such a text (``policy.gate.TextJob``) to one worker
process, started when the first one comes, and gives back what it made of it
(``policy.gate.Classified``); the session decides it then, in its turn.

When the worker cannot answer (it died, it could not start), the text is classified on
the loop as before: slower for everyone for a moment, never a different decision.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from appliance.policy.gate import Classified, TextJob, classify_text

log = logging.getLogger("sqlgate.offload")


def _worker_init() -> None:
    """The worker leaves signals to the gateway: a Ctrl-C in a terminal reaches the whole
    process group, and the gateway's own shutdown stops the worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Offload:
    """One worker process for the gateway's large statement texts."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self.jobs = 0  # texts the worker classified

    async def classify(self, job: TextJob) -> Classified | None:
        """What the worker made of the text; None if it could not (decide it here)."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
            )
        pool = self._pool
        try:
            classified = await asyncio.get_running_loop().run_in_executor(pool, classify_text, job)
        except BrokenProcessPool as exc:
            log.warning("the classifier worker stopped (%s); starting a new one", exc)
            if self._pool is pool:
                self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            return None
        except Exception as exc:  # a bug in the worker: the loop classifies it instead
            log.error("the classifier worker failed on a %d-byte text: %r", len(job.sql), exc)
            return None
        self.jobs += 1
        return classified

    def close(self) -> None:
        """Stop the worker (a job still running is abandoned)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
