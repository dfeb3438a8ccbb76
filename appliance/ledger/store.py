"""The ledger database: the gateway's writer (aiosqlite) and the readers (sqlite3).

Storage: one SQLite file in WAL mode, ``PRAGMA application_id`` marks it as a sqlgate
ledger, and one table::

    records(seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, kind TEXT NOT NULL,
            session TEXT, body TEXT NOT NULL)

``body`` is the record's canonical JSON and the only source of truth; ``ts``, ``kind``
and ``session`` are copies for the export filters. Verification reports a copy column
that differs from its body (an export filtered on it would miss or include a record),
and a body whose seq differs from its row's seq; ``read_head`` finds the latest
checkpoint by the bodies. Every reader refuses a ``records`` of another shape (a view, a
column of its own: ``_records_shape``). Triggers refuse UPDATE and DELETE,
which stops accidents, not an attacker: the hash chain and the signatures do that.

Writing (``LedgerWriter``): ``append`` queues the fields and waits; everything queued is
sealed in order, inserted in one transaction and committed (group commit), then every
waiting caller is answered. A checkpoint is added when records have been unsigned for
``checkpoint_interval`` seconds (1 s), and at ``close``. With ``fsync`` the database runs
``synchronous=FULL`` (each commit survives power loss) and a writer task commits in
aiosqlite's thread, where the flush cannot stall the event loop. Without it, the database
runs ``synchronous=NORMAL`` (survives a crash of the process; WAL): a commit is a write
to the WAL with no flush, about 20 µs, less than the two thread hand-offs it would
otherwise take, so it runs on the loop, in a callback scheduled by the first record
someone waits for (``_commit_on_loop``: no task switch), through a second, plain
connection that never waits for a lock and never checkpoints the WAL itself. Anything that
callback cannot do at once (a busy file, retried asynchronously up to ``busy_timeout``; a
reopen; a failure to report) and the WAL checkpoint after each signed checkpoint are the
writer task's; while it works, records queue behind it, in order. ``backlog`` counts the
records queued, ``backlog_bytes`` what the records queued or in the commit under way
hold (their SQL texts and recordings, by length): the marks at which the gateway stops
reading its clients (``below`` says when the queue is under them again).

One writer per file: while open, the writer holds an exclusive ``flock`` on
``<ledger>.lock`` beside it (its pid inside, for the message); another writer of the file
gets LedgerFileError ("in use by another gateway"). The readers below take no lock.

Failures: when the file cannot be written (disk full, read-only, locked past
``busy_timeout``, removed or replaced, its directory gone) every append in the batch
raises ``LedgerUnavailable`` and none of those records is in the chain. The connection is
dropped and the next append opens the file again, so the writer recovers on its own (it
tries again within ``checkpoint_interval`` while anything is due); after a second failure
in a row it waits out a back-off first (``REOPEN_FIRST_S``, doubling up to
``REOPEN_MAX_S``), refusing every append at once meanwhile, so that refusals cost
nothing however fast a client sends; ``close`` tries regardless. Records of the batch
that nobody waited for (``append_nowait``) are lost without their makers knowing: the
first commit that succeeds starts with a ``records_lost`` alert naming them (how many of
each kind, their first and last ``ts``, their sessions and statements). A
file that was removed or replaced is noticed by its inode; when the writer reopens a
file that does not hold the last record it committed, the first record it writes is an
``alert`` naming the previous head (``previous_seq``, ``previous_hash``); when it finds
unsigned records in the file that it did not write (a run that stopped before signing
them, or anyone who can write the file, behind its back), the first record it writes is
an ``unsigned_tail_signed`` alert naming them (``from_seq``, ``to_seq``), and only then
does it sign them: what they say is not the gateway's word (such an alert planned for a
file that is replaced before it is written is dropped: it named that file's records, and
the new file's own are named instead). On every open the
writer verifies the tail after the last checkpoint (and that checkpoint's signature with
its own key) and refuses to extend a ledger that fails, or that another key signed. After
any failure the head is read back from the file, so should a commit report an error after
its data did reach the file, those records stay in an intact chain although their callers
were told the ledger was unavailable (and refused their statements). Locks wait at most
``busy_timeout``; a file system that hangs in the kernel is not bounded.

``ts`` never runs backwards against ``seq``, so ``export(since=...)`` gives a tail of the
ledger. One rule, applied as each record is sealed (``_seal``): a record is stamped when it
is queued; one the writer makes itself (an alert, a checkpoint, also one asked for with
``checkpoint()``) when it is sealed, but no later than the first record queued after it;
and none earlier than the record before it (should the clock be set back, records carry
the previous ``ts`` until it catches up). Records the writer did not write (those an
``unsigned_tail_signed`` alert names) keep their own ``ts`` and are the exception: theirs
sets no floor, else one stamped far in the future would stamp every record after it. On
open the floor is the gateway's word only: its head while the file still holds it, the
last checkpoint, and its own records of a failed commit that reached the file; the last
checkpoint's ``ts`` is not signed (its signature covers the record before it), so it
counts only when at most ``CHECKPOINT_AHEAD_S`` ahead of the clock.

Reading (``open_ledger``, ``verify_file``, ``read_head``, ``export``): plain sqlite3 with a
read-only URI, rows streamed with ``fetchmany`` in one read transaction (a consistent
snapshot while the gateway keeps writing); ``export``, whose reader may pause for as long
as it likes, reads the records up to the head at its start in chunks by seq, each its own
read transaction, so that it never keeps the gateway's WAL from starting over. Like any
WAL reader it may leave empty ``-wal``/``-shm`` files beside the database; it never
changes the database itself. Every body is read from the table itself (``records NOT
INDEXED``; a lookup by rowid still is one): an index is in the file too, and one rewritten
behind SQLite's back (``PRAGMA writable_schema``) would hand a reader text that is not the
record's, which ``verify_file`` checks (it reports such an index).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliance.ledger.chain import (
    GENESIS_HASH,
    KINDS,
    FieldValue,
    Head,
    LedgerError,
    Record,
    Verifier,
    VerifyResult,
    check_fields,
    checkpoint_fields,
    key_id,
    load_private_key,
    seal_new,
    utc_now,
    verify_head,
)

if TYPE_CHECKING:
    from appliance.config import LedgerConfig

__all__ = [
    "APPLICATION_ID",
    "LAST_CHECKPOINT",
    "LedgerFileError",
    "LedgerUnavailable",
    "LedgerWriter",
    "WriterStats",
    "export",
    "open_ledger",
    "read_head",
    "verify_file",
]

_GATHER_TURNS = 3  # turns of the loop a commit on the loop may wait for more records
log = logging.getLogger("sqlgate.ledger")

APPLICATION_ID = 0x53514C47  # "SQLG"
SCHEMA_VERSION = 1
_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    session TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_session ON records(session);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'the sqlgate ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'the sqlgate ledger is append-only'); END;
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""
_INSERT = "INSERT INTO records (seq, ts, kind, session, body) VALUES (?, ?, ?, ?, ?)"
LAST_CHECKPOINT = (
    "SELECT seq FROM records NOT INDEXED WHERE json_valid(body) "
    "AND json_extract(body, '$.kind') = 'checkpoint' ORDER BY seq DESC LIMIT 1"
)
"""The seq of the newest checkpoint, found by the bodies, where the tail checks start (the
writer's on open, health's). The ``kind`` column is no more than a copy: relabelled
'checkpoint' on the last of records added behind the gateway's back (and put back once it
opened), it made the writer check, and name in its ``unsigned_tail_signed`` alert, that
record alone, and sign the others before it as its own."""

# What came back for a statement (session recording), bound to the chain by the SHA-256
# its result record carries; not append-only: retention deletes old ones (recorded).
_RECORDINGS = """
CREATE TABLE IF NOT EXISTS recordings (
    hash TEXT PRIMARY KEY,
    ts TEXT NOT NULL,
    body BLOB NOT NULL
)
"""
_INSERT_RECORDING = "INSERT OR IGNORE INTO recordings (hash, ts, body) VALUES (?, ?, ?)"
_ATTACHMENT = "\0attachment"  # a record's blob, kept out of its fields
_FETCH = 2048
RECORD_BYTES = 1024
"""What a waiting record holds besides its SQL text and its recording (its other fields,
the dict, its future), as ``backlog_bytes`` counts it: an estimate, taken from lengths
known as the record is queued, never from an encoding."""
PURGE_BATCH = 500
"""Recordings a retention purge deletes in one transaction (each a few milliseconds:
the writer's commits wait for the lock far less than ``busy_timeout``)."""
PURGE_PAUSE_S = 0.01  # between two of its transactions: the writer takes the lock
PURGE_BUSY_S = 5.0  # how long a purge's transaction waits for the writer's lock
LOST_LISTED = 100
"""Sessions, and statements, a ``records_lost`` alert names at most (it counts the rest)."""
LOST_KEPT = 10_000
"""Lost records kept one by one for their ``records_lost`` alert; those after them are
only counted (``_Tally``, which keeps as many of their sessions), so memory stays
bounded however long the ledger is unavailable to a client that keeps sending."""
REOPEN_FIRST_S = 0.1
REOPEN_MAX_S = 1.0
"""The first failure of an outage is tried again with the next append (a lock that was
let go, a record someone appended behind the writer: over at once); after a second
failure in a row the file is not opened again for ``REOPEN_FIRST_S``, a wait that
doubles with each further failure up to ``REOPEN_MAX_S`` and starts over at the next
commit. Meanwhile every append is refused at once. An open reads the schema, verifies
the tail and starts a thread, milliseconds each time: tried for every refused statement,
a client that keeps sending to a full disk would burn a core on refusals."""
CHECKPOINT_AHEAD_S = 60.0
"""How far ahead of the clock the ts of the last checkpoint in the file may be and still
stamp the records written after an open (so that ``ts`` does not run backwards when the
clock was set back a little). That ts is not signed (a checkpoint signs the record before
it): set far in the future in the file, it stamped every record after it with that time."""
SAY_EVERY_S = 60.0
"""An outage is logged at most once in this many seconds: a ledger that fails, recovers
and fails again with every statement (a disk with room for small records only) is one
line a minute, not lines per statement; the records_lost alerts name every loss."""


def _size(record: Mapping[str, Any] | None) -> int:
    """The bytes a queued record holds, about (``backlog_bytes``): lengths only, so that
    counting costs a few lookups, not an encoding. The SQL text (and its bytes in hex,
    where they are kept) and the recording are what can be large; the rest is bounded."""
    if record is None:  # a checkpoint asked for
        return 0
    size = RECORD_BYTES
    sql = record.get("sql")
    if type(sql) is str:
        size += len(sql)
        hexed = record.get("sql_hex")
        if type(hexed) is str:
            size += len(hexed)
    blob = record.get(_ATTACHMENT)
    if blob is not None:
        size += len(blob)
    return size


class LedgerUnavailable(LedgerError):
    """The ledger cannot be written now; the record is not in the chain. Transient."""


class LedgerFileError(LedgerError):
    """The file is missing, is not a sqlgate ledger, or cannot be extended safely."""


class LedgerDamaged(LedgerError):
    """A stored record cannot be read as one (export, replay): the file was damaged or
    edited; ``sqlgate ledger verify`` names the first bad record. The message names it."""


@dataclass(slots=True)
class WriterStats:
    """Counters of a ``LedgerWriter`` (for tests, benchmarks and the console)."""

    commits: int = 0  # transactions committed
    records: int = 0  # records committed, checkpoints included
    checkpoints: int = 0  # checkpoint records committed
    failures: int = 0  # batches that failed (their appends raised LedgerUnavailable)
    reopens: int = 0  # times the file was opened
    opens_tried: int = 0  # times opening it was tried (a refusal in a back-off is not)


_Pending = tuple["dict[str, Any] | None", "asyncio.Future[Record | None]"]


@dataclass
class _Sealed:
    """A batch chained and encoded, not yet committed."""

    rows: list[tuple[int, str, str, Any, str]] = field(default_factory=list)
    blobs: list[tuple[str, str, bytes]] = field(default_factory=list)
    answers: list[tuple[asyncio.Future[Record | None], Record | None]] = field(default_factory=list)
    signed: list[Record] = field(default_factory=list)  # the checkpoints among the rows
    head: tuple[int, str, bool, str] = (0, GENESIS_HASH, False, "")  # seq, hash, checkpoint?, ts
    # a records_lost alert's hash, the losses it names one by one, and those it counts
    lost: tuple[str, int, _Tally | None] | None = None
    alerts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # planned, sealed
    hashes: list[str] = field(default_factory=list)  # of every row: this writer's records
    made: list[Record] = field(default_factory=list)  # the alerts the writer made itself


@dataclass(slots=True)
class _Tally:
    """Lost records beyond ``LOST_KEPT``: counted by kind, their first and last ``ts`` and
    how many statements they belong to; none of them is named one by one. Their sessions
    are kept, the first ``LOST_KEPT`` of them (so that the alert counts those no named
    record belongs to); ``sessions_uncounted`` says that there were more."""

    count: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    first: str = ""
    last: str = ""
    statements: int = 0
    sessions: dict[str, None] = field(default_factory=dict)
    sessions_uncounted: bool = False

    def add(self, kind: str, ts: str, session: str | None, statement: bool) -> None:
        self.count += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        self.first = min(self.first, ts) if self.first else ts
        self.last = max(self.last, ts)
        self.statements += statement
        if session is not None and session not in self.sessions:
            if len(self.sessions) < LOST_KEPT:
                self.sessions[session] = None
            else:
                self.sessions_uncounted = True


@dataclass(slots=True)
class _Lost:
    """A record nobody waited for that a failed write dropped: what its alert says."""

    kind: str
    ts: str
    session: str | None
    statement_seq: int | None
    hash: str | None  # as sealed for the commit that failed (None: never sealed)


class LedgerWriter:
    """The gateway's single writer of one ledger file; see the module docstring.

    Use ``await open()`` (or ``async with``), ``await append(fields)`` from any task, and
    ``await close()``. ``append`` returns the sealed record once it is committed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        signing_key: Ed25519PrivateKey,
        *,
        fsync: bool = False,
        checkpoint_interval: float = 1.0,
        busy_timeout: float = 0.5,
        max_batch: int = 4096,
        linger: float = 0.002,
        appliance: str | None = None,
    ) -> None:
        self.path = Path(path)
        self._appliance = appliance
        self.stats = WriterStats()
        self._key = signing_key
        self._public_key = signing_key.public_key()
        self._key_id = key_id(self._public_key)
        self._fsync = fsync
        self._interval = checkpoint_interval
        self._busy_timeout = busy_timeout
        self._max_batch = max_batch
        self._linger = linger
        self._waited = 0  # queued records someone awaits (an over-estimate is harmless)
        self._conn: aiosqlite.Connection | None = None
        self._lock: int | None = None  # the lock file, flocked while this writer is open
        self._direct: sqlite3.Connection | None = None  # fsync = false: commits on the loop
        self._file_id: tuple[int, int] | None = None
        self._seq = 0  # the head this writer last saw committed (0 and genesis: none)
        self._hash = GENESIS_HASH
        self._last_is_checkpoint = False
        # no record is stamped earlier (see _seal): the ts of the gateway's own last word,
        # never of a record it did not write (see _prepare)
        self._ts = ""
        self._alerts: list[dict[str, Any]] = []  # planned: the next commit starts with them
        # hashes of the rows of commits that failed since the file was last opened: should
        # one have reached the file after all, its records are this writer's, not foreign
        self._own: set[str] = set()
        self._alerts_tried: list[tuple[str, dict[str, Any]]] = []  # sealed in a failed commit
        # queued by append_nowait, until answered: nobody is told should they be lost
        self._unwaited: set[asyncio.Future[Record | None]] = set()
        self._lost: list[_Lost] = []  # dropped, not yet named by a committed records_lost
        self._more: _Tally | None = None  # lost after the first LOST_KEPT: counted only
        self._lost_alerts: list[tuple[str, int, _Tally | None]] = []  # of failed writes
        self._pending: list[_Pending] = []
        # the bytes of the records queued (``_size``), and of the batch being committed
        # (taken from the queue, not yet answered: a commit in aiosqlite's thread)
        self._queued_bytes = 0
        self._committing_bytes = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._unsigned_since: float | None = None
        self._retry_at = 0.0
        self._reopen_at = 0.0  # no open is tried before (monotonic; see REOPEN_FIRST_S)
        self._reopen_wait = 0.0  # the back-off after the next failure
        self._down = ""  # why the last open or write failed: the refusals' reason meanwhile
        self._available = True
        self._said_at: float | None = None  # when an outage was last logged (monotonic)
        self._said = False  # the outage now going on was logged: so is its end
        self._unsaid = 0  # outages since then that were not (see SAY_EVERY_S)
        self._wal_due = False  # records were signed: copy the WAL into the database
        self._flush: asyncio.Handle | None = None  # a commit on the loop, scheduled
        self._flush_is_timer = False  # that commit waits for the linger to end
        self._turns = 0  # turns of the loop the scheduled commit has waited
        self._gathered = 0  # records queued when it last looked
        # records of more than one session were queued since the last commit on the loop
        # (or before it): only then can waiting a turn bring another session's records
        self._last_session: FieldValue = None
        self._mixed = False
        self._mixed_before = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop open() ran on
        self._task_busy = False  # the writer task is writing: it keeps the order
        self._below: list[tuple[int, int | None, asyncio.Future[None]]] = []  # see below()
        self.on_checkpoint: Callable[[Record], None] | None = None
        """Called with each committed checkpoint (the gateway publishes the head)."""
        self.on_alert: Callable[[Record], None] | None = None
        """Called with each alert the writer made itself (``records_lost``,
        ``ledger_replaced``, ``unsigned_tail_signed``, the retention's), once committed:
        the gateway publishes the records it appends, and these too, as every alert."""

    @classmethod
    def from_config(cls, config: LedgerConfig, appliance: str | None = None) -> LedgerWriter:
        """A writer for ``[ledger]``; LedgerKeyError if the signing key cannot be used.
        With ``appliance``, every record but a checkpoint names it (``_named``)."""
        key = load_private_key(config.signing_key)
        return cls(config.path, key, fsync=config.fsync, appliance=appliance)

    def _named(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``fields`` with ``appliance`` right after ``kind`` (SPEC §9 names it among the
        fields of every kind): a record exported or published alone, or beside another
        gateway's, still says which gateway wrote it. Fields that name one are kept."""
        if self._appliance is None or "appliance" in fields:
            return dict(fields)
        if next(iter(fields), None) == "kind":  # the usual record: one step, no loop
            return {"kind": fields["kind"], "appliance": self._appliance, **fields}
        named: dict[str, Any] = {}
        for key, value in fields.items():
            named[key] = value
            if key == "kind":
                named["appliance"] = self._appliance
        return named

    @property
    def key_id(self) -> str:
        """The signing key's id, as checkpoints carry it."""
        return self._key_id

    @property
    def available(self) -> bool:
        """False from a failed open or write until the next commit succeeds."""
        return self._available

    @property
    def head(self) -> tuple[int, str]:
        """The seq and hash of the last committed record (0 and 64 zeros before any)."""
        return self._seq, self._hash

    @property
    def backlog(self) -> int:
        """Records queued and not yet taken into a commit."""
        return len(self._pending)

    @property
    def backlog_bytes(self) -> int:
        """About how many bytes the records waiting for the ledger hold in memory: those
        queued and those of the commit under way (with ``fsync``, in aiosqlite's thread),
        each its SQL text, its recording and ``RECORD_BYTES`` (see ``_size``). A record
        leaves the count once its caller is answered (committed or failed)."""
        return self._queued_bytes + self._committing_bytes

    def below(self, records: int, size: int | None = None) -> asyncio.Future[None]:
        """A future answered once fewer than ``records`` are queued and, with ``size``,
        fewer than ``size`` bytes wait (``backlog_bytes``), committed or failed: what a
        producer that outruns the ledger waits for before it goes on."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._under(records, size):
            future.set_result(None)
        else:
            self._below.append((records, size, future))
        return future

    def _under(self, records: int, size: int | None) -> bool:
        return len(self._pending) < records and (size is None or self.backlog_bytes < size)

    def _progress(self) -> None:
        """Answer the ``below`` futures whose marks the queue is now under."""
        if not self._below:
            return
        waiting = []
        for records, size, future in self._below:
            if future.done():
                continue
            if self._under(records, size):
                future.set_result(None)
            else:
                waiting.append((records, size, future))
        self._below = waiting

    async def __aenter__(self) -> LedgerWriter:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Start the writer and open the file (schema, tail check, chain head).

        Raises LedgerUnavailable (cannot open now) or LedgerFileError (not a ledger, a
        damaged tail, another key). Either way the writer is started and every append
        tries again, so a gateway may keep running and refuse statements; call ``close``.
        """
        if self._task is not None:
            raise RuntimeError("the ledger writer is already open")
        # kept: asyncio.get_running_loop() asks the kernel for the pid on every call
        self._loop = asyncio.get_running_loop()
        try:
            await self._connection()
        except LedgerError:
            self._available = False
            raise
        finally:
            task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")
            task.add_done_callback(self._writer_done)
            self._task = task

    async def append(self, fields: Mapping[str, FieldValue]) -> Record:
        """Commit one record and return it sealed (seq, ts, fields, prev_hash, hash).

        ValueError: the fields are not appendable (see ``chain.check_fields``).
        LedgerUnavailable: it could not be committed; it is not in the chain.
        The returned dict is shared with nobody else but should be treated as read-only.
        """
        sealed = await self._queue(fields, waited=True)
        assert sealed is not None  # only checkpoint() is answered with None
        return sealed

    def append_soon(self, fields: Mapping[str, FieldValue]) -> asyncio.Future[Record | None]:
        """``append`` for a caller that would rather not be a task: the future is answered
        like ``append`` returns or raises (ValueError and LedgerUnavailable right away)."""
        return self._queue(fields, waited=True)

    def append_nowait(
        self, fields: Mapping[str, FieldValue], attachment: bytes | None = None
    ) -> asyncio.Future[Record | None]:
        """Queue one record nobody waits for (the future says how it went).

        Such records may linger up to ``linger`` seconds for company, so that they share
        a commit with the next record someone does wait for. ``attachment`` (a session
        recording) is stored in the same transaction under its SHA-256, which ``fields``
        must carry (``recording``) so that the chain covers it.
        """
        future = self._queue(fields, waited=False, attachment=attachment)
        self._unwaited.add(future)
        return future

    def _queue(
        self, fields: Mapping[str, FieldValue], waited: bool, attachment: bytes | None = None
    ) -> asyncio.Future[Record | None]:
        self._check_running()
        check_fields(fields)
        loop = self._loop
        assert loop is not None  # open() ran
        future: asyncio.Future[Record | None] = loop.create_future()
        record: dict[str, Any] = {"seq": 0, "ts": utc_now(), **self._named(fields)}
        session = fields.get("session")
        if session != self._last_session:
            self._last_session = session
            self._mixed = True
        if attachment is not None:
            record[_ATTACHMENT] = attachment
        self._queued_bytes += _size(record)
        self._pending.append((record, future))
        if self._direct is not None and not self._task_busy:
            # commit on the loop once the callbacks ready now have run: every record
            # queued meanwhile, from any session, shares that commit
            flush = self._flush
            if waited:
                self._waited += 1
                if flush is None or self._flush_is_timer:
                    if flush is not None:
                        flush.cancel()
                    self._flush = loop.call_soon(self._commit_on_loop)
                    self._flush_is_timer = False
            elif flush is None:
                self._flush = loop.call_later(self._linger, self._commit_on_loop)
                self._flush_is_timer = True
        elif waited:
            self._waited += 1
            self._wake.set()
        elif len(self._pending) == 1:
            self._wake.set()  # the writer starts the lingering clock
        return future

    def _take_batch(self) -> list[_Pending]:
        """The next records to commit, in order; a caller that gave up is left out. Their
        bytes count as the commit's (``backlog_bytes``) until it is answered: all that
        was queued, unless more than a batch was (then the batch's are counted)."""
        batch = []
        pending = self._pending
        for entry in pending[: self._max_batch]:
            if entry[1].done():
                self._unwaited.discard(entry[1])
            else:
                batch.append(entry)
        if len(pending) > self._max_batch:
            taken = sum(_size(record) for record, _ in pending[: self._max_batch])
            self._committing_bytes = min(taken, self._queued_bytes)
            self._queued_bytes -= self._committing_bytes
        else:
            self._committing_bytes, self._queued_bytes = self._queued_bytes, 0
        del pending[: self._max_batch]
        if not pending:
            self._waited = 0
        if not batch:  # nothing to commit (those callers gave up): nothing waits
            self._answered()
            self._progress()
        return batch

    def _answered(self) -> None:
        """The commit under way is over (committed, failed, or its records queued again):
        its records no longer count as waiting."""
        self._committing_bytes = 0

    def _commit_on_loop(self) -> None:
        """Seal and commit what is queued, synchronously (``fsync = false``: a commit is a
        write to the WAL, cheaper than handing it to a thread). Whatever cannot be done
        this way (no connection, the file replaced, a busy lock, an error) goes back to
        the writer task, which waits, reopens or reports; the task also signs checkpoints
        when records stop coming.

        The commit waits a few turns of the loop while each turn brings more records (the
        sessions whose packets came in the meantime): under load one commit then carries
        the statements of many sessions, about 10 records against 4 without waiting, for
        the price of a turn (a poll of the sockets) when nothing else is ready. While the
        records come from one session alone there is nobody to wait for (its next
        statement waits for this commit): it commits at once.
        """
        loop = self._loop
        assert loop is not None  # open() ran
        if (
            self._turns < _GATHER_TURNS
            and len(self._pending) > self._gathered
            and (self._mixed or self._mixed_before)
        ):
            self._turns += 1
            self._gathered = len(self._pending)
            self._flush = loop.call_soon(self._commit_on_loop)
            self._flush_is_timer = False
            return
        self._flush = None
        self._turns = self._gathered = 0
        self._mixed_before, self._mixed = self._mixed, False
        db = self._direct
        if not self._pending or self._task_busy:
            return
        if (
            db is None
            or self._closing
            or self._alerts
            or self._lost
            or self._more
            or not self._same_file()
        ):
            self._wake.set()
            return
        batch = self._take_batch()
        signed_before = self._unsigned_since is None
        sealed = self._seal(batch, self._seconds_to_checkpoint() == 0.0)
        try:
            db.executemany(_INSERT, sealed.rows)
            if sealed.blobs:
                db.executemany(_INSERT_RECORDING, sealed.blobs)
            db.commit()
        except Exception as exc:  # the writer task tries again, and waits or reports
            log.debug("%s: commit on the loop: %s", self.path, exc)
            self._own.update(sealed.hashes)  # it may have reached the file all the same
            try:
                if db.in_transaction:
                    db.rollback()
            except sqlite3.Error as rollback_exc:
                log.debug("%s: rollback: %s", self.path, rollback_exc)
            self._pending[:0] = batch
            self._queued_bytes += self._committing_bytes
            self._answered()
            self._waited += 1
            self._wake.set()
            return
        self._committed(sealed)
        if self._pending:  # more than one batch's worth: the rest right after
            self._flush = loop.call_soon(self._commit_on_loop)
            self._flush_is_timer = False
        if self._wal_due or (signed_before and self._unsigned_since is not None):
            self._wake.set()  # copy the WAL back; or sign within the interval from now

    async def purge_recordings(self, before: str) -> int:
        """Delete the session recordings of results older than ``before`` (a ledger
        ``ts``; a time to come counts as now): first the ``recordings_purged`` alert that
        says they are deleted is committed and signed (``verify`` honours only a signed
        purge, so that nobody can excuse a deleted recording by appending one), then they
        go, ``PURGE_BATCH`` at a time, each batch its own short transaction, and a
        ``recordings_deleted`` alert says how many went (and why it stopped, if it did).
        Returns how many went (none found: nothing is written); LedgerUnavailable when
        the purge could not finish.

        The purge reads and deletes through a connection of its own, so that statements
        keep committing between its batches and a failure of either leaves the other's
        connection alone. An answer given again and again (the same bytes) is stored once,
        under the time of its first result: one that a result at or after ``before``
        repeated stays; each batch looks again, under its lock, at the results committed
        since the last look."""
        self._check_running()
        before = min(before, utc_now())
        uri = self.path.resolve().as_uri() + "?mode=rw"  # never creates the file
        try:
            conn = await aiosqlite.connect(
                uri, uri=True, timeout=PURGE_BUSY_S, isolation_level=None
            )
        except (sqlite3.Error, OSError) as exc:
            raise LedgerUnavailable(f"{self.path}: cannot open: {exc}") from None
        try:
            return await self._purge(conn, before)
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"{self.path}: recording retention: {exc}") from None
        finally:
            try:
                await conn.close()
            except Exception as exc:  # closing a broken connection may fail too
                log.debug("%s: closing: %s", self.path, exc)

    async def _purge(self, conn: aiosqlite.Connection, before: str) -> int:
        old = {
            str(row[0])
            for row in await conn.execute_fetchall(
                "SELECT hash FROM recordings WHERE ts < ?", (before,)
            )
        }
        if not old:
            return 0
        end = await _scalar(conn, "SELECT coalesce(max(seq), 0) FROM records")
        old -= await _recorded_since(conn, "ts >= ? AND seq <= ?", (before, end))
        if not old:
            return 0
        found = len(old)
        purged = await self.append(
            {
                "kind": "alert",
                "alert": "recordings_purged",
                "reason": f"retention: the {found} recording(s) of results before {before} "
                "are deleted from now on (a recordings_deleted alert says how many went)",
                "before": before,
                "recordings": found,
            }
        )
        self._told(purged)
        await self.checkpoint()
        order = sorted(old)
        deleted = 0
        stopped: str | None = None
        cancelled = False
        try:
            for start in range(0, len(order), PURGE_BATCH):
                if start:
                    await asyncio.sleep(PURGE_PAUSE_S)  # the writer's turn
                chunk = order[start : start + PURGE_BATCH]
                work = asyncio.ensure_future(_purge_counted(conn, chunk, old, end))
                # the batch in hand ends first (a moment), however often the purge is
                # cancelled meanwhile: what it deleted is counted, then the stop goes on
                cancelled = await _wait_out(work) or cancelled
                gone, end, failure = work.result()
                deleted += gone
                if failure is not None:
                    stopped = str(failure)
                    break
                if cancelled:
                    break
        except asyncio.CancelledError:  # between two batches
            cancelled = True
        if cancelled and stopped is None:
            stopped = "the gateway stopped"
        how = f"stopped after {deleted} of {found}: {stopped}" if stopped else f"{deleted} deleted"
        outcome: dict[str, FieldValue] = {
            "kind": "alert",
            "alert": "recordings_deleted",
            "reason": f"retention: recordings of results before {before}: {how}",
            "before": before,
            "deleted": deleted,
            "complete": stopped is None,
        }
        try:
            self._told(await self.append(outcome))
        except LedgerUnavailable as exc:
            log.warning("%s: recording retention: %s; not recorded: %s", self.path, how, exc)
        if cancelled:
            raise asyncio.CancelledError
        if stopped is not None:
            raise LedgerUnavailable(f"{self.path}: recording retention {how}")
        return deleted

    async def checkpoint(self) -> Record | None:
        """Commit a checkpoint now, after everything queued; None if all is signed."""
        self._check_running()
        return await self._enqueue(None)

    async def close(self) -> None:
        """Write what is queued and a final checkpoint, then close the file."""
        self._closing = True  # also ends any lingering
        self._wake.set()
        if self._task is not None:
            await asyncio.shield(self._task)
        await self._drop_connection()
        self._release_lock()

    # -- the writer task ---------------------------------------------------------------

    def _check_running(self) -> None:
        if self._task is None:
            raise LedgerUnavailable("the ledger writer is not open")
        if self._closing or self._task.done():
            raise LedgerUnavailable("the ledger writer is closed")

    async def _enqueue(self, record: dict[str, Any] | None) -> Record | None:
        future: asyncio.Future[Record | None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        self._waited += 1
        self._wake.set()
        return await future

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("ledger writer stopped", exc_info=task.exception())
        for _, future in self._pending:
            if not future.done():
                future.set_exception(LedgerUnavailable("the ledger writer stopped"))
        self._pending.clear()
        self._unwaited.clear()
        self._queued_bytes = 0
        self._answered()
        self._progress()

    def _seconds_to_checkpoint(self) -> float | None:
        if self._unsigned_since is None:
            return None
        due = max(self._unsigned_since + self._interval, self._retry_at)
        return max(0.0, due - time.monotonic())

    async def _sleep(self, seconds: float | None) -> None:
        self._wake.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    break
                wait = self._seconds_to_checkpoint()
                if wait is None or wait > 0:
                    await self._sleep(wait)
            elif not self._waited and not self._closing and self._linger:
                await self._sleep(self._linger)  # only an append() or close() cuts it short
            batch = self._take_batch()
            due = self._seconds_to_checkpoint() == 0.0
            if batch or due or self._wal_due:
                self._task_busy = True  # appends queue up behind this write, in order
                try:
                    if batch or due:
                        await self._write(batch, due)
                except Exception as exc:  # a bug: never leave a caller waiting
                    log.exception("%s: the ledger writer failed", self.path)
                    await self._drop_connection()
                    self._failed(batch, f"{self.path}: internal error: {exc!r}", due)
                try:
                    if self._wal_due:
                        await self._checkpoint_wal()
                finally:
                    self._task_busy = False
        if self._unsigned_since is not None:
            await self._write([], True)
            if self._unsigned_since is not None:
                count = len(self._lost) + (self._more.count if self._more else 0)
                lost = f"; {count} record(s) lost" if count else ""
                log.warning(
                    "%s: no checkpoint at shutdown: the ledger is unavailable%s", self.path, lost
                )

    async def _write(self, batch: list[_Pending], checkpoint: bool) -> None:
        try:
            conn = await self._connection()
        except LedgerError as exc:
            self._failed(batch, str(exc), checkpoint)
            return
        sealed = self._seal(batch, checkpoint)
        if sealed.rows:
            try:
                if self._direct is not None:
                    await self._commit_direct(self._direct, sealed.rows, sealed.blobs)
                else:
                    await conn.executemany(_INSERT, sealed.rows)
                    if sealed.blobs:
                        await conn.executemany(_INSERT_RECORDING, sealed.blobs)
                    await conn.commit()
            except Exception as exc:  # sqlite3.Error, OSError, a stopped connection thread
                if not isinstance(exc, (sqlite3.Error, OSError)):
                    log.exception("%s: unexpected error while writing", self.path)
                await self._drop_connection()
                reason = f"{self.path}: cannot write: {exc}"
                self._back_off(reason)
                self._failed(batch, reason, checkpoint, sealed)
                return
        self._committed(sealed)

    def _back_off(self, reason: str) -> None:
        """An open or a write failed: the file is not opened again before the back-off
        ends (see ``REOPEN_FIRST_S``); the appends meanwhile are refused for ``reason``."""
        self._reopen_at = time.monotonic() + self._reopen_wait
        self._reopen_wait = min(max(self._reopen_wait * 2, REOPEN_FIRST_S), REOPEN_MAX_S)
        self._down = reason

    def _seal(self, batch: list[_Pending], checkpoint: bool) -> _Sealed:
        """Chain the batch after the committed head (plus a checkpoint when asked): the
        rows to insert and each caller's answer. Nothing changes until ``_committed``."""
        seq, prev, last_is_checkpoint = self._seq, self._hash, self._last_is_checkpoint
        last_ts = self._ts
        out = _Sealed()
        rows, blobs, answers, signed = out.rows, out.blobs, out.answers, out.signed

        def add(record: dict[str, Any]) -> Record:
            nonlocal seq, prev, last_is_checkpoint, last_ts
            if record["ts"] < last_ts:  # the clock was set back: ts never runs backwards
                record["ts"] = last_ts
            blob = record.pop(_ATTACHMENT, None)
            if blob is not None:  # stored under the SHA-256 its record names (verify checks)
                digest = record.get("recording")
                if not isinstance(digest, str):
                    digest = hashlib.sha256(blob).hexdigest()
                blobs.append((digest, record["ts"], blob))
                record[_ATTACHMENT] = blob  # kept for a retry if this commit fails
                record = {k: v for k, v in record.items() if k != _ATTACHMENT}
            record["seq"] = seq + 1
            sealed, body = seal_new(record, prev)  # the writer's own dict: sealed in place
            seq, prev, last_ts = seq + 1, sealed["hash"], sealed["ts"]
            out.hashes.append(prev)
            last_is_checkpoint = sealed["kind"] == "checkpoint"
            rows.append((seq, sealed["ts"], sealed["kind"], sealed.get("session"), body))
            return sealed

        def stamp(after: int) -> str:
            """The ts of a record the writer makes ahead of ``batch[after:]``: now, but no
            later than the first record that follows it (in this batch, or still queued
            for the next), stamped when it was queued: made later, sealed before it."""
            now = utc_now()
            for entries in (itertools.islice(batch, after, None), self._pending):
                for record, _ in entries:
                    if record is not None:
                        return min(now, str(record["ts"]))
            return now

        def sign(after: int) -> Record | None:
            if seq == 0 or last_is_checkpoint:
                return None
            fields = checkpoint_fields(self._key, seq, prev)
            record = add({"seq": 0, "ts": stamp(after), **fields})
            signed.append(record)
            return record

        for alert in self._alerts:  # alerts go ahead of the batch
            sealed_alert = add({"seq": 0, "ts": stamp(0), **self._named(alert)})
            out.alerts.append((sealed_alert["hash"], alert))
            out.made.append(sealed_alert)
        if self._lost or self._more is not None:
            lost = add({"seq": 0, "ts": stamp(0), **self._named(self._lost_alert())})
            out.lost = (lost["hash"], len(self._lost), self._more)
            out.made.append(lost)
        for at, (record, future) in enumerate(batch, 1):
            if record is None:  # a checkpoint() asked for: it signs what came before it
                answers.append((future, sign(at)))
                continue
            try:
                sealed = add(record)
            except (TypeError, ValueError) as exc:
                self._unwaited.discard(future)
                future.set_exception(ValueError(f"the record cannot be encoded: {exc}"))
                continue
            answers.append((future, sealed))
        if checkpoint:
            sign(len(batch))
        out.head = (seq, prev, last_is_checkpoint, last_ts)
        return out

    def _committed(self, sealed: _Sealed) -> None:
        """The batch is in the file: move the head and answer every caller."""
        if sealed.rows:
            said = self._said
            if not self._available:
                log.log(
                    logging.INFO if said else logging.DEBUG,
                    "%s: the audit ledger is available again",
                    self.path,
                )
                self._available, self._said = True, False
            checkpoints = len(sealed.signed)
            self._reopen_at, self._reopen_wait = 0.0, 0.0
            self.stats.commits += 1
            self.stats.records += len(sealed.rows)
            self.stats.checkpoints += checkpoints
            del self._alerts[: len(sealed.alerts)]  # they are in the ledger now
            self._own.clear()  # a commit after a failed one: that one never landed
            self._alerts_tried.clear()
            if sealed.lost is not None:  # the alert names them: they are told
                del self._lost[: sealed.lost[1]]
                more = sealed.lost[2]
                if more is not None and more is self._more:
                    self._more = None
                log.log(
                    logging.WARNING if said else logging.DEBUG,
                    "%s: %d lost record(s) are named by a records_lost alert",
                    self.path,
                    sealed.lost[1] + (more.count if more else 0),
                )
            self._seq, self._hash, self._last_is_checkpoint, self._ts = sealed.head
            if checkpoints and self._direct is not None:
                self._wal_due = True  # the loop's connection never checkpoints the WAL
            for alert in sealed.made:
                self._told(alert)
            if sealed.signed and self.on_checkpoint is not None:
                self.on_checkpoint(sealed.signed[-1])
            if self._last_is_checkpoint:
                self._unsigned_since = None
            elif self._unsigned_since is None or checkpoints:
                self._unsigned_since = time.monotonic()
        unwaited = self._unwaited
        for future, record in sealed.answers:
            unwaited.discard(future)
            if not future.done():
                future.set_result(record)
        self._answered()
        self._progress()

    def _told(self, alert: Record) -> None:
        """Hand a committed alert the writer made to ``on_alert`` (which must not stop the
        writer: a failure there is logged)."""
        if self.on_alert is None:
            return
        try:
            self.on_alert(alert)
        except Exception:
            log.exception("%s: publishing alert %s", self.path, alert.get("alert"))

    async def _commit_direct(
        self,
        db: sqlite3.Connection,
        rows: list[tuple[int, str, str, Any, str]],
        blobs: list[tuple[str, str, bytes]],
    ) -> None:
        """Insert and commit on the loop; a lock is waited for without blocking it."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                db.executemany(_INSERT, rows)
                if blobs:
                    db.executemany(_INSERT_RECORDING, blobs)
                db.commit()
                return
            except sqlite3.OperationalError as exc:
                if db.in_transaction:
                    db.rollback()
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.005)

    async def _checkpoint_wal(self) -> None:
        """Copy the WAL into the database in aiosqlite's thread while this task (the only
        writer) waits: the loop runs on, appends queue up, and with no commit racing it
        the checkpoint completes, so the next commit starts the WAL over instead of
        growing it."""
        self._wal_due = False
        conn = self._conn
        if conn is None:
            return
        try:
            async with conn.execute("PRAGMA wal_checkpoint(PASSIVE)") as cursor:
                await cursor.fetchall()
        except Exception as exc:  # the next one tries again; a write will tell if broken
            log.debug("%s: WAL checkpoint: %s", self.path, exc)

    def _failed(
        self,
        batch: list[_Pending],
        reason: str,
        checkpoint: bool,
        sealed: _Sealed | None = None,
    ) -> None:
        """Answer the batch with ``LedgerUnavailable``; the records nobody waits for are
        kept as lost, for the ``records_lost`` alert the next commit starts with (and a
        retry within ``checkpoint_interval`` writes it even if no record comes)."""
        self.stats.failures += 1
        now = time.monotonic()
        if checkpoint:  # tried again once the back-off, if any, is over
            self._retry_at = max(now + self._interval, self._reopen_at)
        if self._said and not self._available:
            log.debug("audit ledger unavailable: %s", reason)
        elif self._said_at is None or now - self._said_at >= SAY_EVERY_S:
            more = f" (and {self._unsaid} brief outage(s) before)" if self._unsaid else ""
            log.warning("audit ledger unavailable: %s%s", reason, more)
            self._said_at, self._said, self._unsaid = now, True, 0
        else:  # it failed again soon after it was said: counted, said a minute on
            log.debug("audit ledger unavailable again: %s", reason)
            self._unsaid += self._available
        self._available = False
        hashes: dict[int, str] = {}
        if sealed is not None:
            hashes = {id(f): r["hash"] for f, r in sealed.answers if r is not None}
        if sealed is not None:
            self._own.update(sealed.hashes)  # the commit may have reached the file after all
            self._alerts_tried += sealed.alerts
            if sealed.lost is not None:
                self._lost_alerts.append(sealed.lost)
        for record, future in batch:
            unwaited = future in self._unwaited
            self._unwaited.discard(future)
            if future.done():
                continue
            if record is not None and unwaited:
                session, statement_seq = record.get("session"), record.get("statement_seq")
                if len(self._lost) >= LOST_KEPT:
                    if self._more is None:
                        self._more = _Tally()
                    self._more.add(
                        str(record.get("kind")),
                        str(record.get("ts")),
                        session if isinstance(session, str) else None,
                        isinstance(session, str) and type(statement_seq) is int,
                    )
                    future.set_exception(LedgerUnavailable(reason))
                    continue
                self._lost.append(
                    _Lost(
                        kind=str(record.get("kind")),
                        ts=str(record.get("ts")),
                        session=session if isinstance(session, str) else None,
                        statement_seq=statement_seq if type(statement_seq) is int else None,
                        hash=hashes.get(id(future)),
                    )
                )
            future.set_exception(LedgerUnavailable(reason))
        if self._lost and self._unsigned_since is None:  # the alert is due, as a checkpoint
            self._unsigned_since = now
            self._retry_at = max(self._retry_at, now + self._interval)
        self._answered()
        self._progress()

    def _lost_alert(self) -> dict[str, Any]:
        """The ``records_lost`` alert naming ``_lost``: how many of each kind, when they
        were made (first and last ``ts``), the sessions and statements they belong to."""
        lost = self._lost
        kinds: dict[str, int] = {}
        sessions: dict[str, None] = {}
        statements: dict[str, None] = {}
        for entry in lost:
            kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
            if entry.session is not None:
                sessions[entry.session] = None
                if entry.statement_seq is not None:
                    statements[f"{entry.session}:{entry.statement_seq}"] = None
        first = min((e.ts for e in lost), default="")
        last = max((e.ts for e in lost), default="")
        total, more = len(lost), self._more
        unlisted = 0  # statements of the records counted only
        uncounted = False  # sessions of those records beyond what could be kept
        if more is not None:
            for kind, count in more.kinds.items():
                kinds[kind] = kinds.get(kind, 0) + count
            first, last = min(first or more.first, more.first), max(last, more.last)
            total, unlisted = total + more.count, more.statements
            for session in more.sessions:  # after those of the named records
                sessions.setdefault(session, None)
            uncounted = more.sessions_uncounted
        counts = [f"{kind}={count}" for kind, count in sorted(kinds.items())]
        reason = (
            f"{total} record(s) made from {first} to {last} could not be written while "
            f"the ledger was unavailable and are not in it ({', '.join(counts)})"
        )
        extra: dict[str, Any] = {}
        if uncounted:
            reason += (
                f"; they belong to more than {len(sessions)} session(s): the sessions of "
                "the rest were not kept"
            )
            extra["sessions_uncounted"] = True
        return {
            "kind": "alert",
            "alert": "records_lost",
            "session": None,
            "reason": reason,
            "lost": total,
            "lost_kinds": counts,
            "first_ts": first,
            "last_ts": last,
            "sessions": list(sessions)[:LOST_LISTED],
            "sessions_unlisted": max(0, len(sessions) - LOST_LISTED),
            "statements": list(statements)[:LOST_LISTED],
            "statements_unlisted": max(0, len(statements) - LOST_LISTED) + unlisted,
            **extra,
        }

    async def _landed(self, conn: aiosqlite.Connection, after: int) -> None:
        """Records of a write that failed may still have reached the file (a commit that
        reported an error after its data was written): those are not lost, and neither
        are the losses a records_lost alert that reached it names, nor is an alert that
        reached it still to be written."""
        if not self._lost and not self._lost_alerts and not self._alerts_tried:
            return
        landed = {
            str(row[0])
            for row in await conn.execute_fetchall(
                "SELECT json_extract(body, '$.hash') FROM records NOT INDEXED WHERE seq > ?",
                (after,),
            )
        }
        told = max((n for digest, n, _ in self._lost_alerts if digest in landed), default=0)
        if any(t is self._more is not None for d, _, t in self._lost_alerts if d in landed):
            self._more = None
        self._lost_alerts.clear()
        del self._lost[:told]
        self._lost = [e for e in self._lost if e.hash is None or e.hash not in landed]
        written = [alert for digest, alert in self._alerts_tried if digest in landed]
        self._alerts = [a for a in self._alerts if not any(a is w for w in written)]
        self._alerts_tried.clear()

    # -- the connection ----------------------------------------------------------------

    def _same_file(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._file_id

    async def _drop_connection(self) -> None:
        conn, self._conn, self._file_id = self._conn, None, None
        direct, self._direct = self._direct, None
        if direct is not None:
            try:
                direct.close()
            except sqlite3.Error as exc:
                log.debug("%s: closing: %s", self.path, exc)
        if conn is not None:
            try:
                await conn.close()
            except Exception as exc:  # closing a broken connection may fail too
                log.debug("%s: closing: %s", self.path, exc)

    async def _connection(self) -> aiosqlite.Connection:
        if self._conn is not None:
            if self._same_file():
                return self._conn
            log.warning("%s: the ledger file was removed or replaced", self.path)
            await self._drop_connection()
        if not self._closing and time.monotonic() < self._reopen_at:
            raise LedgerUnavailable(self._down)  # refused at once: see REOPEN_FIRST_S
        self.stats.opens_tried += 1
        try:
            return await self._open()
        except LedgerError as exc:
            self._back_off(str(exc))
            raise

    async def _open(self) -> aiosqlite.Connection:
        """Take the lock, open the file and read its head (``_prepare``)."""
        self._take_lock()
        try:
            conn = await aiosqlite.connect(
                self.path, timeout=self._busy_timeout, isolation_level="IMMEDIATE"
            )
        except (sqlite3.Error, OSError) as exc:
            raise LedgerUnavailable(f"{self.path}: cannot open: {exc}") from None
        direct = None
        try:
            await self._prepare(conn)
            st = os.stat(self.path)
            if not self._fsync:
                direct = sqlite3.connect(self.path, timeout=0, isolation_level="IMMEDIATE")
                direct.execute("PRAGMA synchronous=NORMAL").close()
                direct.execute("PRAGMA wal_autocheckpoint=0").close()
                # a WAL that grew in a burst is cut back when it starts over
                direct.execute("PRAGMA journal_size_limit=67108864").close()
        except BaseException as exc:
            if direct is not None:
                direct.close()
            try:
                await conn.close()
            except Exception as close_exc:
                log.debug("%s: closing: %s", self.path, close_exc)
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise LedgerUnavailable(f"{self.path}: cannot open: {exc}") from None
            raise
        self._conn, self._direct, self._file_id = conn, direct, (st.st_dev, st.st_ino)
        self.stats.reopens += 1
        return conn

    @property
    def lock_path(self) -> Path:
        """The file a writer holds an exclusive ``flock`` on while it is open."""
        return self.path.with_name(self.path.name + ".lock")

    def _take_lock(self) -> None:
        """Hold the lock file beside the ledger (or check that the one held is still the
        one there): two writers of one file would fork its chain. LedgerFileError when
        another process holds it, LedgerUnavailable when it cannot be made now."""
        path = self.lock_path
        if self._lock is not None:
            try:
                held, there = os.fstat(self._lock), os.stat(path)
                if (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino):
                    return
            except OSError:
                pass
            self._release_lock()  # removed with its directory: take the new one
        try:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except PermissionError:  # made by another user: locking needs no write
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise LedgerUnavailable(
                f"{self.path}: cannot open its lock file {path.name}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = f" (pid {int(os.pread(fd, 32, 0).decode().strip())})"
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                raise LedgerFileError(
                    f"{self.path}: the ledger is in use by another gateway{holder}: one "
                    "ledger file takes one gateway"
                ) from None
            raise LedgerUnavailable(
                f"{self.path}: cannot lock {path.name}: {exc.strerror or exc}"
            ) from None
        with contextlib.suppress(OSError):  # who holds it, for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock = fd

    def _release_lock(self) -> None:
        fd, self._lock = self._lock, None
        if fd is not None:
            os.close(fd)  # the flock goes with it

    async def _prepare(self, conn: aiosqlite.Connection) -> None:
        """Schema and pragmas; then check the tail and take the chain's head from it."""
        app_id = await _scalar(conn, "PRAGMA application_id")
        if app_id != APPLICATION_ID:
            if await _scalar(conn, "SELECT count(*) FROM sqlite_master"):
                raise LedgerFileError(f"{self.path}: not a sqlgate ledger (it holds other tables)")
        mode = await _scalar(conn, "PRAGMA journal_mode=WAL")
        if str(mode).lower() != "wal":
            raise LedgerUnavailable(f"{self.path}: cannot use WAL mode (journal_mode={mode})")
        await conn.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'NORMAL'}")
        if app_id != APPLICATION_ID:
            await conn.executescript(_SCHEMA)
        await conn.execute(_RECORDINGS)  # also in ledgers made before recordings existed
        await conn.commit()
        problem = await _records_shape_async(conn)
        if problem is not None:  # its readers refuse it: nothing is added to it
            raise LedgerFileError(
                f"{self.path}: {problem}: the file was edited; refusing to extend it: move it aside"
            )
        row = await _row(conn, LAST_CHECKPOINT)
        start = int(row[0]) if row else 1
        after_hash = None if row else GENESIS_HASH  # the checkpoint's signature anchors it
        verifier = Verifier(self._public_key, after_seq=start - 1, after_hash=after_hash)
        tail: list[tuple[int, str, str]] = []  # seq, hash and ts of each from that checkpoint
        async with conn.execute(
            "SELECT seq, body FROM records NOT INDEXED WHERE seq >= ? ORDER BY seq", (start,)
        ) as cursor:
            async for seq, body in cursor:
                if not verifier.feed_body(body, seq):
                    break
                record = verifier.last_record
                stamped = record.get("ts")
                tail.append(
                    (seq, str(record.get("hash")), stamped if isinstance(stamped, str) else "")
                )
        result = verifier.result()
        if not result.ok:
            raise LedgerFileError(
                f"{self.path}: record {result.first_bad_seq}: {result.reason}; refusing to "
                "extend it: check it with 'sqlgate ledger verify', then move it aside"
            )
        first_open = self._seq == 0
        held = await self._check_continuity(conn, result)
        mine = self._seq if held else 0
        if result.last_seq > self._seq:
            await self._landed(conn, self._seq)
        # unsigned records this writer did not write (its own are up to its head, or in a
        # commit that failed but reached the file): whoever added them, they get signed
        # below, so the ledger says first that they were found, not written, by this run
        signed_through = result.last_checkpoint_seq or 0
        foreign = [
            seq
            for seq, digest, _ in tail
            if seq > signed_through and seq > mine and digest not in self._own
        ]
        # no record is stamped earlier than the gateway's own word before it: its head
        # (kept while the file holds it), the last checkpoint, its own records that landed;
        # a ts of the records it names as foreign counts for nothing (a forged one far in
        # the future would otherwise stamp every record after it)
        # the last checkpoint's own ts is no one's word (its signature covers the record
        # before it): it holds the records after it only when at most CHECKPOINT_AHEAD_S
        # ahead of the clock
        floor = self._ts if held else ""
        for seq, digest, stamped in tail:
            if digest in self._own:
                floor = max(floor, stamped)
            elif seq == signed_through:
                floor = max(floor, _capped_ahead(stamped, self.path))
        self._own.clear()  # what failed before this open either is in the file or never was
        self._alerts_tried.clear()
        self._seq, self._hash = result.last_seq, result.last_hash
        self._last_is_checkpoint = result.unsigned == 0 and result.last_seq > 0
        self._ts = floor
        if not result.unsigned:
            if not self._lost and self._more is None:  # else the records_lost alert is due
                self._unsigned_since = None
        elif self._unsigned_since is None or foreign:  # sign it at once
            self._unsigned_since = time.monotonic() - self._interval
        if foreign:
            self._alerts.append(self._unsigned_tail_alert(foreign[0], foreign[-1], first_open))

    def _unsigned_tail_alert(self, first: int, last: int, first_open: bool) -> dict[str, Any]:
        """The ``unsigned_tail_signed`` alert naming records ``first`` to ``last``, which
        this writer found unsigned and did not write, and which it signs after it: what
        they say counts for no more than their having been in the file (a forged
        ``recordings_purged`` alert among them excuses nothing; see ``_Retention``)."""
        if first_open:
            why = (
                "came after the last checkpoint when this run started (written by a run that "
                "stopped before signing them, or added to the file since)"
            )
        else:
            why = (
                "were found unsigned in the file and not written by this gateway (something "
                "else added them while it ran, or they came with a file that replaced it)"
            )
            log.error(
                "%s: records %d to %d were not written by this gateway", self.path, first, last
            )
        return {
            "kind": "alert",
            "alert": "unsigned_tail_signed",
            "session": None,
            "reason": f"records {first} to {last} {why}: signed now, after this alert",
            "from_seq": first,
            "to_seq": last,
        }

    async def _check_continuity(self, conn: aiosqlite.Connection, tail: VerifyResult) -> bool:
        """Whether the file holds the last record this writer committed (trivially so
        before its first); when it does not, plan an alert naming that record, in place
        of any ``unsigned_tail_signed`` alert planned that reached no file: it names
        records of the file that was replaced, not of this one (whose own are named next)."""
        if self._seq == 0:
            return True
        seq, digest = self._seq, self._hash
        found = None
        if seq <= tail.last_seq:
            row = await _row(conn, "SELECT body FROM records NOT INDEXED WHERE seq = ?", (seq,))
            try:
                found = json.loads(row[0]).get("hash") if row else None
            except (ValueError, AttributeError):
                found = None
        if found == digest:
            return True
        log.error(
            "%s: the ledger no longer holds record %d that this gateway wrote", self.path, seq
        )
        self._alerts = [a for a in self._alerts if a.get("alert") != "unsigned_tail_signed"]
        self._alerts.append(
            {
                "kind": "alert",
                "alert": "ledger_replaced",
                "session": None,
                "reason": f"the ledger file was removed, replaced or rolled back: it does not "
                f"hold record {seq} written before (it ends at seq {tail.last_seq})",
                "previous_seq": seq,
                "previous_hash": digest,
            }
        )
        return False


