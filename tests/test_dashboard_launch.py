"""The dashboard's server as a process of its own (start, detach, attach again, quit), and
folding the process tree per app."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import assert_no_children
from tests.serving import config_text
from tests.test_dashboard import FakeCore, row_keys, select, until, worker_keys
from tui_passenger.cli import build_parser
from tui_passenger.cores import AttachedCore, SpawnedCore
from tui_passenger.launch import start_core
from tui_passenger.operations import Done
from tui_passenger.tui.app import Dashboard
from tui_passenger.tui.widgets.process_table import ProcessTable


class OwnedCore(FakeCore):
    """A fake server the dashboard started: records how it was stopped."""

    owned = True

    async def stop(self) -> None:
        self.calls.append(("stop", self.detached))


async def test_left_folds_the_selected_app_and_right_unfolds_it():
    core = FakeCore()
    app = Dashboard(core, interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await select(pilot, app, "pid:1102")
        table = app.query_one(ProcessTable)
        hello = worker_keys(app, "hello")
        api = worker_keys(app, "api")
        assert hello and api
        await pilot.press("left")
        # At once, not at the next refresh: the rows are the dashboard's own.
        assert not hello & set(row_keys(app)), row_keys(app)
        assert table.selected_key == "app:hello"
        assert table.get_cell("app:hello", "name").text.plain.startswith("▸ hello")
        assert api <= set(row_keys(app))  # the other app stays unfolded
        await pilot.pause(0.3)  # refreshes keep it folded
        assert not hello & set(row_keys(app))
        await pilot.press("right")
        assert hello <= set(row_keys(app))
        assert table.get_cell("app:hello", "name").text.plain.startswith("▾ hello")
        assert ("←", "Fold the selected app's processes into its row") in app.key_help()


@pytest.mark.parametrize("key", ["q", "d"])
async def test_q_stops_a_server_the_dashboard_started_and_d_leaves_it_running(key):
    core = OwnedCore()
    app = Dashboard(core, interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="a snapshot")
        await pilot.press(key)
        await until(pilot, lambda: core.calls[-1][0] == "stop", what=f"{key}: core stopped")
    # q: stopped, not detached (the server shuts down); d: detached, only disconnected.
    assert core.calls[-1] == ("stop", key == "d")
    assert core.detached is (key == "d")


async def test_an_embedded_server_cannot_be_detached():
    core = OwnedCore()
    core.embedded = True
    app = Dashboard(core, interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="a snapshot")
        await pilot.press("d")
        await pilot.pause(0.2)
        assert app.is_running and not core.detached
        assert not [c for c in core.calls if c[0] == "stop"]


def write_config(tmp_path: Path, port: int = 0) -> Path:
    config = tmp_path / "passenger.toml"
    text = config_text({"admin_socket": str(tmp_path / "admin.sock"), "shutdown_timeout": 5},
                       [{"name": "app", "min_instances": 1}])
    config.write_text(text.replace("port = 0\n", f"port = {port}\n", 1))
    return config


async def test_detach_leaves_the_server_running_and_attach_then_quit_stops_it(tmp_path):
    config = write_config(tmp_path)
    log = tmp_path / "core.log"
    args = build_parser().parse_args(["-c", str(config)])
    process, problem = await asyncio.to_thread(start_core, args, str(config), log)
    assert problem is None
    try:
        core = SpawnedCore(tmp_path / "admin.sock", process, log)
        await core.start()
        app = Dashboard(core, interval=0.1)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: bool(worker_keys(app, "app")), what="a worker")
            await pilot.press("d")
            await until(pilot, lambda: core.detached, what="detached")
        await core.stop()
        assert process.poll() is None, "detaching stopped the server"

        # Attached again, it is still the dashboard's: the help shows its log; q stops it.
        again = AttachedCore(tmp_path / "admin.sock")
        await again.start()
        assert again.owned and again.pid == process.pid and again.log_file == log
        app = Dashboard(again, interval=0.1)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: bool(worker_keys(app, "app")), what="a worker")
            assert ("log", str(log)) in app.key_help()
            started = time.monotonic()
            await pilot.press("q")
            await until(pilot, lambda: process.poll() is not None, what="the server to exit")
        await again.stop()
        assert process.wait() == 0 and time.monotonic() - started < 15
        assert not (tmp_path / "admin.sock").exists()
        assert "listening on" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert_no_children()


async def test_a_server_that_cannot_start_says_why_and_its_exit_status(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        config = write_config(tmp_path, port=taken.getsockname()[1])
        args = build_parser().parse_args(["-c", str(config)])
        process, problem = await asyncio.to_thread(start_core, args, str(config),
                                                   tmp_path / "core.log")
    finally:
        taken.close()
    assert problem is not None and "in use" in problem and "--port" in problem, problem
    assert process.returncode == 1
    assert_no_children()


class ScalingCore(FakeCore):
    """A fake whose snapshot takes a scale at once, as the pool does."""

    async def scale(self, app: str, count: int) -> Done:
        done = await super().scale(app, count)
        self.snap["apps"][0]["min_instances"] = count
        return done


async def test_a_key_s_effect_is_on_screen_without_waiting_for_the_next_refresh():
    core = ScalingCore()
    app = Dashboard(core, interval=30)  # only the refresh an intent asks for can show it
    async with app.run_test(size=(120, 40)) as pilot:
        await select(pilot, app, "app:hello")
        before = app.snapshot.apps[0].min_instances
        started = time.monotonic()
        await pilot.press("plus")
        await until(pilot, lambda: app.snapshot.apps[0].min_instances == before + 1,
                    timeout=5, what="the scaled app in a refreshed snapshot")
        # 200 ms on an idle machine; the bound leaves room for a loaded test box.
        assert time.monotonic() - started < 3


def test_the_log_file_is_rotated_at_10_mib_keeping_3(tmp_path):
    import logging
    import logging.handlers

    from tui_passenger.cli import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info", tmp_path / "core.log")
        (handler,) = root.handlers
        assert isinstance(handler, logging.handlers.RotatingFileHandler)
        assert (handler.maxBytes, handler.backupCount) == (10 * 1024 * 1024, 3)
        handler.close()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
