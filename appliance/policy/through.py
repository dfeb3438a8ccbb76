"""What a write changes besides the tables it names: through views, foreign keys and
triggers.

A rule matches the names a statement is written with. Objects already in the database
change other tables under those names: an updatable view passes INSERT, UPDATE, DELETE
and REPLACE to its base tables, a foreign key with ON DELETE / ON UPDATE CASCADE,
SET NULL or SET DEFAULT deletes or updates rows of its child table when the parent's
rows change (ON UPDATE only when a column the key references is set), and a trigger's
body writes other tables when its table's rows are inserted, updated or deleted (a
REPLACE fires the INSERT and the DELETE triggers). ``WriteThrough`` holds what one
target has of them (read by ``appliance.through_catalog``) and says which (kind, table)
a write also reaches, so that a block or review rule on the table reached sees it.

Pure: no I/O. Names are compared in any case (only refusals use this), and a bare name
(the session's schema is not known) is the table of that name in every schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["WRITE_KINDS", "ForeignKey", "Reached", "Trigger", "ViewBases", "WriteThrough"]

#: The kinds of statement that change rows, and so may change them elsewhere too.
WRITE_KINDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})

#: Referential actions that change the child's rows (RESTRICT and NO ACTION refuse).
_CHANGING = frozenset({"CASCADE", "SET NULL", "SET DEFAULT"})

#: The trigger events a write of each kind fires (a REPLACE deletes the rows it collides
#: with; an upsert's UPDATE is a kind of its own for the caller).
_FIRES = {
    "INSERT": frozenset({"INSERT"}),
    "UPDATE": frozenset({"UPDATE"}),
    "DELETE": frozenset({"DELETE"}),
    "REPLACE": frozenset({"INSERT", "DELETE"}),
}


@dataclass(frozen=True, slots=True)
class ForeignKey:
    """A foreign key of ``child`` referencing ``parent`` ("schema.table" each)."""

    name: str  # "schema.constraint"
    child: str
    parent: str
    on_update: str  # as information_schema says it: CASCADE, SET NULL, RESTRICT, ...
    on_delete: str
    columns: frozenset[str] = frozenset()  # the child's (lower-case); empty: not known
    referenced: frozenset[str] = frozenset()  # the parent's it references; empty: not known


@dataclass(frozen=True, slots=True)
class ViewBases:
    """A view ("schema.name") and the tables and views its definition reads; None when
    the gateway could not read or understand the definition: a write to it may reach
    any table."""

    view: str
    bases: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class Trigger:
    """A trigger ("schema.name") on ``table`` ("schema.table") for ``event`` (INSERT,
    UPDATE or DELETE; several where a server allows it), and the writes its body makes:
    (kind, "schema.table") each; None when the gateway could not read the body: it may
    change any table, in any way."""

    name: str
    table: str
    event: str
    timing: str  # BEFORE or AFTER
    writes: frozenset[tuple[str, str]] | None


@dataclass(frozen=True, slots=True)
class Reached:
    """A change a write also makes: ``kind`` on ``table`` (None: any table, for the
    gateway cannot tell which), and ``how``, in words."""

    kind: str
    table: str | None
    how: str


class WriteThrough:
    """The views, changing foreign keys and triggers of one target, indexed for
    ``reached``.

    ``unread``: why the gateway does not know them (the first read has not worked):
    every write then reaches any table, in any way (a trigger it does not know may
    delete where the write inserts)."""

    __slots__ = ("_facts", "_views", "_children", "_triggers", "_by_name", "_unread")

    def __init__(
        self,
        keys: Iterable[ForeignKey] = (),
        views: Iterable[ViewBases] = (),
        unread: str | None = None,
        triggers: Iterable[Trigger] = (),
    ) -> None:
        changing = frozenset(
            k for k in keys if k.on_update.upper() in _CHANGING or k.on_delete.upper() in _CHANGING
        )
        known = frozenset(views)
        fired = frozenset(t for t in triggers if t.writes is None or t.writes)
        self._facts = (changing, known, fired, unread)
        self._unread = unread
        self._views = {v.view.lower(): v for v in known}
        self._children: dict[str, list[ForeignKey]] = {}
        for key in sorted(changing, key=lambda k: (k.parent, k.name)):
            self._children.setdefault(key.parent.lower(), []).append(key)
        self._triggers: dict[str, list[Trigger]] = {}
        for trigger in sorted(fired, key=lambda t: (t.table, t.name)):
            self._triggers.setdefault(trigger.table.lower(), []).append(trigger)
        # bare name -> the qualified names of views, parents and triggers' tables
        self._by_name: dict[str, set[str]] = {}
        for name in (*self._views, *self._children, *self._triggers):
            self._by_name.setdefault(name.rsplit(".", 1)[-1], set()).add(name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WriteThrough) and self._facts == other._facts

    def __hash__(self) -> int:
        return hash(self._facts)

    def __bool__(self) -> bool:
        """Whether any write may reach another table at all."""
        return bool(self._views or self._children or self._triggers or self._unread)

    def reached(
        self, kind: str, table: str, columns: frozenset[str] | None = None
    ) -> tuple[Reached, ...]:
        """What a ``kind`` write to ``table`` ("schema.table", or bare) also changes,
        through views of views, chains of foreign keys and the triggers of each table
        changed (cycles end), first reached first. Empty for a kind that changes no
        rows. ``columns``: those an UPDATE sets (lower-case; None: not known), for a
        foreign key's ON UPDATE acts only when a column it references changes.

        A change of any table (an unreadable view or trigger body) is one of every table
        the gateway knows a key or a trigger of too, and goes on from each."""
        if kind not in WRITE_KINDS:
            return ()
        if self._unread is not None:
            return tuple(Reached(k, None, self._unread) for k in _ANY_KIND)
        found: dict[tuple[str, str | None], Reached] = {}
        start = (kind, table.lower(), columns if kind == "UPDATE" else None)
        todo: list[tuple[str, str, frozenset[str] | None, str]] = [(*start, "")]
        seen = {start}
        while todo:
            doing, name, setting, how = todo.pop(0)
            for qualified in self._named(name):
                for step_kind, step_table, sets, step in self._steps(doing, qualified, setting):
                    said = f"{how}, then {step}" if how else step
                    nexts: list[tuple[str, str, frozenset[str] | None]]
                    if step_table is None:
                        found.setdefault((step_kind, None), Reached(step_kind, None, said))
                        nexts = [(step_kind, t, None) for t in self._changing()]
                    else:
                        lowered = step_table.lower()
                        found.setdefault((step_kind, lowered), Reached(step_kind, step_table, said))
                        nexts = [(step_kind, lowered, sets)]
                    for step_of in nexts:
                        if step_of not in seen:
                            seen.add(step_of)
                            todo.append((*step_of, said))
        return tuple(found.values())

    def _changing(self) -> list[str]:
        """The tables whose change changes others (parents of keys, triggers' tables)."""
        return sorted({*self._children, *self._triggers})

    def _named(self, name: str) -> Iterable[str]:
        """The qualified views, parents and triggers' tables a name (lower-case) may be."""
        if "." in name:
            return (name,)
        return sorted(self._by_name.get(name, ()))

    def _steps(
        self, kind: str, name: str, setting: frozenset[str] | None
    ) -> Iterable[tuple[str, str | None, frozenset[str] | None, str]]:
        """One step from a ``kind`` write to ``name`` (lower-case, qualified) that sets
        ``setting`` (an UPDATE's columns; None: not known): the kind, table and columns
        of the change it makes, and how, in words."""
        view = self._views.get(name)
        if view is not None:
            if view.bases is None:
                yield (
                    kind,
                    None,
                    None,
                    f"view {view.view}, whose definition the gateway cannot read",
                )
            else:
                for base in sorted(view.bases):  # (a view may name its columns otherwise)
                    yield kind, base, None, f"view {view.view}"
        yield from self._keys(kind, name, setting)
        yield from self._fired(kind, name)

    def _keys(
        self, kind: str, name: str, setting: frozenset[str] | None
    ) -> Iterable[tuple[str, str | None, frozenset[str] | None, str]]:
        """The changes the foreign keys of parent ``name`` make on a ``kind`` write."""
        action_of = {"DELETE": "on_delete", "REPLACE": "on_delete", "UPDATE": "on_update"}
        field = action_of.get(kind)
        if field is None:
            return  # an INSERT changes no rows of children
        clause = "ON DELETE" if field == "on_delete" else "ON UPDATE"
        for key in self._children.get(name, ()):
            action = getattr(key, field).upper()
            if action not in _CHANGING:
                continue
            if field == "on_update" and setting is not None and key.referenced:
                if not setting & key.referenced:
                    continue  # the update leaves the referenced columns as they are
            if action == "CASCADE" and field == "on_delete":
                yield "DELETE", key.child, None, f"foreign key {key.name} {clause} {action}"
            else:  # the child's columns of the key change
                sets = key.columns or None
                yield "UPDATE", key.child, sets, f"foreign key {key.name} {clause} {action}"

    def _fired(
        self, kind: str, name: str
    ) -> Iterable[tuple[str, str | None, frozenset[str] | None, str]]:
        """The writes of the triggers a ``kind`` write to table ``name`` fires. (The
        server may not fire them for a foreign key's changes; counted all the same.)"""
        events = _FIRES.get(kind, frozenset())
        for trigger in self._triggers.get(name, ()):
            if not events & _events(trigger.event):
                continue
            how = f"trigger {trigger.name} {trigger.timing.upper()} {trigger.event.upper()}"
            if trigger.writes is None:
                for any_kind in _ANY_KIND:
                    yield any_kind, None, None, f"{how}, whose body the gateway cannot read"
                continue
            for step_kind, table in sorted(trigger.writes):
                yield step_kind, table, None, how


def _events(event: str) -> frozenset[str]:
    """The events a trigger fires on (a later server may name several, "INSERT,UPDATE");
    every one for an event the gateway does not know."""
    named = frozenset(re.split(r"[\s,]+(?:OR\s+)?", event.strip().upper()))
    return named if named <= _EVENTS else _EVENTS


_EVENTS = frozenset({"INSERT", "UPDATE", "DELETE"})

#: What a change the gateway cannot read may be, in the order it says them.
_ANY_KIND = ("DELETE", "UPDATE", "INSERT", "REPLACE")