async def _row(
    conn: aiosqlite.Connection, sql: str, params: tuple[object, ...] = ()
) -> tuple[Any, ...] | None:
    async with conn.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    return None if row is None else tuple(row)


async def _scalar_args(conn: aiosqlite.Connection, sql: str, *args: object) -> Any:
    async with conn.execute(sql, args) as cursor:
        row = await cursor.fetchone()
    return row[0] if row else None


async def _scalar(conn: aiosqlite.Connection, sql: str) -> Any:
    row = await _row(conn, sql)
    return None if row is None else row[0]


async def _purge_batch(
    conn: aiosqlite.Connection, chunk: list[str], old: set[str], end: int
) -> tuple[int, int]:
    """One transaction of a purge: leave out of ``old`` the answers that results
    committed since seq ``end`` repeated, delete those of ``chunk`` still in it. Returns
    how many went (once committed) and the seq looked at last."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        last = await _scalar(conn, "SELECT coalesce(max(seq), 0) FROM records")
        if last > end:  # results committed since the last look
            old -= await _recorded_since(conn, "seq > ?", (end,))
            end = last
        doomed = [digest for digest in chunk if digest in old]
        gone = 0
        if doomed:
            marks = ",".join("?" * len(doomed))
            async with conn.execute(
                f"DELETE FROM recordings WHERE hash IN ({marks})", doomed
            ) as cursor:
                gone = max(0, cursor.rowcount)
        await conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                await conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                log.debug("purge: rollback: %s", exc)
        raise
    return gone, end


async def _purge_counted(
    conn: aiosqlite.Connection, chunk: list[str], old: set[str], end: int
) -> tuple[int, int, sqlite3.Error | None]:
    """``_purge_batch``, and should it fail, how many of ``chunk`` are gone all the same
    (a COMMIT may report an error after it landed): a ``recordings_deleted`` alert that
    counted fewer than went would leave verify short of an explanation for the rest."""
    try:
        gone, end = await _purge_batch(conn, chunk, old, end)
    except sqlite3.Error as exc:
        return await _gone(conn, chunk), end, exc
    return gone, end, None


async def _gone(conn: aiosqlite.Connection, chunk: list[str]) -> int:
    """How many of the recordings ``chunk`` names are no longer stored (0 if it cannot
    be told: the purge then says it deleted fewer, as before)."""
    if conn.in_transaction:  # its ROLLBACK failed too: it would see its own deletions
        return 0
    marks = ",".join("?" * len(chunk))
    try:
        left = await _scalar_args(
            conn, f"SELECT count(*) FROM recordings WHERE hash IN ({marks})", *chunk
        )
    except sqlite3.Error as exc:
        log.debug("purge: counting what went: %s", exc)
        return 0
    return len(chunk) - int(left)


async def _wait_out(work: asyncio.Future[Any]) -> bool:
    """Wait until ``work`` is done, however many times the waiting task is cancelled
    meanwhile (a second stop must not lose what the batch in hand did); whether it was.
    The caller takes the outcome from ``work`` and stops if it was cancelled."""
    cancelled = False
    while not work.done():
        try:
            await asyncio.wait((work,))
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


async def _recorded_since(
    conn: aiosqlite.Connection, where: str, params: tuple[object, ...]
) -> set[str]:
    """The recordings that result records matching ``where`` refer to."""
    rows = await conn.execute_fetchall(
        "SELECT DISTINCT json_extract(body, '$.recording') FROM records NOT INDEXED "
        f"WHERE kind = 'result' AND {where} AND instr(body, '\"recording\":\"') > 0",
        params,
    )
    return {str(row[0]) for row in rows if row[0] is not None}


def _capped_ahead(stamped: str, path: Path) -> str:
    """The last checkpoint's ``ts`` as a floor, or none ("") when it is later than
    ``CHECKPOINT_AHEAD_S`` from now: the records are then stamped by the clock."""
    now = utc_now()
    try:
        when = datetime.fromisoformat(now.replace("Z", "+00:00"))
        latest = (when + timedelta(seconds=CHECKPOINT_AHEAD_S)).isoformat(timespec="microseconds")
    except (ValueError, OverflowError):  # utc_now() is always a time; just in case
        return ""
    latest = latest.replace("+00:00", "Z")
    if stamped <= latest:
        return stamped
    log.warning(
        "%s: the last checkpoint's ts %s is later than the clock (%s): the records after it "
        "are stamped by the clock (it was set back, or the file was edited)",
        path,
        stamped[:40],
        now,
    )
    return ""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


# -- reading -------------------------------------------------------------------------------


def open_ledger(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection to a ledger (LedgerFileError naming the file if not)."""
    p = Path(path)
    if not p.exists():
        raise LedgerFileError(f"{path}: {_missing(p)}")
    if p.is_dir():
        raise LedgerFileError(f"{path}: is a directory, not a ledger")
    uri = p.resolve().as_uri() + "?mode=ro"
    try:
        return _open_read_only(uri, path)
    except sqlite3.OperationalError as exc:
        if not _needs_shm(exc, p):
            raise _unreadable(path, exc) from None
    # A ledger in WAL mode is read through a -shm file beside it, which SQLite could not
    # create (a read-only copy, a directory the reader cannot write). Without a write-ahead
    # log to read, the file alone is the whole ledger: read it as unchanging.
    wal = Path(f"{p}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise LedgerFileError(
            f"{path}: its write-ahead log ({wal.name}) can only be read where SQLite may "
            "create the -shm file beside it: copy the ledger with its -wal file to a "
            "directory you can write to"
        )
    try:
        return _open_read_only(uri + "&immutable=1", path)
    except sqlite3.Error as exc:
        raise _unreadable(path, exc) from None


