"""Every screen of the console, drawn from a recorded source at a fixed time, compared
with the stored picture (``pytest --snapshot-update`` after a deliberate change)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from console.story import NOW, source
from textual.pilot import Pilot
from textual.widgets import Input

from tui.app import ConsoleApp, Operator

SnapCompare = Callable[..., bool]


def console(theme: str | None = None) -> ConsoleApp:
    app = ConsoleApp(source(), clock=lambda: NOW, operator=Operator("dba@example.com", "t"))
    if theme is not None:
        app.theme = theme
    return app


def settled(*keys: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """Before the picture: the recording played, notifications gone, ``keys`` pressed."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, ConsoleApp)
        await app.source.played.wait()  # type: ignore[attr-defined]
        await pilot.pause()
        app.clear_notifications()
        await pilot.press(*keys)
        # a pushed screen mounts, focuses and fills its table over several turns: on a
        # loaded machine a fixed number of pauses drew it half done (its cursor row not
        # yet styled). Wait until the picture stays the same for three looks in a row.
        previous, same = None, 0
        for _ in range(100):
            for field in app.screen.query(Input):
                field.cursor_blink = False  # a blinking cursor is not the same picture twice
            await pilot.wait_for_scheduled_animations()
            await pilot.pause(0.1)
            picture = app.export_screenshot()
            same = same + 1 if picture == previous else 0
            if same == 3:
                break
            previous = picture
        app.redraw()
        await pilot.pause()

    return run_before


SCREENS: Iterable[tuple[str, tuple[str, ...], tuple[int, int]]] = [
    ("sessions", (), (80, 24)),
    ("sessions-wide", (), (140, 40)),
    ("session-detail", ("down", "enter"), (80, 24)),
    ("approvals", ("2",), (80, 24)),
    ("approvals-wide", ("2",), (140, 40)),
    ("deny-reason", ("2", "d", *"not during business hours"), (80, 24)),
    ("grant-minutes", ("2", "g", *"30"), (80, 24)),
    ("ledger", ("3",), (80, 24)),
    ("alerts", ("4",), (80, 24)),
]


@pytest.mark.parametrize(
    ("keys", "size"), [(keys, size) for _, keys, size in SCREENS], ids=[n for n, _, _ in SCREENS]
)
def test_screen(snap_compare: SnapCompare, keys: tuple[str, ...], size: tuple[int, int]) -> None:
    assert snap_compare(console(), run_before=settled(*keys), terminal_size=size)


@pytest.mark.parametrize("theme", ["textual-light", "textual-dark"])
def test_approvals_in_both_themes(snap_compare: SnapCompare, theme: str) -> None:
    assert snap_compare(console(theme), run_before=settled("2"), terminal_size=(100, 30))


def test_the_readme_shows_the_approvals_screen_as_it_is_drawn() -> None:
    """docs/console-approvals.svg is the approvals snapshot: after a deliberate change
    of the screen, copy the new snapshot over it."""
    root = Path(__file__).parents[2]
    snapshot = (
        Path(__file__).parent / "__snapshots__/test_snapshots/test_screen[approvals-wide].svg"
    )
    assert (root / "docs/console-approvals.svg").read_bytes() == snapshot.read_bytes()
    assert "docs/console-approvals.svg" in (root / "README.md").read_text()
