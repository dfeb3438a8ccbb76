"""What a write changes besides the tables it names: through views and foreign keys.

A rule matches the names a statement is written with. Objects already in the database
change other tables under those names: an updatable view passes INSERT, UPDATE, DELETE
and REPLACE to its base tables, and a foreign key with ON DELETE / ON UPDATE CASCADE,
SET NULL or SET DEFAULT deletes or updates rows of its child table when the parent's
rows change (ON UPDATE only when a column the key references is set). ``WriteThrough`` holds
what one target has of both (read by ``appliance.through_catalog``) and says which
(kind, table) a write also reaches, so that a block or review rule on the table reached
sees it.

Pure: no I/O. Names are compared in any case (only refusals use this), and a bare name
(the session's schema is not known) is the table of that name in every schema.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["WRITE_KINDS", "ForeignKey", "Reached", "ViewBases", "WriteThrough"]

#: The kinds of statement that change rows, and so may change them elsewhere too.
WRITE_KINDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})

#: Referential actions that change the child's rows (RESTRICT and NO ACTION refuse).
_CHANGING = frozenset({"CASCADE", "SET NULL", "SET DEFAULT"})


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
class Reached:
    """A change a write also makes: ``kind`` on ``table`` (None: any table, for the
    gateway cannot tell which), and ``how``, in words."""

    kind: str
    table: str | None
    how: str


class WriteThrough:
    """The views and changing foreign keys of one target, indexed for ``reached``.

    ``unread``: why the gateway does not know them (the first read has not worked):
    every write then reaches any table."""

    __slots__ = ("_facts", "_views", "_children", "_by_name", "_unread")

    def __init__(
        self,
        keys: Iterable[ForeignKey] = (),
        views: Iterable[ViewBases] = (),
        unread: str | None = None,
    ) -> None:
        changing = frozenset(
            k for k in keys if k.on_update.upper() in _CHANGING or k.on_delete.upper() in _CHANGING
        )
        known = frozenset(views)
        self._facts = (changing, known, unread)
        self._unread = unread
        self._views = {v.view.lower(): v for v in known}
        self._children: dict[str, list[ForeignKey]] = {}
        for key in sorted(changing, key=lambda k: (k.parent, k.name)):
            self._children.setdefault(key.parent.lower(), []).append(key)
        # bare name -> the qualified names of views and parents that have it
        self._by_name: dict[str, set[str]] = {}
        for name in (*self._views, *self._children):
            self._by_name.setdefault(name.rsplit(".", 1)[-1], set()).add(name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WriteThrough) and self._facts == other._facts

    def __hash__(self) -> int:
        return hash(self._facts)

    def __bool__(self) -> bool:
        """Whether any write may reach another table at all."""
        return bool(self._views or self._children or self._unread)

    def reached(
        self, kind: str, table: str, columns: frozenset[str] | None = None
    ) -> tuple[Reached, ...]:
        """What a ``kind`` write to ``table`` ("schema.table", or bare) also changes,
        through views of views and chains of foreign keys (cycles end), first reached
        first. Empty for a kind that changes no rows. ``columns``: those an UPDATE sets
        (lower-case; None: not known), for a foreign key's ON UPDATE acts only when a
        column it references changes."""
        if kind not in WRITE_KINDS:
            return ()
        if self._unread is not None:
            return (Reached(kind, None, self._unread),)
        found: dict[tuple[str, str | None], Reached] = {}
        start = (kind, table.lower(), columns if kind == "UPDATE" else None)
        todo: list[tuple[str, str, frozenset[str] | None, str]] = [(*start, "")]
        seen = {start}
        while todo:
            doing, name, setting, how = todo.pop(0)
            for qualified in self._named(name):
                for step_kind, step_table, sets, step in self._steps(doing, qualified, setting):
                    said = f"{how}, then {step}" if how else step
                    if step_table is None:
                        found.setdefault((step_kind, None), Reached(step_kind, None, said))
                        continue
                    lowered = step_table.lower()
                    if (step_kind, lowered, sets) in seen:
                        continue
                    seen.add((step_kind, lowered, sets))
                    found.setdefault((step_kind, lowered), Reached(step_kind, step_table, said))
                    todo.append((step_kind, lowered, sets, said))
        return tuple(found.values())

    def _named(self, name: str) -> Iterable[str]:
        """The qualified views and parents a name (lower-case) may be."""
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