def _missing(path: Path) -> str:
    """Why a path that does not exist for ``Path.exists`` is not there: "no such file",
    or what the system says of it (a symlink loop, which ``exists`` also calls absent)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR) and exc.strerror:
            return exc.strerror
    return "no such file"


_NOT_A_DATABASE = (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FORMAT)
_NO_ROOM = (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL)


def _unreadable(path: str | os.PathLike[str], exc: sqlite3.Error) -> LedgerFileError:
    """Why a file could not be read: it is no SQLite database, or it could not be read
    (an I/O error, a full file system for the -shm file, a permission): not the same."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else int(code) & 0xFF
    if primary is None or primary in _NOT_A_DATABASE:
        return LedgerFileError(f"{path}: not a sqlgate ledger ({exc})")
    hint = ""
    if primary in _NO_ROOM:  # reading a WAL ledger writes its -shm index beside it
        hint = " (is the file system full? reading needs room for the -shm file beside it)"
    return LedgerFileError(f"{path}: cannot read the ledger: {exc}{hint}")


def _open_read_only(uri: str, path: str | os.PathLike[str]) -> sqlite3.Connection:
    """The connection once the file proves to be a ledger (sqlite3.OperationalError when
    it cannot be read at all; LedgerFileError or LedgerDamaged naming the file)."""
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise LedgerFileError(f"{path}: cannot open: {exc}") from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.OperationalError:
        conn.close()
        raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        if "malformed" in str(exc):
            raise LedgerDamaged(f"{path}: the file is damaged ({exc})") from None
        raise LedgerFileError(f"{path}: not a sqlgate ledger ({exc})") from None
    except UnicodeDecodeError:  # SQLite reads the schema; the text of a name is Python's
        conn.close()
        raise LedgerDamaged(
            f"{path}: the file is damaged (its schema names a table, index or trigger in "
            "bytes that are not UTF-8 text)"
        ) from None
    if app_id != APPLICATION_ID or "records" not in tables:
        conn.close()
        raise LedgerFileError(f"{path}: not a sqlgate ledger")
    try:
        problem = _records_shape(conn)
    except sqlite3.OperationalError:
        conn.close()
        raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise LedgerDamaged(f"{path}: the file is damaged ({exc})") from None
    if problem is not None:
        conn.close()
        raise LedgerDamaged(
            f"{path}: {problem}: the file was edited (a reader could be shown other records "
            "than those verified)"
        )
    return conn


