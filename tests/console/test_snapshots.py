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


def settled(*keys: str, shows: str | None = None) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """Before the picture: the recording played, notifications gone, ``keys`` pressed;
    ``shows``: the class of the screen they open (a message handler pushes it a few turns
    after the key, and until then the old picture can look settled)."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, ConsoleApp)
        await app.source.played.wait()  # type: ignore[attr-defined]
        await pilot.pause()
        app.clear_notifications()
        app.redraw()  # the tables filled: keys pressed before that (Enter on the
        await pilot.pause()  # sessions) found no row and the picture was of another screen
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
            if shows is not None and type(app.screen).__name__ != shows:
                continue  # not open yet
            same = same + 1 if picture == previous else 0
            if same == 3:
                break
            previous = picture
        app.redraw()
        await pilot.pause()

    return run_before


#: name, keys, terminal size, and the screen the keys open (None: none)
SCREENS: Iterable[tuple[str, tuple[str, ...], tuple[int, int], str | None]] = [
    ("sessions", (), (80, 24), None),
    ("sessions-wide", (), (140, 40), None),
    ("session-detail", ("down", "enter"), (80, 24), "SessionScreen"),
    ("approvals", ("2",), (80, 24), None),
    ("approvals-wide", ("2",), (140, 40), None),
    ("deny-reason", ("2", "d", *"not during business hours"), (80, 24), None),
    ("grant-minutes", ("2", "g", *"30"), (80, 24), None),
    ("ledger", ("3",), (80, 24), None),
    ("alerts", ("4",), (80, 24), None),
]


@pytest.mark.parametrize(
    ("keys", "size", "shows"),
    [(keys, size, shows) for _, keys, size, shows in SCREENS],
    ids=[n for n, _, _, _ in SCREENS],
)
def test_screen(
    snap_compare: SnapCompare, keys: tuple[str, ...], size: tuple[int, int], shows: str | None
) -> None:
    assert snap_compare(console(), run_before=settled(*keys, shows=shows), terminal_size=size)


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
