"""The views, foreign keys and triggers of each target, for the rules that refuse writes
(SPEC §6).

A block or review rule on ``shop.orders`` matches the names a statement is written with;
a view over shop.orders, a foreign key of it with ON DELETE CASCADE, or a trigger whose
body writes it changes its rows under another name. The gateway therefore reads, per
target, on a side connection with the target's credential,
``information_schema.REFERENTIAL_CONSTRAINTS`` (with the columns of each key,
``KEY_COLUMN_USAGE``), ``information_schema.VIEWS`` and ``information_schema.TRIGGERS``
(each body read by ``policy.trigger_body``), and gives the policy a ``WriteThrough``
(what a write to a table or view also changes), which ``decide`` checks against those
rules.

Only when some block or review rule names tables (the others match a write by its kind
alone). Read at start, every ``refresh_s`` and soon after a statement that creates,
alters, renames or drops a view, a table or a trigger went through the gateway.

Fail closed: until a target's first read has worked, every write to it may reach any
table (the gateway logs why and tries again every 2 s); a view whose definition cannot
be read (no SHOW VIEW privilege) or understood, and a trigger whose body the gateway
cannot read, reach any table. After a failed read the last one read stays.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

from appliance.config import Config, RuleAction, TargetConfig
from appliance.policy.classify import classify
from appliance.policy.gate import Policy
from appliance.policy.lexer import LexMode
from appliance.policy.through import ForeignKey, Trigger, ViewBases, WriteThrough
from appliance.policy.trigger_body import body_writes
from appliance.side_connection import ReadFailures, connect, keep_reading
from appliance.tasks import cancel_and_wait

__all__ = ["ThroughCatalog", "read_through", "trigger_of", "view_bases"]

log = logging.getLogger("sqlgate.through")

_UNREAD = "the gateway has not read the target's views, foreign keys and triggers yet"


def view_bases(schema: str, name: str, definition: str) -> ViewBases:
    """The tables and views a view's definition reads (MariaDB stores it qualified);
    None for them when it is empty (no SHOW VIEW privilege) or not one plain SELECT."""
    found = classify(definition.encode(), LexMode()) if definition.strip() else ()
    if len(found) != 1 or found[0].kind != "SELECT" or found[0].problem is not None:
        return ViewBases(f"{schema}.{name}", None)
    reads = found[0].reads
    return ViewBases(
        f"{schema}.{name}",
        frozenset(t if "." in t else f"{schema}.{t}" for t in reads),
    )


def trigger_of(
    schema: str,
    name: str,
    event: str,
    table: str,
    timing: str,
    body: str,
    sql_mode: str,
) -> Trigger:
    """A trigger of ``schema`` as ``information_schema.TRIGGERS`` gives it, on ``table``
    ("schema.table"), with what its body writes (bare names in the trigger's schema)."""
    return Trigger(
        f"{schema}.{name}",
        table,
        event.upper(),
        timing.upper(),
        body_writes(schema, body.encode("utf-8", "surrogatepass"), sql_mode),
    )


_SET_BY_THE_SERVER = re.compile(r"on update|generated", re.IGNORECASE)
"""``COLUMNS.EXTRA`` of a column the server changes on an update that does not set it."""


def read_through(target: TargetConfig, timeout_s: float, mark: int) -> WriteThrough:
    """The target's foreign keys, views and triggers, as the side connection may see
    them (a trigger only on a table it has the TRIGGER privilege on)."""
    conn = connect(target, None, timeout_s, mark)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT CONSTRAINT_SCHEMA, CONSTRAINT_NAME, TABLE_NAME, "
                "UNIQUE_CONSTRAINT_SCHEMA, REFERENCED_TABLE_NAME, UPDATE_RULE, DELETE_RULE "
                "FROM information_schema.REFERENTIAL_CONSTRAINTS"
            )
            rows = cur.fetchall()
            # the columns of each key, and how the parent's change: one the server sets
            # itself (ON UPDATE CURRENT_TIMESTAMP, a generated column) changes on any update
            cur.execute(
                "SELECT k.CONSTRAINT_SCHEMA, k.CONSTRAINT_NAME, k.COLUMN_NAME, "
                "k.REFERENCED_COLUMN_NAME, c.EXTRA FROM information_schema.KEY_COLUMN_USAGE k "
                "LEFT JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = "
                "k.REFERENCED_TABLE_SCHEMA AND c.TABLE_NAME = k.REFERENCED_TABLE_NAME AND "
                "c.COLUMN_NAME = k.REFERENCED_COLUMN_NAME WHERE k.REFERENCED_TABLE_NAME IS NOT NULL"
            )
            columns: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
            moving: set[tuple[str, str]] = set()  # keys with a column the server sets itself
            for s, n, column, referenced, extra in cur.fetchall():
                child, parent = columns.setdefault((s, n), (set(), set()))
                child.add(str(column).lower())
                parent.add(str(referenced).lower())
                if _SET_BY_THE_SERVER.search(str(extra or "")):
                    moving.add((s, n))
            keys = [
                ForeignKey(
                    f"{s}.{n}",
                    f"{s}.{child}",
                    f"{ps}.{parent}",
                    str(up),
                    str(down),
                    frozenset(columns[(s, n)][0]) if (s, n) in columns else frozenset(),
                    # (empty: any update of the parent may change the key)
                    frozenset(columns[(s, n)][1])
                    if (s, n) in columns and (s, n) not in moving
                    else frozenset(),
                )
                for s, n, child, ps, parent, up, down in rows
            ]
            cur.execute(
                "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS"
            )
            views = [view_bases(s, n, d or "") for s, n, d in cur.fetchall()]
            cur.execute(
                "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_MANIPULATION, EVENT_OBJECT_SCHEMA, "
                "EVENT_OBJECT_TABLE, ACTION_TIMING, ACTION_STATEMENT, SQL_MODE "
                "FROM information_schema.TRIGGERS"
            )
            triggers = [
                trigger_of(s, n, str(e), f"{ts}.{t}", str(at), b or "", str(m or ""))
                for s, n, e, ts, t, at, b, m in cur.fetchall()
            ]
        conn.rollback()
    finally:
        conn.close()
    return WriteThrough(keys, views, triggers=triggers)