_RECORD_COLUMNS = frozenset({"seq", "ts", "kind", "session", "body"})


_SHAPE_MASTER = "SELECT type, rootpage FROM sqlite_master WHERE name = 'records'"
_SHAPE_COLUMNS = "PRAGMA table_xinfo(records)"
_SHAPE_ROWID = "SELECT rowid FROM records NOT INDEXED LIMIT 0"


def _records_shape(conn: sqlite3.Connection) -> str | None:
    """Why ``records`` is not the ledger's table (None when it is): a view or a virtual
    table, or a table with columns of its own or computed ones. The readers rely on its
    shape: ``export --session`` (and replay) reads each body by its row id, which a column
    named ``rowid`` would shadow, handing out another record or none, while ``verify``,
    reading every row, saw them all; a view may show each reader other rows."""
    master = conn.execute(_SHAPE_MASTER).fetchone()
    columns = list(conn.execute(_SHAPE_COLUMNS))
    try:
        conn.execute(_SHAPE_ROWID).close()
    except sqlite3.OperationalError:
        has_rowid = False
    else:
        has_rowid = True
    return _shape_problem(master, columns, has_rowid)


async def _records_shape_async(conn: aiosqlite.Connection) -> str | None:
    """``_records_shape`` on the writer's connection: it does not extend such a file."""
    master = await _row(conn, _SHAPE_MASTER)
    async with conn.execute(_SHAPE_COLUMNS) as cursor:
        columns = list(await cursor.fetchall())
    try:
        await (await conn.execute(_SHAPE_ROWID)).close()
    except sqlite3.OperationalError:
        has_rowid = False
    else:
        has_rowid = True
    return _shape_problem(master, columns, has_rowid)


