"""The views of each target that show masked columns (SPEC §7).

A view hides the origin of its columns: MariaDB reports a merged view's columns with the
view as their table, so a rule on ``shop.customers.card_number`` would not see
``SELECT c FROM shop.v_cards``. The gateway therefore reads every view definition of a
target that has masking rules (``information_schema.VIEWS``, on a side connection with
the target's credential), works out which view columns come from masked ones (through
other views too), and adds a rule for each, with its source's strategy and exemptions.

Fail closed: a view whose definition the gateway cannot read or understand (no SHOW VIEW
privilege, syntax the classifier does not know) has every column masked when its text
names a table with masked columns.

The columns of the target's tables and views named like a masked column, of a view or
of a configuration rule, are read too (``information_schema.COLUMNS``): a view read
under an alias is reported like a column of a table named like the alias (``SELECT c
FROM shop.v_plain v`` comes as ``shop.v.c``), or of its base table under the view's
column name (``shop.cust.c`` in a join), and a view made straight on the database since
the last read shows its base column under its own name, so a column that is not one the
catalog read takes the strictest rule of its name (``SessionMasker.plan``). A table the
side connection may not see, a temporary table or one made since the last refresh is not
known: its columns named like masked ones are masked.

Refreshed at start, every ``refresh_s`` and soon after a statement that creates, alters,
renames or drops a view or a table went through the gateway. Until the first load of a
target has worked, ``ready`` lacks it (the gateway logs why and tries again every 2 s).

A statement through the gateway that may change a view (``changing``, as it is forwarded;
``changed`` once it is answered) puts its target in ``stale`` until a read that began
after its answer has worked: a masked session's statement waits for that (``current``,
at most ``hold_s``) before it goes to the target, so that a view is masked from the
moment it exists. The target stays stale while the statement runs, however long, and
while reads fail. A session without a masker never looks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.config import Config, MaskStrategy, TargetConfig
from appliance.policy.classify import view_sources
from appliance.policy.masking import ColumnRule, MaskingPolicy
from appliance.side_connection import ReadFailures, connect, keep_reading
from appliance.tasks import cancel_and_wait

__all__ = ["View", "ViewCatalog", "ViewChange", "derive_rules"]

log = logging.getLogger("sqlgate.catalog")


Reader = Callable[
    [TargetConfig, float, int, Sequence[ColumnRule]],
    tuple[list[ColumnRule], frozenset[tuple[str, str, str]]],
]


@dataclass(frozen=True, slots=True)
class View:
    schema: str
    name: str
    definition: str  # "" when the gateway may not read it
    columns: tuple[str, ...]


@dataclass(eq=False, slots=True)
class ViewChange:
    """A statement that may change a view of ``target``, forwarded and not yet answered."""

    target: str


def derive_rules(views: Sequence[View], base: Sequence[ColumnRule]) -> list[ColumnRule]:
    """Rules for the view columns that show a masked column, through views of views.

    Each such column gets one rule, keyed by the view's name and column in any schema
    (MariaDB reports a view's columns with the schema of its base table), holding for
    each base column it is computed from every configuration rule that matches that
    column, in file order: a session gets, per source, the first rule that does not
    exempt it, and of those the strictest (``ColumnRule.for_groups``)."""
    by_name = {(v.schema.lower(), v.name.lower()): v for v in views}
    sources = {
        (v.schema.lower(), v.name.lower()): view_sources(v.definition, v.schema) for v in views
    }
    unread = (ColumnRule.of("*", "*", "*", MaskStrategy.REDACT),)  # fail closed
    memo: dict[tuple[str, str, str], tuple[tuple[ColumnRule, ...], ...]] = {}
    busy: set[tuple[str, str]] = set()  # views being worked out (a cycle: none)

    def base_chain(schema: str, table: str, column: str) -> tuple[ColumnRule, ...]:
        chain: list[ColumnRule] = []
        for rule in base:
            if rule.matches(schema, table, column):
                chain.append(rule)
                if not rule.exempt_groups:
                    break  # the rules after it never apply
        return tuple(chain)

    def chains_of(schema: str, table: str, column: str) -> tuple[tuple[ColumnRule, ...], ...]:
        """The rule chains of a column of a table or view."""
        key = (schema.lower(), table.lower(), column.lower())
        if key in memo:
            return memo[key]
        view = by_name.get(key[:2])
        if view is None:
            chain = base_chain(schema, table, column)
            return (chain,) if chain else ()
        if key[:2] in busy:
            return ()
        busy.add(key[:2])
        try:
            found = sources[key[:2]]
            chains: dict[tuple[ColumnRule, ...], None] = {}
            if found is None:
                if may_show_masked(view):
                    chains[unread] = None
            else:
                for source in sorted(found.get(key[2], ())):
                    for chain in chains_of(*source):
                        chains[chain] = None
        finally:
            busy.discard(key[:2])
        memo[key] = result = tuple(chains)
        return result

    def shows_masked(view: View) -> bool:
        return any(chains_of(view.schema, view.name, column) for column in view.columns)

    def may_show_masked(view: View) -> bool:
        """An unreadable or not understood definition: could it show a masked column?"""
        if not view.definition:
            return True  # no SHOW VIEW privilege: nothing can be ruled out
        lowered = view.definition.lower()
        for rule in base:
            table = rule.label.split(".")[1].lower()
            if "*" in table or table in lowered:
                return True
        return any(
            other is not view and other.name.lower() in lowered and shows_masked(other)
            for other in views
        )

    derived: list[ColumnRule] = []
    for view in views:
        for column in view.columns:
            chains = chains_of(view.schema, view.name, column)
            if not chains:
                continue
            everyone = ColumnRule.of("*", "*", "*", MaskStrategy.REDACT, chains=chains)
            anyone = everyone.for_groups(frozenset())
            derived.append(
                ColumnRule.of(
                    "*",
                    view.name,
                    column,
                    MaskStrategy.REDACT if anyone is None else anyone.strategy,
                    chains=chains,
                    label=f"{view.schema}.{view.name}.{column}",
                )
            )
    return derived


def _load(
    target: TargetConfig, timeout_s: float, mark: int, base: Sequence[ColumnRule]
) -> tuple[list[ColumnRule], frozenset[tuple[str, str, str]]]:
    """The rules derived from the target's views, and the (schema, table, column) of
    every column of its tables and views named like a masked column, of a view or of a
    configuration rule (as the server spells them)."""
    conn = connect(target, None, timeout_s, mark)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS"
            )
            rows = cur.fetchall()
            cur.execute(
                "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME "
                "FROM information_schema.COLUMNS c JOIN information_schema.VIEWS v "
                "ON v.TABLE_SCHEMA = c.TABLE_SCHEMA AND v.TABLE_NAME = c.TABLE_NAME "
                "ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION"
            )
            columns: dict[tuple[str, str], list[str]] = {}
            for schema, name, column in cur.fetchall():
                columns.setdefault((schema, name), []).append(column)
            views = [
                View(schema, name, definition or "", tuple(columns.get((schema, name), ())))
                for schema, name, definition in rows
            ]
            rules = derive_rules(views, base)
            labels = {rule.label for rule in rules}
            patterns = _column_patterns(base)
            names = sorted(
                {c for v in views for c in v.columns if f"{v.schema}.{v.name}.{c}" in labels}
                | {p for p in patterns if "*" not in p}
            )
            likes = sorted(p for p in patterns if "*" in p and p != "*")
            known: frozenset[tuple[str, str, str]] = frozenset()
            if names or likes:
                where = [f"COLUMN_NAME IN ({', '.join(['%s'] * len(names))})"] if names else []
                where += ["COLUMN_NAME LIKE %s ESCAPE '!'"] * len(likes)
                cur.execute(
                    "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
                    f"WHERE {' OR '.join(where)}",
                    [*names, *(_like(p) for p in likes)],
                )
                known = frozenset((str(s), str(t), str(c)) for s, t, c in cur.fetchall())
        conn.rollback()
    finally:
        conn.close()
    return rules, known


def _column_patterns(base: Sequence[ColumnRule]) -> set[str]:
    """The column part of each configuration rule (``card``, ``*_ssn``, ``*``)."""
    return {rule.label.rsplit(".", 1)[-1] for rule in base}


def _like(pattern: str) -> str:
    """A rule's column pattern (``*`` for anything) as a LIKE pattern escaped with ``!``."""
    escaped = pattern.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return escaped.replace("*", "%")


class ViewCatalog:
    """Keeps the policy's rules for masked view columns current, per target."""

    def __init__(
        self,
        config: Config,
        policy: MaskingPolicy,
        refresh_s: float = 60.0,
        timeout_s: float = 5.0,
        read: Reader | None = None,
    ) -> None:
        self.config = config
        self.policy = policy
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self._read = _load if read is None else read  # (_load: as the module has it now)
        self.ready: set[str] = set()  # targets whose views were read at least once
        # targets where a view may have changed since their views were last read: a
        # masked session's statement waits (``current``) before it goes there
        self.stale: set[str] = set()
        self._rules: dict[str, list[ColumnRule]] = {}
        self._failures = ReadFailures("its views for masking", log)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # per target: the view statements forwarded and not answered yet, and how many
        # were answered so far
        self._running: dict[str, set[ViewChange]] = {}
        self._answered: dict[str, int] = {}
        self._current: dict[str, asyncio.Event] = {}

    @property
    def needed(self) -> bool:
        return bool(self.policy.column_rules)

    @property
    def hold_s(self) -> float:
        """How long a masked session's statement waits for a stale target's views: a
        read's own bound (``timeout_s``, the side connection's) and 1 s more."""
        return self.timeout_s + 1.0

    async def start(self) -> None:
        """Read every target's views once (waiting at most ``timeout_s`` for each),
        then keep them current in the background."""
        if not self.needed:
            return
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="view catalog")

    def invalidate(self) -> None:
        """A view or a table was created, altered, renamed or dropped: read the views
        and the names of tables again soon."""
        self._wake.set()

    def changing(self, target: str) -> ViewChange | None:
        """A statement that may create, alter, rename or drop a view goes to ``target``
        now: its views are stale until a read that begins after ``changed`` (with what
        this returns) has worked. None when views are not read (no column rule)."""
        if not self.needed:
            return None
        change = ViewChange(target)
        self._running.setdefault(target, set()).add(change)
        self.stale.add(target)
        event = self._current.get(target)
        if event is not None:
            event.clear()
        return change

    def changed(self, change: ViewChange) -> None:
        """The statement of ``change`` has been answered (or its session ended): the
        views are read again at once. Once per change; again, nothing."""
        target = change.target
        running = self._running.get(target)
        if running is None or change not in running:
            return
        running.discard(change)
        self._answered[target] = self._answered.get(target, 0) + 1
        self._wake.set()

    async def current(self, target: str, timeout_s: float) -> bool:
        """Wait until the views of ``target`` are not stale; False after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while target in self.stale:
            left = deadline - loop.time()
            if left <= 0:
                return False
            event = self._current.setdefault(target, asyncio.Event())
            try:
                async with asyncio.timeout(left):  # (see side_connection.keep_reading)
                    await event.wait()
            except TimeoutError:
                return False
        return True

    async def refresh(self) -> None:
        # the stale targets first: statements wait for them
        for target in sorted(self.config.targets, key=lambda t: t.name not in self.stale):
            await self._refresh(target)

    async def _refresh(self, target: TargetConfig) -> None:
        name = target.name
        answered = self._answered.get(name, 0)
        try:
            async with asyncio.timeout(self.timeout_s + 1):  # (see keep_reading)
                rules, known = await asyncio.to_thread(
                    self._read,
                    target,
                    self.timeout_s,
                    self.config.network.mark,
                    self.policy.column_rules,
                )
        except Exception as exc:  # the previous rules stay; a first failure keeps it unready
            self._failures.failed(name, exc)
            return
        if self._failures.succeeded(name):
            log.info("target %s: its views are read again", name)
        self._rules[name] = rules
        self.policy.set_known(name, known)
        self.ready.add(name)
        self.policy.set_derived(rule for kept in self._rules.values() for rule in kept)
        if (
            name in self.stale
            and not self._running.get(name)
            and answered == self._answered.get(name, 0)
        ):  # no view statement runs, and none was answered while this read went on
            self.stale.discard(name)
            event = self._current.get(name)
            if event is not None:
                event.set()

    async def _run(self) -> None:
        # a target whose views are not known yet, or that statements wait for, is tried
        # again soon: until then its views' masked columns have no rule
        await keep_reading(
            self.refresh,
            self._wake,
            self.refresh_s,
            hurry=lambda: (
                bool(self.stale) or any(t.name not in self.ready for t in self.config.targets)
            ),
            settle=lambda: not self.stale,
        )

    async def close(self) -> None:
        if not await cancel_and_wait([self._task]):
            log.warning("the reads of the views did not stop in time: left running")