def needed(config: Config) -> bool:
    """Whether a block or review rule names tables: only those need what writes reach."""
    return any(r.action is not RuleAction.ALLOW and r.tables is not None for r in config.rules)


class ThroughCatalog:
    """Keeps ``Policy.through`` current, per target."""

    def __init__(
        self,
        config: Config,
        policy: Policy,
        refresh_s: float = 60.0,
        timeout_s: float = 5.0,
        read: Callable[[TargetConfig, float, int], WriteThrough] = read_through,
    ) -> None:
        self.config = config
        self.policy = policy
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self._read = read
        self.ready: set[str] = set()  # targets read at least once
        self._failures = ReadFailures("its views, foreign keys and triggers", log)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def needed(self) -> bool:
        return needed(self.config)

    async def start(self) -> None:
        """Read every target once (each at most ``timeout_s``), then keep them current
        in the background. A target not read yet has every write reach any table."""
        if not self.needed:
            return
        for target in self.config.targets:
            self.policy.set_through(target.name, WriteThrough(unread=_UNREAD))
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="through catalog")

    def invalidate(self) -> None:
        """A view, a table or a trigger was created, altered, renamed or dropped: read
        again soon."""
        self._wake.set()

    async def refresh(self) -> None:
        for target in self.config.targets:
            await self._refresh(target)

    async def _refresh(self, target: TargetConfig) -> None:
        try:
            async with asyncio.timeout(self.timeout_s + 1):  # (see keep_reading)
                through = await asyncio.to_thread(
                    self._read, target, self.timeout_s, self.config.network.mark
                )
        except Exception as exc:  # the last one read stays (before any: unread)
            self._failures.failed(target.name, exc)
            return
        if self._failures.succeeded(target.name):
            log.info("target %s: its views, foreign keys and triggers are read again", target.name)
        self.policy.set_through(target.name, through)
        self.ready.add(target.name)

    async def _run(self) -> None:
        await keep_reading(
            self.refresh,
            self._wake,
            self.refresh_s,
            hurry=lambda: any(t.name not in self.ready for t in self.config.targets),
        )

    async def close(self) -> None:
        if not await cancel_and_wait([self._task]):
            log.warning("the reads of what writes reach did not stop in time: left running")