def _shape_problem(
    master: Sequence[Any] | None, table_xinfo: Iterable[Sequence[Any]], has_rowid: bool
) -> str | None:
    """``_records_shape`` from what the file says of ``records``."""
    row = master
    if row is None or row[0] != "table" or not row[1]:  # a view's or virtual table's is 0
        return "'records' is a view or a virtual table, not the ledger's table"
    columns = [(str(c[1]), int(c[6])) for c in table_xinfo]
    names = {name.lower() for name, _ in columns}
    if names != _RECORD_COLUMNS or len(columns) != len(_RECORD_COLUMNS):
        extra = sorted(names - _RECORD_COLUMNS)
        if extra:
            return f"the records table has columns the ledger's has not ({', '.join(extra)})"
        return f"the records table lacks columns ({', '.join(sorted(_RECORD_COLUMNS - names))})"
    if any(hidden for _, hidden in columns):
        return "the records table has computed (generated) columns"
    if not has_rowid:
        return "the records table has no row id (WITHOUT ROWID)"
    return None


def _needs_shm(exc: sqlite3.OperationalError, path: Path) -> bool:
    """Whether opening failed for want of a -shm file that SQLite may not create."""
    message = str(exc)
    return not Path(f"{path}-shm").exists() and (
        "readonly database" in message or "unable to open database file" in message
    )


