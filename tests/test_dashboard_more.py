"""The dashboard attached to a running instance, and with many workers at 80×24."""

from __future__ import annotations

import copy
import time

from tests.conftest import assert_no_children
from tests.serving import running
from tests.test_dashboard import FakeCore, fake_snapshot, row_keys, select, until
from tui_passenger.cores import AttachedCore
from tui_passenger.snapshot import Snapshot
from tui_passenger.tui import app as dashboard_module
from tui_passenger.tui.app import BUSY_BUDGET, BUSY_CPU, REFRESH_BUDGET, Dashboard
from tui_passenger.tui.screens.confirm import Confirm
from tui_passenger.tui.widgets.detail import FdView
from tui_passenger.tui.widgets.process_table import ProcessTable


async def test_attach_shows_and_operates_a_running_instance_and_leaves_it_running():
    async with running([{"name": "app", "min_instances": 1, "max_instances": 3}],
                       max_pool_size=3) as server:
        group = server.pool.groups["app"]
        worker_pid = group.processes[0].pid
        core = AttachedCore(server.admin.path)
        await core.start()
        app = Dashboard(core, interval=0.1)
        try:
            async with app.run_test(size=(120, 40)) as pilot:
                await select(pilot, app, f"pid:{worker_pid}")
                # Only the selected worker's fds are fetched, and the fds tab shows them.
                await pilot.press("f")
                fds = app.query_one(FdView)
                await until(pilot, lambda: core.fds_of == (worker_pid,) and bool(fds.levels),
                            what="the worker's fds")
                await pilot.press("f")
                await select(pilot, app, "app:app")
                await pilot.press("plus")
                await until(pilot, lambda: group.live_count() == 2, what="scaled to 2")
                await until(pilot, lambda: len([k for k in row_keys(app)
                                                 if k.startswith("pid:")]) >= 3,
                            what="the new worker on screen")
                await pilot.press("q")
                await pilot.pause()
        finally:
            await core.stop()
        # The instance said how long its loop spent answering the reads: watching costs it.
        assert 0 < core.served_seconds < 10
        # Quitting an attached dashboard leaves the instance serving.
        assert not server.stopped.is_set()
        assert group.processes and all(p.worker.alive for p in group.processes)
    assert_no_children()


def many_workers(count: int) -> dict:
    """The fake snapshot with ``count`` workers under the smart app."""
    snap = fake_snapshot()
    hello = snap["apps"][0]
    template = hello["processes"][1]
    hello["processes"] = []
    for i in range(count):
        worker = copy.deepcopy(template)
        worker.update(pid=2000 + i, processed=i * 10, cpu=float(i % 7))
        hello["processes"].append(worker)
    return snap


async def test_32_workers_at_80x24_stay_usable():
    core = FakeCore()
    core.snap = many_workers(32)
    app = Dashboard(core, interval=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(ProcessTable)
        await until(pilot, lambda: "pid:2031" in row_keys(app), what="32 worker rows")
        assert len([k for k in row_keys(app) if k.startswith("pid:20")]) == 32
        await select(pilot, app, "pid:2031")
        # Refreshes keep coming (values change) and the UI keeps up with keys.
        started = time.monotonic()
        for i in range(20):
            snap = many_workers(32)
            for worker in snap["apps"][0]["processes"]:
                worker["processed"] += i
            core.snap = snap
            await pilot.pause(0.05)
        assert table.selected_key == "pid:2031"
        await pilot.press("k")
        await until(pilot, lambda: isinstance(app.screen, Confirm), what="the kill dialog")
        assert "2031" in app.screen.question
        await pilot.press("y")
        await until(pilot, lambda: ("kill", 2031) in core.calls, what="the kill intent")
        assert time.monotonic() - started < 20
        # Folding the 32 workers (the table is rebuilt) and back: the same rows, drawn.
        before = row_keys(app)
        await select(pilot, app, "pid:2005")
        await pilot.press("left")
        await until(pilot, lambda: not any(k.startswith("pid:20") for k in row_keys(app)),
                    what="folded")
        await pilot.press("right")
        await until(pilot, lambda: row_keys(app) == before, what="unfolded")
        assert "2005" in table.render_line(1 + table.get_row_index("pid:2005")
                                           - round(table.scroll_y)).text


async def test_presses_faster_than_the_refresh_add_up():
    core = FakeCore()  # its snapshot never changes: hello keeps min_instances = 2
    app = Dashboard(core, interval=0.5)
    async with app.run_test(size=(120, 40)) as pilot:
        await select(pilot, app, "app:hello")
        for _ in range(3):
            await pilot.press("plus")
        await until(pilot, lambda: len([c for c in core.calls if c[0] == "scale"]) == 3,
                    what="three scale intents")
        assert [c for c in core.calls if c[0] == "scale"] == [
            ("scale", "hello", 3), ("scale", "hello", 4), ("scale", "hello", 5)]
        await pilot.press("minus")
        await until(pilot, lambda: ("scale", "hello", 4) in core.calls[-1:], what="back to 4")


async def test_refreshes_come_less_often_while_the_server_is_busy():
    core = FakeCore()
    app = Dashboard(core, interval=0.1)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="a snapshot")
        table = app.query_one(ProcessTable)

        def delay_after(served: float, manager_cpu: float) -> float:
            """The next period once the server spent ``served`` s answering one refresh."""
            assert app.snapshot is not None
            snap = fake_snapshot()
            snap["manager"]["cpu"] = manager_cpu
            app.snapshot = Snapshot.from_json(snap)
            app._next_delay()  # from now on (no await between: nothing else runs)
            core.served_seconds += served
            return app._next_delay()

        # An idle server: 20 ms of its time per refresh is within the normal budget.
        assert delay_after(0.02, 5.0) < 0.02 / BUSY_BUDGET
        # A busy one (its manager the bottleneck): the same 20 ms stretches the period.
        busy = delay_after(0.02, BUSY_CPU + 30)
        assert busy >= 0.02 / BUSY_BUDGET > 0.02 / REFRESH_BUDGET
        assert f"refresh {busy:.0f} s" in str(table.border_subtitle)
        # Idle again: back to the normal period, and the subtitle says so.
        assert delay_after(0.0, 5.0) < 1.0
        assert "refresh" not in str(table.border_subtitle)
        await pilot.pause()


