"""The dashboard's view of what workers are doing (requests in flight, stacks) and of memory
over time, driven by Textual's pilot over the fixed FakeCore of test_dashboard."""

from __future__ import annotations

from typing import Any

import pytest
from textual.widgets import Sparkline, Static

from tests.conftest import REPO
from tests.test_dashboard import (
    FAKE_STACK,
    W1_HISTORY,
    FakeCore,
    _loaded,
    row_keys,
    select,
    until,
    utc,  # noqa: F401  (fixture)
)
from tui_passenger.snapshot import Snapshot
from tui_passenger.tui.app import Dashboard
from tui_passenger.tui.rows import build_rows, long_request
from tui_passenger.tui.screens.stack import StackScreen
from tui_passenger.tui.widgets.detail import FdView
from tui_passenger.tui.widgets.process_table import NameCell, ProcessTable
from tui_passenger.tui.widgets.trends import MemoryTrend


def _cell(app: Dashboard, key: str, column: str) -> str:
    cell = app.query_one(ProcessTable).get_cell(key, column)
    return str(cell.text if isinstance(cell, NameCell) else cell)


def test_rows_show_the_oldest_request_and_flag_long_ones() -> None:
    core = FakeCore()
    rows = {row.key: row for row in build_rows(Snapshot.from_json(core.snap))}
    busy, idle = rows["pid:1101"], rows["pid:1102"]
    assert busy.values[0] == "busy 7s" and busy.values[-1] == "7s GET /reports/yearly?year=2024"
    assert busy.slow and not idle.slow and idle.values[-1] == ""
    assert rows["pid:1100"].wide_label == "1100 preloader"
    # Long: 5 s, or half of max_request_time when that is shorter.
    assert long_request(5.0, 0) and not long_request(4.9, 0)
    assert long_request(2.0, 4.0) and not long_request(1.9, 4.0)


@pytest.mark.parametrize(("width", "request_column", "label"),
                         [(120, False, "1100 preloader"), (160, True, "1100 preloader"),
                          (80, False, "1100 pre")])
async def test_the_table_gives_spare_width_to_names_then_requests(width: int,
                                                                  request_column: bool,
                                                                  label: str) -> None:
    app = Dashboard(FakeCore(), interval=0.3)
    async with app.run_test(size=(width, 40 if width > 80 else 24)) as pilot:
        await until(pilot, lambda: len(row_keys(app)) == 6, timeout=5, what="rows")
        table = app.query_one(ProcessTable)
        columns = dict(table.layout_widths)
        assert ("request" in columns) is request_column, columns
        assert _cell(app, "pid:1100", "name").endswith(label)
        assert _cell(app, "pid:1101", "state") == "busy 7s"
        if request_column:
            assert _cell(app, "pid:1101", "request") == "7s GET /reports/yearly?year=2024"
        if width > 80:  # no horizontal scrolling for what was added
            assert table.virtual_size.width <= table.scrollable_content_region.width


async def test_selected_worker_shows_its_requests_and_memory_trend() -> None:
    core = FakeCore()
    app = Dashboard(core, interval=0.3)
    async with app.run_test(size=(120, 40)) as pilot:
        await select(pilot, app, "pid:1101")
        requests = app.query_one("#detail-requests", Static)
        await until(pilot, lambda: "GET /reports/yearly" in str(requests.render()),
                    timeout=5, what="the request")
        assert str(requests.render()).startswith("▶ 7.2s GET")
        trend = app.query_one(MemoryTrend)
        first, second = trend.query(Sparkline)
        assert trend.display and list(first.data or []) == W1_HISTORY[0]
        assert list(second.data or []) == W1_HISTORY[1]
        await select(pilot, app, "pid:1102")  # idle, no history: neither shows
        await until(pilot, lambda: not requests.display and not trend.display, timeout=5,
                    what="nothing for an idle worker without history")
        core.snap["apps"][0]["refork_hint"] = "hello: its workers share 40% of their memory"
        await select(pilot, app, "app:hello")
        memory_app = app.query_one("#memory-app", Static)
        await until(pilot, lambda: "share 40%" in str(memory_app.render()), timeout=5,
                    what="the refork hint")
        logged = [str(line.text) for line in app.log_panel.lines if "hint:" in line.text]
        assert logged == ["hint: hello: its workers share 40% of their memory (g: refork)"]
        await until(pilot, lambda: trend.display and list(first.data or []) == [
            40.0, 42.0, 44.0, 45.0, 46.0, 47.0], timeout=5, what="the app's PSS trend")


async def test_w_shows_the_stacks_and_esc_clears_an_applied_filter() -> None:
    core = FakeCore()
    app = Dashboard(core, interval=0.3)
    async with app.run_test(size=(80, 24)) as pilot:
        await select(pilot, app, "pid:1101")
        await pilot.press("w")
        await until(pilot, lambda: isinstance(app.screen, StackScreen), timeout=5,
                    what="the stack screen")
        assert ("stack", 1101) in core.calls
        screen = app.screen
        assert isinstance(screen, StackScreen) and screen.stacks == FAKE_STACK
        assert screen.title_text.startswith("worker 1101 of hello: every thread")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, StackScreen), timeout=5,
                    what="the stack screen closed")
        await select(pilot, app, "app:hello")
        await pilot.press("w")  # an app row: nothing to read
        await pilot.pause(0.1)
        assert not isinstance(app.screen, StackScreen)
        await pilot.press("slash", "a", "p", "i", "enter")  # applied, the table has the keys
        await until(pilot, lambda: row_keys(app) == ["app:api", "pid:1200"], timeout=5,
                    what="filtered rows")
        assert app.focused is app.query_one(ProcessTable)
        await pilot.press("escape")
        await until(pilot, lambda: len(row_keys(app)) == 6, timeout=5, what="all rows back")
        assert app.filter_input.value == ""


async def test_fd_target_column_uses_the_panel_width() -> None:
    app = Dashboard(FakeCore(), interval=0.3)
    async with app.run_test(size=(120, 40)) as pilot:
        await select(pilot, app, "pid:1101")
        await pilot.press("f")
        fds = app.query_one(FdView)
        await until(pilot, lambda: fds.target_width > 24, timeout=5, what="a wide target")


def _themed(core: FakeCore) -> Dashboard:
    return Dashboard(core, interval=3600, theme_dir=REPO / "themes")


def test_app_trend_and_refork_hint_snapshot(snap_compare: Any, utc: None) -> None:  # noqa: F811
    core = FakeCore()
    core.snap["apps"][0]["refork_hint"] = ("hello: its workers share 40% of their memory with "
                                           "the preloader now (90% after the fork): a refork "
                                           "would share it again")

    async def app_row(pilot: Any) -> None:
        await _loaded(pilot)
        pilot.app.query_one(ProcessTable).select_key("app:hello")
        await pilot.pause(0.2)

    assert snap_compare(_themed(core), terminal_size=(120, 40), run_before=app_row)


def test_stack_screen_snapshot(snap_compare: Any, utc: None) -> None:  # noqa: F811
    async def stacks(pilot: Any) -> None:
        await _loaded(pilot)
        await pilot.press("w")
        await until(pilot, lambda: isinstance(pilot.app.screen, StackScreen), timeout=5)
        await pilot.pause(0.2)

    assert snap_compare(_themed(FakeCore()), terminal_size=(80, 24), run_before=stacks)