def _lenient(data: bytes) -> str | bytes:
    """A TEXT value as str, or as its bytes when they are not UTF-8 (a file edited or
    damaged): the reader then names that row instead of failing the rows around it."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data


def _rows(
    conn: sqlite3.Connection, sql: str, params: tuple[object, ...] = ()
) -> Iterator[tuple[Any, ...]]:
    """The rows of ``sql`` (which has no LIMIT), fetched a chunk at a time.

    SQLite's module hands a chunk over whole or not at all. When one fails (text that is
    not UTF-8, a damaged page) the rest is read again from that chunk's first row, one row
    at a time and with text decoded here (``_lenient``): every row before the bad one is
    read, and the bad one comes with its text as bytes, or its error is raised there, not
    at the start of its chunk. Run in a read transaction (the same rows each time)."""
    done = 0
    cursor = conn.execute(sql, params)
    try:
        while True:
            try:
                chunk = cursor.fetchmany(_FETCH)
            except sqlite3.Error:
                break
            if not chunk:
                return
            done += len(chunk)
            yield from chunk
        cursor.close()
        conn.text_factory = _lenient
        cursor = conn.execute(f"{sql} LIMIT -1 OFFSET ?", (*params, done))
        while (row := cursor.fetchone()) is not None:
            yield row
    finally:
        conn.text_factory = str
        cursor.close()


def _not_utf8(body: object) -> bool:
    """Whether a stored body is bytes that are not UTF-8 text."""
    return isinstance(body, bytes) and isinstance(_lenient(body), bytes)


def verify_file(
    path: str | os.PathLike[str], public_key: Ed25519PublicKey, held_head: Head | None = None
) -> VerifyResult:
    """Verify a whole ledger file in one snapshot (LedgerFileError if it is not one).

    Past a record that breaks the chain the rest is read best effort for the retention
    alerts only (a read error ends it): a purge there, or one that a checkpoint there
    signed (its signature verifies), may explain a missing recording before the break,
    and the first bad record named must be one that is wrong, not a recording a purge
    deleted."""
    conn = open_ledger(path)
    verifier = Verifier(public_key, held_head)
    recordings = _Recordings(conn, public_key)
    # the indexes are compared with the table on a connection of their own while the
    # records are checked here: SQLite runs without the GIL, so on a second core the
    # comparison adds next to no time
    pool = ThreadPoolExecutor(1, thread_name_prefix="sqlgate-indexes")
    indexes = pool.submit(_index_check, path)
    try:
        conn.execute("BEGIN")
        seqless = False
        for seq, body, ts, kind, session in _rows(
            conn, "SELECT seq, body, ts, kind, session FROM records NOT INDEXED ORDER BY seq"
        ):
            if seq is None:  # sorted first, and no place in the chain: named below
                seqless = True
                continue
            if not verifier.ok:  # past the break: only what may excuse a missing recording
                recordings.note_unverified(seq, body)
                continue
            if _not_utf8(body):
                verifier.fail(
                    "the stored record is not UTF-8 text (the file was edited or damaged)", seq
                )
            elif not isinstance(body, str):
                verifier.fail("the stored record is not text", seq)
            elif verifier.feed_body(body, seq):
                record = verifier.last_record
                # copies of the record's fields that export filters on: an edited one would
                # hide the record from an export the auditor trusts because verify passed
                if (
                    record.get("kind") != kind
                    or record.get("ts") != ts
                    or record.get("session") != session
                ):
                    verifier.fail(
                        "the row's ts, kind or session column differs from the record (the "
                        "file was edited: an export filtered on them would leave the record "
                        "out)",
                        seq,
                    )
                elif '"recording' in body or '"unsigned_tail_signed"' in body:
                    # a result's recording, or a retention alert (``_Retention.mentions``)
                    recordings.note(seq, body)
            if not verifier.ok:
                recordings.note_unverified(seq, body)
        if seqless:
            after, said = _seqless_row(conn)
            verifier.fail(f"a row with no seq (NULL) {_seqless_words(after, said)}", after + 1)
    except sqlite3.Error as exc:
        if verifier.ok:  # past a break, the read is best effort: the break is the finding
            verifier.fail(f"the database cannot be read after this point ({exc})")
    finally:
        conn.close()
        pool.shutdown(wait=True)
    _check_indexes(indexes, verifier)
    # also when the chain broke: a recording missing or changed before that record makes
    # the first bad record an earlier one (Verifier.fail keeps the lowest seq)
    problem = recordings.check(verifier.result().last_checkpoint_seq, broken=not verifier.ok)
    if problem is not None:
        verifier.fail(problem[1], problem[0])
    result = verifier.result()
    # records signed yet not the gateway's word: what an auditor must be told besides "ok"
    # (only alerts a checkpoint signs: one after it is anyone's)
    signed = result.last_checkpoint_seq or 0
    late = tuple((first, last) for seq, first, last in recordings.retention.named if seq < signed)
    if result.ok and late:
        result = dataclasses.replace(result, signed_after_the_fact=late)
    return result


def _seqless_row(conn: sqlite3.Connection) -> tuple[int, object]:
    """Where the first row with no seq stands (a table made again without its primary key,
    then edited): the seq of the row before it in the table's own order (0 for none), and
    the seq its text says (None if it says none)."""
    row = conn.execute(
        "SELECT rowid, CASE WHEN json_valid(body) THEN json_extract(body, '$.seq') END "
        "FROM records NOT INDEXED WHERE seq IS NULL ORDER BY rowid LIMIT 1"
    ).fetchone()
    if row is None:
        return 0, None
    before = conn.execute(
        "SELECT seq FROM records NOT INDEXED WHERE rowid < ? AND typeof(seq) = 'integer' "
        "ORDER BY rowid DESC LIMIT 1",
        (row[0],),
    ).fetchone()
    return (int(before[0]) if before else 0), row[1]


def _seqless_words(after: int, said: object) -> str:
    """Where a row with no seq stands, and what its text says, in words."""
    where = f"follows record {after} in the table" if after else "comes first in the table"
    text = f"its text says seq {said}" if said is not None else "its text names no seq"
    return f"{where} ({text}): it has no place in the chain (the table was made again and edited)"


_INDEX_ROW = re.compile(r"row (\d+) missing from index (.+)\Z")


def _index_check(path: str | os.PathLike[str]) -> list[str]:
    """What ``PRAGMA integrity_check(records)`` says of the ledger's table and indexes."""
    conn = open_ledger(path)
    try:
        return [str(line) for (line,) in conn.execute("PRAGMA integrity_check(records)")]
    finally:
        conn.close()


