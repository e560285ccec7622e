"""What keeps a key's effect quick at scale: one repaint after an intent, the table's cells
reused where their text did not change, the start-up heap out of full collections and the
garbage collected after a frame, a little at a time."""

from __future__ import annotations

import asyncio
import copy
import gc
from typing import Any

import pytest

from tests.test_dashboard import FakeCore, row_keys, select, until
from tests.test_dashboard_more import many_workers
from tui_passenger.snapshot import Snapshot
from tui_passenger.tui import heap
from tui_passenger.tui.app import Dashboard
from tui_passenger.tui.widgets.process_table import NameCell, ProcessTable


class GatedCore(FakeCore):
    """A FakeCore whose status fetch, while ``gate`` is set, takes the data as it is when
    the fetch starts and answers only once the gate opens; each log read says which read
    it was."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.waiting = asyncio.Event()
        self.reads = 0

    async def snapshot(self) -> Snapshot:
        snap = Snapshot.from_json(copy.deepcopy(self.snap))
        gate = self.gate
        if gate is not None:
            self.waiting.set()
            await gate.wait()
        return snap

    async def events(self, since: int) -> tuple[int, list[dict[str, Any]]]:
        self.reads += 1
        return self.reads, [{"seq": self.reads, "time": 1_700_000_000.0, "kind": "event",
                             "level": "info", "app": "hello", "pid": None, "role": None,
                             "stream": None, "text": f"log read {self.reads}"}]


def _logged(app: Dashboard, text: str) -> bool:
    return any(text in strip.text for strip in app.log_panel.lines)


async def test_a_fetch_under_way_when_an_intent_answers_is_not_drawn() -> None:
    core = GatedCore()
    core.snap = many_workers(3)
    app = Dashboard(core, interval=30)  # one periodic tick at the start, then none
    async with app.run_test(size=(120, 40)) as pilot:
        await select(pilot, app, "app:hello")
        shown: list[Snapshot] = []
        show = app._show_snapshot

        def recorded(message: Dashboard.Refreshed) -> None:
            shown.append(message.snapshot)
            show(message)

        app._show_snapshot = recorded  # type: ignore[method-assign]
        # A fetch is under way (the tree as it was) when the scale's answer comes: one an
        # earlier intent asked for (a periodic one would be held back for the key anyway).
        gate = core.gate = asyncio.Event()
        fetch = asyncio.ensure_future(app.tick(urgent=True))
        await until(pilot, core.waiting.is_set, timeout=5, what="a fetch under way")
        stale_read = core.reads
        core.gate = None
        core.snap = many_workers(4)  # the scale's effect, from the next fetch on
        await pilot.press("plus")
        await until(pilot, lambda: ("scale", "hello", 3) in core.calls, timeout=5,
                    what="the scale intent")
        gate.set()
        await until(pilot, lambda: "pid:2003" in row_keys(app), timeout=5,
                    what="the scaled tree")
        await fetch
        await pilot.pause(0.2)
        # Only the tree after the scale was drawn; the stale fetch's log entry was not lost.
        assert shown and all(len(snap.apps[0].processes) == 4 for snap in shown)
        assert _logged(app, f"log read {stale_read}")


def _cells(table: ProcessTable) -> list[list[str]]:
    return [[str(cell.text if isinstance(cell, NameCell) else cell)
             for cell in table.get_row(str(row.key.value))]
            for row in table.ordered_rows]


async def test_refreshed_rows_keep_unchanged_cells_and_match_a_table_drawn_afresh() -> None:
    core = FakeCore()
    core.snap = many_workers(20)
    app = Dashboard(core, interval=30)
    async with app.run_test(size=(120, 40)) as pilot:
        await select(pilot, app, "pid:2005")
        table = app.table
        before = table.get_row("pid:2005")
        # One number of one worker changes; a fold and an unfold bring the rows back.
        changed = many_workers(20)
        changed["apps"][0]["processes"][5]["processed"] += 1
        core.snap = changed
        await app.tick(urgent=True)
        await until(pilot, lambda: app.snapshot is not None
                    and app.snapshot.apps[0].processes[5].processed
                    == changed["apps"][0]["processes"][5]["processed"], timeout=5,
                    what="the refresh")
        await pilot.pause()
        await pilot.press("left")
        await until(pilot, lambda: "pid:2005" not in row_keys(app), timeout=5, what="folded")
        await pilot.press("right")
        await until(pilot, lambda: "pid:2005" in row_keys(app), timeout=5, what="unfolded")
        after = table.get_row("pid:2005")
        columns = [key for key, _ in table.layout_widths]
        kept = [column for column, old, new in zip(columns, before, after, strict=True)
                if old is new]
        assert "processed" not in kept and set(columns) - set(kept) == {"processed"}
        updated = _cells(table)
    fresh = Dashboard(core, interval=30)
    async with fresh.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: "pid:2019" in row_keys(fresh), timeout=5, what="rows")
        assert _cells(fresh.table) == updated


async def test_the_start_up_heap_is_frozen_and_garbage_collected_after_frames(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = Dashboard(FakeCore(), interval=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: gc.get_freeze_count() > 1000, timeout=5,
                    what="the heap frozen")
        # A full collection follows the frame a key drew, once it is due.
        monkeypatch.setattr(heap, "GC_AFTER", 0)
        full = gc.get_stats()[2]["collections"]
        await pilot.press("down")
        await until(pilot, lambda: gc.get_stats()[2]["collections"] > full, timeout=5,
                    what="a full collection after the key")
        monkeypatch.setattr(heap, "GC_AFTER", 10**9)  # never due
        full = gc.get_stats()[2]["collections"]
        await pilot.press("up")
        await pilot.pause(0.2)
        assert gc.get_stats()[2]["collections"] == full
    assert gc.get_freeze_count() == 0  # handed back: the app's objects can be collected