def _event(seq: int, text: str) -> dict:
    return {"seq": seq, "time": 1_700_000_000.0, "kind": "event", "level": "info",
            "app": "hello", "pid": None, "role": None, "stream": None, "text": text}


def _logged(app: Dashboard, text: str) -> bool:
    return any(text in strip.text for strip in app.log_panel.lines)


async def test_a_periodic_refresh_waits_for_a_key_just_pressed(monkeypatch):
    # Longer than a press takes on a loaded box (the real wait is KEY_FIRST).
    monkeypatch.setattr(dashboard_module, "KEY_FIRST", 1.5)
    core = FakeCore()
    app = Dashboard(core, interval=30)  # one periodic tick at the start, then none
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="a snapshot")
        first = app.snapshot
        await pilot.press("down")
        # Data of a periodic tick lands just after the press: the key's effect is drawn
        # first, the refresh (log entries and all) a moment later.
        newer = Snapshot.from_json(fake_snapshot())
        app.post_message(Dashboard.Refreshed(newer, [_event(11, "held back")], periodic=True))
        await pilot.pause()
        assert app.snapshot is first and not _logged(app, "held back")
        await until(pilot, lambda: app.snapshot is newer, what="the held refresh", timeout=5)
        assert _logged(app, "held back")
        # One held back and then superseded by an intent's refresh: that one shows at
        # once, with the entries of both.
        await pilot.press("down")
        held = Snapshot.from_json(fake_snapshot())
        app.post_message(Dashboard.Refreshed(held, [_event(12, "older entry")], periodic=True))
        await pilot.pause()
        assert app.snapshot is newer
        urgent = Snapshot.from_json(fake_snapshot())
        app.post_message(Dashboard.Refreshed(urgent, [_event(13, "newer entry")]))
        await until(pilot, lambda: app.snapshot is urgent, what="the intent's refresh")
        assert _logged(app, "older entry") and _logged(app, "newer entry")
        await pilot.pause(dashboard_module.KEY_FIRST + 0.1)
        assert app.snapshot is urgent  # the superseded one never comes back


async def test_keys_pressed_on_and_on_do_not_starve_the_refresh(monkeypatch):
    monkeypatch.setattr(dashboard_module, "KEY_FIRST", 0.6)
    core = FakeCore()
    app = Dashboard(core, interval=30)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="a snapshot")
        await pilot.press("down")
        newer = Snapshot.from_json(fake_snapshot())
        app.post_message(Dashboard.Refreshed(newer, [], periodic=True))
        started = time.monotonic()
        while app.snapshot is not newer:  # keys keep coming, closer than KEY_FIRST
            assert time.monotonic() - started < 5 * dashboard_module.MAX_HOLD, "starved"
            await pilot.press("down", "up")
            await pilot.pause(0.05)