def _check_indexes(check: Future[list[str]], verifier: Verifier) -> None:
    """Report an index of ``records`` that does not hold what the table holds.

    The ledger's readers take every body from the table, but an index is in the file too:
    one rewritten behind SQLite's back (``PRAGMA writable_schema``, its SQL text put back)
    shows any tool that reads through it (the sqlite3 shell, an older sqlgate) other text
    than the record's, or leaves records out, and the verdict covers the whole file.
    ``integrity_check(records)`` compares every entry of the table's indexes with its rows
    (``quick_check`` does not); see docs/performance.md for its cost."""
    try:
        lines = check.result()
    except (sqlite3.Error, LedgerError) as exc:
        if verifier.ok:
            verifier.fail(f"the file's indexes cannot be checked ({exc})", 1)
        return
    if lines == ["ok"]:
        return
    rows = [(int(m[1]), m[2]) for m in map(_INDEX_ROW.match, lines) if m is not None]
    if rows:
        seq, index = min(rows)
        verifier.fail(
            f"the file's index {index} does not hold this record as the table does (the "
            "index was rewritten or damaged: a reader using it would be shown other text, "
            "or nothing)",
            seq,
        )
    elif verifier.ok:  # no record named: an entry too many, or a damaged page
        verifier.fail(f"the file's records table or one of its indexes is damaged ({lines[0]})", 1)


_RETENTION_MARKS = ('"recordings_purged"', '"recordings_deleted"', '"unsigned_tail_signed"')
"""Text that the body of an alert ``_Retention`` reads holds (a cheap test before parsing)."""

_Missing = tuple[int, str, str]  # a result whose recording is gone: seq, ts, recording


@dataclass(slots=True)
class _Excuses:
    """What the retention records explain. A recording is stored once, and a purge with
    bound b deletes it only when every result carrying it is before b (a later result
    repeating it keeps it): a missing recording whose latest result is before ``full``
    was purged (by a purge that finished, or said nothing of how it went); each purge
    that stopped part way (``limited``: its bound and how many it deleted) explains at
    most that many distinct recordings whose latest result is before its bound, beyond
    those. ``refused``: the bound and the why of each purge record that explains nothing."""

    full: str = ""
    limited: list[tuple[str, int]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)

    def explain(self, latest: Mapping[str, str]) -> dict[str, str]:
        """The missing recordings that purges explain, given the ``ts`` of the latest
        result carrying each: the bound of the purge that explains each.

        Which recordings a stopped purge deleted is not recorded, only how many. The
        purges that may have deleted one are those with a bound after its latest result,
        so the later its latest result the fewer: those go first, each to the stopped
        purge with the smallest such bound that has deletions left. As each one's
        purges include those of every one after it, this explains as many as any
        assignment could: a recording left over is one more than the purges deleted."""
        stopped = sorted(self.limited)
        left = [deleted for _, deleted in stopped]
        out: dict[str, str] = {}
        later: list[tuple[str, str]] = []
        for digest, last in latest.items():
            if last < self.full:
                out[digest] = self.full
            else:
                later.append((last, digest))
        for last, digest in sorted(later, reverse=True):
            purge = next(
                (i for i, (bound, _) in enumerate(stopped) if last < bound and left[i] > 0),
                None,
            )
            if purge is not None:
                left[purge] -= 1
                out[digest] = stopped[purge][0]
        return out

    def missing(self, ts: str) -> str:
        """Why a missing recording of a result at ``ts`` is the ledger's fault."""
        whys = [why for bound, why in self.refused if ts < bound]
        if "after the fact" in whys:
            return (
                "the recording of this result is missing (and was not purged: the purge "
                "record before its time was signed after the fact, after an "
                "unsigned_tail_signed alert, so anyone could have written it)"
            )
        if "unsigned" in whys:
            return (
                "the recording of this result is missing (and was not purged by a signed "
                "purge record)"
            )
        if any(ts < bound for bound, _ in self.limited):
            return (
                "the recording of this result is missing (and was not purged: the purge "
                "before its time stopped part way, and more recordings are missing than "
                "its recordings_deleted alert says it deleted)"
            )
        return "the recording of this result is missing (and was not purged)"


class _Retention:
    """The retention records of a ledger, as ``verify`` and replay honour them (one rule
    for both). A ``recordings_purged`` alert explains the missing recordings of results
    before its bound (``before``, or its own time if earlier) only when the gateway
    signed it as it wrote it: a checkpoint follows it, and no ``unsigned_tail_signed``
    alert names it. Anyone who can write the file can append a chained alert; the
    gateway then signs it after the fact, after such an alert, and it excuses nothing.

    The ``recordings_deleted`` alert after a purge (the same ``before``) says how it
    went: one with ``complete`` false limits the purge to the ``deleted`` recordings it
    counts (the rest were left, and may not go unnoticed). It needs no signature: a
    forged one can only limit a purge further, as ``complete`` true changes nothing
    against a purge that said nothing (a crash, or a ledger from before the alert)."""

    def __init__(self) -> None:
        self.purges: list[tuple[int, str, str]] = []  # seq, before, bound of each purge
        self.outcomes: list[tuple[int, str, int | None]] = []  # seq, before, deleted if cut
        self.tails: list[tuple[int, int]] = []  # ranges signed after the fact
        self.named: list[tuple[int, int, int]] = []  # each tail's alert seq, first, last
        self.claimed = 0  # past a break: the last checkpoint whose signature verifies

    @staticmethod
    def mentions(body: str) -> bool:
        """Whether a stored body may be an alert that ``note`` reads (two searches, not a
        generator over the marks: ``verify_file`` asks of every record)."""
        return '"recordings_' in body or '"unsigned_tail_signed"' in body

    def note(self, seq: int, record: Mapping[str, Any]) -> None:
        """Take in one record (any kind; only the alerts above count)."""
        if record.get("kind") != "alert":
            return
        alert, before = record.get("alert"), record.get("before")
        if alert == "recordings_purged":
            ts = record.get("ts")
            if isinstance(before, str):
                bound = min(before, ts) if isinstance(ts, str) else before
                self.purges.append((seq, before, bound))
        elif alert == "recordings_deleted":
            if isinstance(before, str):
                deleted = record.get("deleted")
                cut = deleted if type(deleted) is int and deleted >= 0 else 0
                self.outcomes.append((seq, before, None if record.get("complete") is True else cut))
        elif alert == "unsigned_tail_signed":
            first, last = record.get("from_seq"), record.get("to_seq")
            if type(first) is int and type(last) is int:
                self.tails.append((first, last))
                self.named.append((seq, first, last))

    def excuses(self, signed_through: int | None, *, broken: bool = False) -> _Excuses:
        """What the purges explain; ``signed_through``: the seq of the last checkpoint.

        ``broken``: the chain broke after it, so whether a purge after it was signed
        cannot be known. One that a checkpoint past the break signs (its signature
        verifies: ``_Recordings.note_unverified``) may have been, and counts: a missing
        recording is then blamed only when no purge of the file could explain it, and the
        first bad record named is one that is wrong."""
        out = _Excuses()
        honoured: list[tuple[int, str, str]] = []
        signed = max(signed_through or 0, self.claimed if broken else 0)
        for seq, before, bound in self.purges:
            if seq >= signed:
                out.refused.append((bound, "unsigned"))
            elif any(first <= seq <= last for first, last in self.tails):
                out.refused.append((bound, "after the fact"))
            else:
                honoured.append((seq, before, bound))
        cut: dict[int, int] = {}  # a purge's seq -> at most how many it deleted
        for seq, before, deleted in self.outcomes:
            purge = next((p for p, b, _ in reversed(honoured) if p < seq and b == before), None)
            if purge is not None and deleted is not None:
                cut[purge] = min(cut.get(purge, deleted), deleted)
        for seq, _, bound in honoured:
            if seq in cut:
                out.limited.append((bound, cut[seq]))
            else:
                out.full = max(out.full, bound)
        return out


class _Recordings:
    """Session recordings against the hashes their result records carry: each must be
    there and unchanged, unless a purge that ``_Retention`` honours removed it.

    Past a break in the chain only the retention alerts are read (``note_unverified``):
    the results there are not the ledger's word, but a purge there may well be."""

    def __init__(
        self, conn: sqlite3.Connection, public_key: Ed25519PublicKey | None = None
    ) -> None:
        self.conn = conn
        self.public_key = public_key  # checks the checkpoints read past a break
        self.missing: list[_Missing] = []  # the results without their recording
        self.retention = _Retention()
        self.bad: tuple[int, str] | None = None

    def note(self, seq: int, body: str) -> None:
        record = json.loads(body)
        if record.get("kind") == "alert":
            self.retention.note(seq, record)
            return
        digest = record.get("recording")
        if record.get("kind") != "result" or not isinstance(digest, str):
            return  # every result, also past a changed recording: see ``check``
        try:
            row = self.conn.execute(
                "SELECT body FROM recordings WHERE hash = ?", (digest,)
            ).fetchone()
        except sqlite3.OperationalError:  # a ledger without the table
            row = None
        if row is None:
            self.missing.append((seq, str(record.get("ts", "")), digest))
        elif self.bad is None and (
            not isinstance(row[0], bytes) or hashlib.sha256(row[0]).hexdigest() != digest
        ):
            self.bad = (seq, "the recording of this result was changed (its SHA-256 differs)")

    def note_unverified(self, seq: object, body: object) -> None:
        """Take in a record at or past a break in the chain, best effort (one that cannot
        be read is passed over): its retention alerts, and whether it is a checkpoint that
        may have signed a purge before it. Past the break the chain vouches for nothing,
        so only a checkpoint whose signature verifies, over the record right before it,
        counts: a row that only says so (its ``kind`` column, or a body anyone can write)
        would let a purge alert forged after the last signature excuse a recording
        deleted before it."""
        if not isinstance(seq, int) or isinstance(seq, bool):
            return  # a row seq of another type (a column retyped): no place in the chain
        if not isinstance(body, str):
            return
        if not ('"checkpoint"' in body or _Retention.mentions(body)):
            return
        try:
            record = json.loads(body)
        except (ValueError, RecursionError):
            return
        if not isinstance(record, dict):
            return
        if record.get("kind") == "checkpoint" and self._signed(record, seq):
            self.retention.claimed = seq
        self.retention.note(seq, record)

    def _signed(self, record: Mapping[str, Any], seq: int) -> bool:
        """Whether a checkpoint read past a break signs the record right before it with
        the verifier's key (what it signed cannot be chained to the records: the break)."""
        signed_seq, digest, signature = (
            record.get("checkpoint_seq"),
            record.get("checkpoint_hash"),
            record.get("signature"),
        )
        return (
            self.public_key is not None
            and type(signed_seq) is int
            and signed_seq == seq - 1
            and isinstance(digest, str)
            and isinstance(signature, str)
            and verify_head(self.public_key, signed_seq, digest, signature)
        )

    def check(self, signed_through: int | None, *, broken: bool = False) -> tuple[int, str] | None:
        """The first bad recording, missing or changed, whichever result comes first;
        ``signed_through``: the seq of the last checkpoint; ``broken``: the chain broke
        after the results noted (see ``_Retention.excuses``)."""
        excuses = self.retention.excuses(signed_through, broken=broken)
        latest: dict[str, str] = {}  # a missing recording -> the ts of its latest result
        for _, ts, digest in self.missing:
            latest[digest] = max(latest.get(digest, ts), ts)
        explained = excuses.explain(latest)
        gone = next(
            (
                (seq, excuses.missing(latest[digest]))
                for seq, _, digest in self.missing
                if digest not in explained
            ),
            None,
        )
        if gone is None or (self.bad is not None and self.bad[0] < gone[0]):
            return self.bad
        return gone


def read_head(path: str | os.PathLike[str]) -> Head | None:
    """The latest checkpoint as a head, or None if there is none yet.

    Found by what the records say (their bodies, which the chain covers), not by the
    ``kind`` column: a column relabelled in the file would otherwise hand an auditor an
    older head, and with it a rollback to that head would go unnoticed. The search runs
    back from the newest record, so it reads about a second's worth of them."""
    conn = open_ledger(path)
    conn.text_factory = _lenient  # a body that is not UTF-8 is named, not read as an error
    try:
        # a row with no seq sorts last here: had it held the newest checkpoint, an older one
        # would be handed out (with the seq as the primary key, as written, there is none)
        if conn.execute("SELECT 1 FROM records NOT INDEXED WHERE seq IS NULL LIMIT 1").fetchone():
            after, said = _seqless_row(conn)
            raise LedgerDamaged(
                f"{path}: a row with no seq (NULL) {_seqless_words(after, said)}; the newest "
                "checkpoint cannot be told ('sqlgate ledger verify' names the first bad record)"
            )
        row = conn.execute(
            "SELECT seq, body FROM records NOT INDEXED WHERE json_valid(body) "
            "AND json_extract(body, '$.kind') = 'checkpoint' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    except sqlite3.Error as exc:
        raise LedgerFileError(f"{path}: cannot read: {exc}") from None
    finally:
        conn.close()
    if row is None:
        return None
    if _not_utf8(row[1]):
        raise LedgerDamaged(f"{path}: record {row[0]}: the stored record is not UTF-8 text")
    try:
        record = json.loads(row[1])
        head = Head.from_checkpoint(record)
    except (ValueError, TypeError, AttributeError) as exc:
        raise LedgerDamaged(f"{path}: record {row[0]}: not a valid checkpoint: {exc}") from None
    # A checkpoint signs the record just before it: one that carries another's signed
    # seq and hash (an older checkpoint's, copied to the end) would hand out an old head
    if record.get("seq") != row[0] or head.seq != row[0] - 1:
        raise LedgerDamaged(
            f"{path}: record {row[0]}: a checkpoint that signs seq {head.seq}, not the "
            "record before it"
        )
    if record.get("prev_hash") != head.hash:
        raise LedgerDamaged(
            f"{path}: record {row[0]}: a checkpoint whose signed hash is not that of the "
            "record before it"
        )
    return head


def export(
    path: str | os.PathLike[str],
    *,
    session: str | None = None,
    since: str | None = None,
    kind: str | None = None,
) -> Iterator[str]:
    """The stored bodies, oldest first, filtered on the session, ts (>= since) and kind:
    one line of JSON each. A body that is not a JSON object raises LedgerDamaged naming
    its record; one spread over several lines is given on one.

    ``since`` compares with ``ts`` as text, so give it in the ledger's own form
    (``YYYY-MM-DDTHH:MM:SS.ffffffZ``, UTC). It is a filter on every record, not a seek:
    that it gives a tail rests on the writer never letting ``ts`` run backwards against
    ``seq``. Opening errors raise LedgerFileError at once.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    conn = open_ledger(path)
    where: list[str] = []
    params: list[str] = []
    for column, op, value in (("session", "=", session), ("ts", ">=", since), ("kind", "=", kind)):
        if value is not None:
            where.append(f"r.{column} {op} ?")
            params.append(value)
    # Each body (and the filters) is read from the table itself: an index is in the file
    # too, and one rewritten behind SQLite's back (PRAGMA writable_schema) would show text
    # that is not the record's (``verify_file`` reports such an index). The session's
    # index only names the rows to read, by rowid.
    if session is None:
        where.append("r.seq > ? AND r.seq <= ?")
        rows = "records AS r NOT INDEXED"
        order = "r.seq"
    else:
        where.append("i.session = ? AND i.seq > ? AND i.seq <= ?")
        params.append(session)
        rows = "records AS i CROSS JOIN records AS r NOT INDEXED ON r.rowid = i.rowid"
        order = "i.seq"
    sql = f"SELECT r.seq, r.body FROM {rows} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"

    def bodies() -> Iterator[str]:
        # up to the head at the start, a chunk at a time, each read a transaction of its
        # own: a reader that pauses (a pipe nobody reads) holds no snapshot, which would
        # keep the gateway's write-ahead log from starting over, growing without bound
        try:
            end = conn.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0]
            after = 0
            while True:
                chunk, failure = _chunk(conn, sql, (*params, after, end, _FETCH))
                for seq, body in chunk:
                    yield _export_line(path, seq, body)
                if failure is not None:
                    raise failure
                if not chunk:
                    break
                after = chunk[-1][0]
            # a row with no seq is none of the chunks' (a table made again and edited):
            # an export that left it out in silence would hand on a ledger as complete
            if conn.execute(
                "SELECT 1 FROM records NOT INDEXED WHERE seq IS NULL LIMIT 1"
            ).fetchone():
                before, said = _seqless_row(conn)
                raise LedgerDamaged(
                    f"{path}: a row with no seq (NULL) {_seqless_words(before, said)}; it "
                    "was not exported ('sqlgate ledger verify' names the first bad record)"
                )
        except sqlite3.Error as exc:
            raise LedgerFileError(f"{path}: cannot read: {exc}") from None
        finally:
            conn.close()

    return bodies()


def _chunk(
    conn: sqlite3.Connection, sql: str, params: tuple[object, ...]
) -> tuple[list[tuple[Any, ...]], sqlite3.Error | None]:
    """The rows of one read, and the error that ended it early (None if none).

    SQLite's module hands the rows over whole or not at all: when it cannot (text that is
    not UTF-8, a damaged page) they are read again one at a time with text decoded here
    (``_lenient``), so that the rows before the bad one are given, and the bad one comes
    with its text as bytes (its record is named), or its error comes after them."""
    try:
        return conn.execute(sql, params).fetchall(), None
    except sqlite3.Error:
        pass
    rows: list[tuple[Any, ...]] = []
    conn.text_factory = _lenient
    try:
        cursor = conn.execute(sql, params)
        try:
            while (row := cursor.fetchone()) is not None:
                rows.append(row)
        finally:
            cursor.close()
    except sqlite3.Error as exc:
        return rows, exc
    finally:
        conn.text_factory = str
    return rows, None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _export_line(path: str | os.PathLike[str], seq: object, body: object) -> str:
    """A stored body as one line of JSON (LedgerDamaged unless it holds a JSON object)."""
    if _not_utf8(body):
        raise LedgerDamaged(
            f"{path}: record {seq}: the stored record is not UTF-8 text (the file was damaged "
            "or edited; 'sqlgate ledger verify' names the first bad record)"
        )
    try:
        if not isinstance(body, str):
            raise ValueError("not text")
        record = json.loads(body, parse_constant=_reject_constant)
        if not isinstance(record, dict):
            raise ValueError("not an object")
    except (ValueError, RecursionError):
        raise LedgerDamaged(
            f"{path}: record {seq}: the stored record is not a JSON object (the file was "
            "damaged or edited; 'sqlgate ledger verify' names the first bad record)"
        ) from None
    if _ESCAPED_SURROGATE.search(body) and not _unicode(record):
        raise LedgerDamaged(
            f"{path}: record {seq}: the stored record holds a lone surrogate, which is not "
            "text (the file was damaged or edited; 'sqlgate ledger verify' names the first "
            "bad record)"
        )
    if "\n" in body or "\r" in body:  # JSON lines: one record, one line
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    return body


# A JSON escape of half a surrogate pair: alone, it decodes to a string that cannot be
# written as UTF-8 (the gateway never writes one; an edited file can)
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _unicode(record: dict[str, Any]) -> bool:
    """Whether every text of the record can be written as UTF-8: a lone surrogate would
    make whoever writes it out (export, replay) fail part way instead of saying why."""
    try:
        json.dumps(record, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


class RecordingReader:
    """Session recordings of a ledger by their SHA-256, read-only (one connection)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._excuses: _Excuses | None = None
        self._latest: dict[str, str] | None = None  # recordings gone since the purge bound
        self._explained: dict[str, str] | None = None  # those a purge explains: its bound
        self._read_at = 0  # the ledger's last seq when ``_excuses`` was read

    def get(self, digest: str) -> bytes | None:
        """The recording with SHA-256 ``digest``; None when there is none, b"" when it is
        stored as text (edited); LedgerDamaged when its pages cannot be read."""
        if self._conn is None:
            self._conn = open_ledger(self.path)
        try:
            row = self._conn.execute(
                "SELECT body FROM recordings WHERE hash = ?", (digest,)
            ).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # a ledger from before recordings
                return None
            raise LedgerDamaged(f"{self.path}: recording {digest[:12]}: {exc}") from None
        except sqlite3.DatabaseError as exc:  # a damaged page ("disk image is malformed")
            raise LedgerDamaged(
                f"{self.path}: recording {digest[:12]} cannot be read: {exc} (the file was "
                "damaged; 'sqlgate ledger verify' says more)"
            ) from None
        if row is None:
            return None
        if not isinstance(row[0], bytes):  # stored as text (edited): never its SHA-256
            return b""
        return row[0]

    def purged(self, record: Mapping[str, Any]) -> str | None:
        """For a result whose recording is gone: the bound of the retention purge record
        that explains it (None: none does, the ledger's fault), by the rule ``ledger
        verify`` applies (``_Retention``), over the ledger as it is: with no public key,
        the last record that says it is a checkpoint is taken as signed. A purge record
        and checkpoint that anyone who can write the file appended count here; only
        ``ledger verify --pubkey`` proves a purge was the gateway's.

        The retention records are read once; when they explain nothing and records were
        added since, once more: a purge may have run while a long export or replay was
        reading, and its alert explains the recording, as ``ledger verify`` run now would
        say. Only then, so a reader whose recordings are there reads them once."""
        try:
            found = self._purged(record)
            if found is None and self._last_seq() != self._read_at:
                self._excuses = None
                found = self._purged(record)
        except sqlite3.DatabaseError as exc:
            raise LedgerDamaged(f"{self.path}: cannot be read: {exc}") from None
        return found

    def _purged(self, record: Mapping[str, Any]) -> str | None:
        digest, ts = record.get("recording"), str(record.get("ts", ""))
        if self._excuses is None:
            self._read_at = self._last_seq()  # taken before the read
            self._excuses = self._retention()
            self._latest = self._explained = None
        excuses = self._excuses
        if not isinstance(digest, str) or not (excuses.full or excuses.limited):
            return None
        if self._latest is None or self._explained is None:  # as verify: all, once
            self._latest = self._gone_since(excuses.full)
            self._explained = excuses.explain(self._latest)
        if digest in self._latest:
            return self._explained.get(digest)
        # no result at or after ``full`` carries it (or it came after the look)
        return excuses.full if ts < excuses.full else None

    def _last_seq(self) -> int:
        if self._conn is None:
            self._conn = open_ledger(self.path)
        return int(self._conn.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0])

    def _gone_since(self, since: str) -> dict[str, str]:
        """The recordings gone that results at or after ``since`` carry, each with the
        ``ts`` of its latest result: whether a purge explains one depends on that
        (``_Excuses.explain``), and a recording missing with no result since is
        explained by the purge that finished. One pass, in SQL: a replay of old results
        reads the results since the purge's bound once, not once per recording."""
        assert self._conn is not None
        stored = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'recordings'"
        ).fetchone()
        gone = "AND NOT EXISTS (SELECT 1 FROM recordings WHERE hash = digest)" if stored else ""
        rows = self._conn.execute(
            "SELECT json_extract(body, '$.recording') AS digest, max(ts) FROM records NOT INDEXED "
            "WHERE kind = 'result' AND ts >= ? AND instr(body, ?) > 0 "
            "AND typeof(body) = 'text' AND json_valid(body) "
            f"GROUP BY digest HAVING typeof(digest) = 'text' {gone}",
            (since, '"recording":"'),
        ).fetchall()
        return {str(digest): str(last) for digest, last in rows}

    def _retention(self) -> _Excuses:
        """The purges as ``_Retention`` honours them, the last checkpoint taken as signed
        (its signature is not checked: there is no key; see ``purged``)."""
        if self._conn is None:
            self._conn = open_ledger(self.path)
        head = self._conn.execute(
            "SELECT max(seq) FROM records NOT INDEXED "
            "WHERE json_extract(body, '$.kind') = 'checkpoint'"
        ).fetchone()
        signed_through = head[0] if head and head[0] is not None else 0
        retention = _Retention()
        marks = " OR ".join("body LIKE ?" for _ in _RETENTION_MARKS)
        for seq, body in self._conn.execute(
            f"SELECT seq, body FROM records NOT INDEXED WHERE {marks} ORDER BY seq",
            tuple(f"%{mark}%" for mark in _RETENTION_MARKS),
        ):
            try:
                record = json.loads(body)
            except (ValueError, RecursionError, TypeError):
                continue
            if isinstance(record, dict):
                retention.note(seq, record)
        return retention.excuses(signed_through)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
