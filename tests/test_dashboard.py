"""The dashboard driven by Textual's pilot: against real workers (EmbeddedCore on the probe
app and sample apps) and, for cursor and snapshot tests, against a fixed FakeCore.

The tests start the core themselves (``embedded()``) and hand it to ``Dashboard``; the app
does not start or stop a core it is given (that is ``run_dashboard``'s job), so the test
owns the processes and checks nothing is left behind.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from textual.widgets import Static

from tests.conftest import REPO, SAMPLE_APPS, assert_no_children
from tests.memcached import RUNNING_PIDS, memcached_addr  # noqa: F401  (fixture)
from tests.serving import Load, config_text
from tui_passenger.config import parse_config
from tui_passenger.core import Core
from tui_passenger.cores import EmbeddedCore
from tui_passenger.operations import Action, Done
from tui_passenger.snapshot import Snapshot
from tui_passenger.tui.app import Dashboard
from tui_passenger.tui.screens.confirm import Confirm
from tui_passenger.tui.widgets.detail import FdView
from tui_passenger.tui.widgets.process_table import ProcessTable

TICK = 0.25  # the dashboard's refresh interval in these tests (1 s in real use)


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    assert_no_children_but_memcached()


def assert_no_children_but_memcached() -> None:
    """assert_no_children, except for the module's memcached (meant to keep running)."""
    if not RUNNING_PIDS:
        assert_no_children()
        return
    import psutil

    deadline = time.monotonic() + 5
    while True:
        left = [p.pid for p in psutil.Process().children(recursive=True)
                if p.pid not in RUNNING_PIDS]
        if not left:
            return
        assert time.monotonic() < deadline, f"processes left behind: {left}"
        time.sleep(0.05)


@contextlib.asynccontextmanager
async def embedded(apps: list[dict], **server: object) -> AsyncIterator[EmbeddedCore]:
    """A started EmbeddedCore (no admin socket) with its minimum of workers up."""
    core = EmbeddedCore(parse_config(config_text(server, apps), path="test.toml"), admin=False)
    await core.start()
    try:
        await core.server.pool.wait_started(30)
        yield core
    finally:
        await core.stop()


@contextlib.asynccontextmanager
async def dashboard_on(app: dict, **server: object) -> AsyncIterator[tuple[Any, Dashboard, Any]]:
    """A dashboard over a real app called "app", the app's row selected: (group, app, pilot)."""
    async with embedded([{"name": "app", **app}], **server) as core:
        dashboard = Dashboard(core, interval=TICK)
        async with dashboard.run_test(size=(120, 40)) as pilot:
            await select(pilot, dashboard, "app:app")
            yield core.server.pool.groups["app"], dashboard, pilot


async def until(pilot: Any, predicate: Callable[[], bool], timeout: float = 30,
                what: str = "condition") -> None:
    """Let the app run until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


def notifications(app: Dashboard) -> list[str]:
    """What ``app`` notifies from now on, in order (it still shows each)."""
    said: list[str] = []
    notify = app.notify

    def record(text: str, **options: Any) -> None:
        said.append(text)
        notify(text, **options)

    app.notify = record  # type: ignore[method-assign]
    return said


def row_keys(app: Dashboard) -> list[str]:
    """The process table's row keys, in display order."""
    return [row.key.value for row in app.query_one(ProcessTable).ordered_rows]


async def select(pilot: Any, app: Dashboard, key: str) -> None:
    """Wait for the row ``key`` and put the cursor on it."""
    table = app.query_one(ProcessTable)
    await until(pilot, lambda: key in row_keys(app), what=f"row {key}")
    assert table.select_key(key)
    await pilot.pause()
    assert table.selected_key == key


def worker_keys(app: Dashboard, name: str) -> set[str]:
    """Row keys of the workers of app ``name`` in the latest snapshot."""
    groups = app.snapshot.apps if app.snapshot is not None else ()
    return {f"pid:{p.pid}" for group in groups if group.name == name for p in group.processes}


# -- real workers ---------------------------------------------------------------------


async def test_scale_up_and_down_with_plus_and_minus():
    async with dashboard_on({"min_instances": 1, "max_instances": 4},
                            max_pool_size=4) as (group, app, pilot):
        await pilot.press("plus")
        await until(pilot, lambda: group.min_instances == 2 and group.live_count() == 2,
                    what="a second worker")
        await until(pilot, lambda: len(worker_keys(app, "app")) == 2
                    and worker_keys(app, "app") <= set(row_keys(app)), what="two rows")
        assert app.query_one(ProcessTable).selected_key == "app:app"
        await pilot.press("minus")
        await until(pilot, lambda: group.min_instances == 1, what="min back to 1")
        await pilot.press("minus")
        await until(pilot, lambda: group.min_instances == 0, what="min 0")
        await pilot.press("minus")  # not below 0
        await pilot.pause(2 * TICK)
        assert group.min_instances == 0


async def test_kill_asks_naming_the_pid_and_the_pool_replaces_the_worker():
    async with embedded([{"name": "app", "min_instances": 2, "max_instances": 2}]) as core:
        group = core.server.pool.groups["app"]
        app = Dashboard(core, interval=TICK)
        async with app.run_test(size=(120, 40)) as pilot:
            victim = group.processes[0].pid
            await select(pilot, app, f"pid:{victim}")
            await pilot.press("k")
            await until(pilot, lambda: isinstance(app.screen, Confirm), what="the dialog")
            assert f"Stop worker {victim} of app app?" in app.screen.question
            await pilot.press("n")  # cancelling does nothing
            await until(pilot, lambda: not isinstance(app.screen, Confirm), what="dismissed")
            await pilot.pause(2 * TICK)
            assert victim in {p.pid for p in group.processes}
            await pilot.press("k")
            await until(pilot, lambda: isinstance(app.screen, Confirm), what="the dialog")
            await pilot.press("y")
            await until(pilot, lambda: f"pid:{victim}" not in row_keys(app), what="row gone")
            await until(pilot, lambda: group.live_count() == 2
                        and victim not in {p.pid for p in group.processes},
                        what="a replacement")
            await until(pilot, lambda: len(worker_keys(app, "app") & set(row_keys(app))) == 2,
                        what="the replacement's row")


async def test_spawn_method_toggle_under_load_loses_no_request():
    async with dashboard_on({"min_instances": 2, "max_instances": 2}) as (group, app, pilot):
        load = Load(app.core.server, clients=2)
        try:
            await pilot.press("m")
            await until(pilot, lambda: group.spawn_method == "direct"
                        and len(group.processes) == 2
                        and {p.worker.spawn_method for p in group.processes} == {"direct"},
                        timeout=60, what="direct workers")
            await until(pilot, lambda: app.snapshot is not None
                        and {p.spawn_method for g in app.snapshot.apps
                             for p in g.processes} == {"direct"},
                        what="the table to show direct workers")
            ok = load.ok
            await until(pilot, lambda: load.ok > ok + 10, what="requests after the switch")
        finally:
            await load.stop()
        assert load.failures == []
        assert load.ok > 10


async def test_refork_key_makes_a_mold_and_the_tree_shows_its_generation():
    async with dashboard_on({"min_instances": 2, "max_instances": 2}) as (group, app, pilot):
        load = Load(app.core.server, clients=2)
        try:
            await load.more(20)
            await pilot.press("g")
            await until(pilot, lambda: group.spawner.generation == 1 and not group.reforking,
                        what="generation 1")
            mold = group.spawner.preloader.pid
            await until(pilot, lambda: f"pid:{mold}" in row_keys(app)
                        and app.snapshot is not None and app.snapshot.apps[0].mold == mold,
                        what="the mold's row")
            await load.more(10)
        finally:
            await load.stop()
        assert load.failures == []
        table = app.query_one(ProcessTable)
        cells = [str(c) for c in table.get_row(f"pid:{mold}")]
        assert any(f"{mold} mold" in c for c in cells) and "gen 1" in cells, cells
        for process in group.processes:
            row = [str(c) for c in table.get_row(f"pid:{process.pid}")]
            assert "gen 1" in row, row


async def test_fd_panel_flags_the_inherited_memcached_socket(memcached_addr):  # noqa: F811
    apps = [{"name": "mc", "root": str(SAMPLE_APPS / "memcache_shared"), "spawn_method": "smart",
             "min_instances": 2, "max_instances": 2, "env": {"MEMCACHED_ADDR": memcached_addr}}]
    async with embedded(apps) as core:
        group = core.server.pool.groups["mc"]
        app = Dashboard(core, interval=TICK)
        async with app.run_test(size=(120, 40)) as pilot:
            pid = group.processes[0].pid
            await select(pilot, app, f"pid:{pid}")
            await pilot.press("f")
            fds = app.query_one(FdView)
            await until(pilot, lambda: any(level == "warning" for _, level in fds.levels),
                        timeout=20, what="an fd warning")
            assert any("starting_worker_process" in note for note in fds.notes), fds.notes
            assert "⚠" in str(app.query_one(ProcessTable).get_row(f"pid:{pid}")[0].text)


# -- FakeCore: fixed data -------------------------------------------------------------


MB = 1 << 20
T0 = 1_700_000_000.0


def _mem(pss, uss, shared, private):
    return {"rss": pss + shared, "pss": pss, "uss": uss, "shared": shared,
            "private_dirty": private, "swap": 0}


def _history(first: str, second: str, a: list[float] = (), b: list[float] = (),
             span: float = 0.0) -> dict[str, Any]:
    return {first: list(a), second: list(b), "span": span}


def _worker(pid, ppid, method, state, sessions, processed, uptime, cpu, mem, fds=(),
            warnings=(), requests=(), history=((), ())):
    return {"pid": pid, "ppid": ppid, "app": "", "state": state, "spawn_method": method,
            "spawn_ms": 12.0, "sessions": sessions, "concurrency": 1, "processed": processed,
            "max_requests": 0, "started": T0 + 1000 - uptime, "uptime": uptime,
            "last_used": 1.0, "lost_threads": [], "requests": list(requests),
            "memory_history": _history("shared_mib", "private_mib", *history,
                                       span=uptime if history[0] else 0.0),
            "cpu": cpu, "threads": 1, "memory": mem,
            "fds": list(fds), "warnings": list(warnings), "generation": 0,
            "notes": [f"fd {fd['fd']}: {fd['warning']}" for fd in fds if fd["level"] == "info"]}


#: The keys of an app object the screens below do not depend on.
APP_SETTINGS = {"queue_time_limit": 10.0, "queue_oldest": 0.0,
                "max_request_time": 0.0, "memory_limit_mb": 0, "pipeline_window": 0.01,
                "pipelined": 0, "reclaimed": 0, "pipelining": True,
                "worker_scheduling": "batch", "generation": 0, "mold": None, "reforks": 0,
                "refork_next": 0, "refork_hint": None,
                "memory_history": _history("pss_mib", "saving_mib")}
SLOW_REQUEST = {"id": "c0ffee-1", "method": "GET", "path": "/reports/yearly?year=2024",
                "age": 7.25}
#: Worker 1101's shared and private memory (MiB) since it started: copy-on-write drift.
W1_HISTORY = ([40.0, 40.0, 39.5, 39.0, 38.5, 38.0, 38.0, 38.0],
              [1.0, 1.5, 2.0, 2.2, 2.5, 2.8, 3.0, 3.0])
INFO_NOTE = "socket shared with pid 1: one connection open in several processes"
FD_WARNING = ("connected to 127.0.0.1:11211, inherited from the preloader and shared with "
              "2 other worker(s): reconnect it in a starting_worker_process hook")


def fake_snapshot() -> dict[str, Any]:
    """A complete status JSON: two apps (smart with a preloader, direct), three workers."""
    shared_fd = {"fd": 5, "kind": "tcp", "target": "127.0.0.1:11211", "inode": 1,
                 "cloexec": False, "shared_with": [1101, 1102], "level": "warning",
                 "warning": FD_WARNING, "own": False}
    info_fd = {"fd": 3, "kind": "unix", "target": "w1.sock", "inode": 2, "cloexec": True,
               "shared_with": [], "level": "info", "warning": INFO_NOTE, "own": True}
    preloader = {"pid": 1100, "ppid": 1000, "state": "ready", "started": T0, "uptime": 3600.0,
                 "load_ms": 250.0, "threads_at_load": [], "cpu": 0.0, "threads": 1,
                 "memory": _mem(20 * MB, 2 * MB, 40 * MB, 2 * MB), "fds": [], "warnings": [],
                 "notes": [], "generation": 0, "mold": False}
    w1 = _worker(1101, 1100, "smart", "busy", 1, 1234, 3500.0, 12.5,
                 _mem(14 * MB, 3 * MB, 38 * MB, 3 * MB), [info_fd, shared_fd],
                 [f"fd 5: {FD_WARNING}"], [SLOW_REQUEST], W1_HISTORY)
    w2 = _worker(1102, 1100, "smart", "ready", 0, 987, 3400.0, 3.2,
                 _mem(13 * MB, 2 * MB, 38 * MB, 2 * MB), [info_fd])
    w3 = _worker(1200, 1000, "direct", "ready", 0, 55, 125.0, 0.4,
                 _mem(30 * MB, 28 * MB, 4 * MB, 27 * MB), [info_fd])
    hello = {**APP_SETTINGS, "name": "hello", "spawn_method": "smart",
             "environment": "production", "min_instances": 2, "max_instances": 0, "queue": 1,
             "queue_limit": 100,
             "spawning": 0, "spawned": 2, "restarts": 0, "crashes": 0, "requests": 2221,
             "last_spawn_error": None, "preloader": preloader, "processes": [w1, w2],
             "memory_history": _history("pss_mib", "saving_mib",
                                        [40.0, 42.0, 44.0, 45.0, 46.0, 47.0],
                                        [110.0, 108.0, 106.0, 105.0, 104.0, 103.0], 3500.0),
             "memory": {**_mem(47 * MB, 7 * MB, 116 * MB, 7 * MB),
                        "direct_estimate": 150 * MB, "saving": 103 * MB}}
    api = {**APP_SETTINGS, "name": "api", "spawn_method": "direct",
           "environment": "production", "min_instances": 1, "max_instances": 0, "queue": 0,
           "queue_limit": 100,
           "spawning": 1, "spawned": 1, "restarts": 0, "crashes": 0, "requests": 55,
           "last_spawn_error": None, "preloader": None, "processes": [w3],
           "memory": {**_mem(30 * MB, 28 * MB, 4 * MB, 27 * MB),
                      "direct_estimate": 30 * MB, "saving": 0}}
    return {
        "schema": 1,
        "server": {"pid": 1000, "url": "http://127.0.0.1:3000",
                   "addresses": ["http://127.0.0.1:3000"], "started": T0,
                   "uptime": 3723.0, "max_pool_size": 6, "processes": 3, "requests": 2276,
                   "responses": {"1xx": 0, "2xx": 2270, "3xx": 0, "4xx": 3, "5xx": 3},
                   "retries": 0, "errors_502": 0, "errors_503": 2,
                   "log_file": None, "dashboard_owned": False},
        "manager": {"pid": 1000, "cpu": 1.0, "threads": 2, "memory": None, "fds": [],
                    "warnings": [], "notes": []},
        "apps": [hello, api],
        "totals": {**_mem(77 * MB, 35 * MB, 120 * MB, 34 * MB), "direct_estimate": 180 * MB,
                   "saving": 103 * MB},
        "traffic": {"rps": [(i * 7) % 23 for i in range(60)],
                    "p50_ms": [1.0] * 60, "p99_ms": [float((i * 5) % 17) for i in range(60)]},
        "events_seq": 3,
        "sampling": True,
    }


FAKE_STACK = ("Current thread 0x00007f0000000001 (most recent call first):\n"
              '  File "/srv/hello/reports.py", line 42 in yearly_report\n'
              '  File "/srv/hello/app.py", line 9 in application\n')

FAKE_EVENTS = [
    {"seq": 1, "time": T0, "kind": "event", "level": "info", "app": "hello", "pid": 1101,
     "role": "worker", "stream": None, "text": "spawned (smart, 12 ms)"},
    {"seq": 2, "time": T0 + 1, "kind": "output", "level": "info", "app": "hello",
     "pid": 1102, "role": "worker", "stream": "stderr", "text": "DeprecationWarning: x"},
    {"seq": 3, "time": T0 + 2, "kind": "event", "level": "error", "app": "api", "pid": None,
     "role": None, "stream": None,
     "text": ("spawn failed: ImportError\nTraceback (most recent call last):\n"
              "  File x\nImportError: no")},
]


class FakeCore(Core):
    """Fixed snapshot (``snap``: status JSON, as an attached dashboard gets it) and events;
    records the intents it is sent."""

    embedded = False
    description = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.snap = fake_snapshot()

    async def start(self) -> None:
        self.calls.append(("start",))

    async def stop(self) -> None:
        self.calls.append(("stop",))

    async def snapshot(self) -> Snapshot:
        return Snapshot.from_json(self.snap)

    async def events(self, since: int) -> tuple[int, list[dict[str, Any]]]:
        return 3, [e for e in FAKE_EVENTS if e["seq"] > since]

    async def scale(self, app: str, count: int) -> Done:
        self.calls.append(("scale", app, count))
        return Done(Action.SCALE, {"app": app, "min_instances": count})

    async def kill(self, pid: int, force: bool = False) -> Done:
        self.calls.append(("kill", pid))
        return Done(Action.KILL, {"pid": pid, "app": "hello", "exit": "exit status 0"})

    async def stack(self, pid: int) -> Done:
        self.calls.append(("stack", pid))
        return Done(Action.STACK, {"pid": pid, "app": "hello", "role": "worker",
                                   "source": "faulthandler", "whole": True,
                                   "stack": FAKE_STACK})

    async def restart(self, app: str) -> Done:
        self.calls.append(("restart", app))
        return Done(Action.RESTART, {"app": app, "replaced": 2})

    async def set_spawn_method(self, app: str, method: str) -> Done:
        self.calls.append(("spawn_method", app, method))
        return Done(Action.SPAWN_METHOD, {"app": app, "spawn_method": method, "replaced": 2})

    async def refork(self, app: str) -> Done:
        self.calls.append(("refork", app))
        return Done(Action.REFORK, {"app": app, "generation": 1, "mold": 1102, "replaced": 1})

    async def pause_sampling(self, paused: bool) -> Done:
        self.calls.append(("pause", paused))
        return Done(Action.SAMPLING, {"paused": paused})

    async def reload(self) -> Done:
        self.calls.append(("reload",))
        return Done(Action.RELOAD, {"config": "passenger.toml", "added": [], "removed": [],
                                    "restarted": {}, "updated": {}, "server": [],
                                    "restart_needed": [], "keys": {"scale_up": "u"}})


async def test_cursor_stays_on_its_pid_across_refreshes_and_sorts():
    core = FakeCore()
    app = Dashboard(core, interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(ProcessTable)
        await select(pilot, app, "pid:1102")
        before = row_keys(app)
        # A worker before it goes away, a new one arrives, 1102 gets busy: three refreshes.
        snap = fake_snapshot()
        hello = snap["apps"][0]
        hello["processes"] = [p for p in hello["processes"] if p["pid"] != 1101]
        newcomer = dict(hello["processes"][0], pid=1103, started=T0 + 999, uptime=1.0, cpu=0.1)
        hello["processes"].append(newcomer)
        hello["processes"][0]["cpu"] = 80.0
        core.snap = snap
        await until(pilot, lambda: "pid:1103" in row_keys(app), what="the new row")
        assert "pid:1101" not in row_keys(app) and row_keys(app) != before
        assert table.selected_key == "pid:1102"
        for _ in range(4):  # tree -> cpu -> pss -> processed -> tree
            await pilot.press("s")
            await pilot.pause(0.1)
            assert table.selected_key == "pid:1102", app.sort_mode
        core.snap = fake_snapshot()  # 1102's neighbour comes back, 1103 goes
        await until(pilot, lambda: "pid:1103" not in row_keys(app), what="1103 gone")
        assert table.selected_key == "pid:1102"


def shown_line(app: Dashboard, key: str) -> str:
    """The text the process table draws for the row ``key`` (as rendered, not as held)."""
    table = app.query_one(ProcessTable)
    index = table.get_row_index(key)
    return table.render_line(index + 1 - round(table.scroll_y)).text  # 1: the header


async def test_changed_cells_are_drawn_anew_and_a_fold_draws_the_rows_it_had():
    core = FakeCore()
    app = Dashboard(core, interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await select(pilot, app, "pid:1102")
        await pilot.pause()
        assert " 987 " in shown_line(app, "pid:1102")
        snap = fake_snapshot()
        snap["apps"][0]["processes"][1]["processed"] = 4321
        core.snap = snap
        await until(pilot, lambda: " 4321 " in shown_line(app, "pid:1102"), what="4321")
        assert " 1234 " in shown_line(app, "pid:1101")  # its neighbour as it was
        await pilot.press("left")  # fold hello: its preloader and workers go
        await until(pilot, lambda: "pid:1102" not in row_keys(app), what="folded")
        assert "hello" in shown_line(app, "app:hello") and "api" in shown_line(app, "app:api")
        # The api row moved up: a click on it (the mouse reads the row from what is drawn)
        # selects it.
        table = app.query_one(ProcessTable)
        top = table.content_region.y - table.region.y + 1  # 1: the header
        await pilot.click(ProcessTable, offset=(4, top + table.get_row_index("app:api")))
        await until(pilot, lambda: table.selected_key == "app:api", what="api clicked")
        await pilot.press("up")
        await pilot.press("right")
        await until(pilot, lambda: "pid:1102" in row_keys(app), what="unfolded")
        await pilot.pause()
        assert " 4321 " in shown_line(app, "pid:1102") and "api" in shown_line(app, "app:api")


async def test_header_names_every_public_address():
    core = FakeCore()
    core.snap["server"]["addresses"] = ["http://127.0.0.1:3000", "unix:/run/tp/http.sock"]
    app = Dashboard(core, interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        header = app.query_one("#header-server", Static)
        await until(pilot, lambda: "unix:/run/tp/http.sock" in str(header.render()),
                    what="the Unix socket in the header")
        assert str(header.render()).startswith("http://127.0.0.1:3000  + unix:/run/tp/http.sock")


async def test_header_shows_how_long_the_queue_has_waited_against_its_limit():
    core = FakeCore()
    core.snap["apps"][0].update(queue=3, queue_oldest=6.25, queue_time_limit=10.0)
    app = Dashboard(core, interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        load = app.query_one("#header-load", Static)
        await until(pilot, lambda: "waited" in str(load.render()), what="the queue's wait")
        assert "queue 3 (waited 6.2/10 s)" in str(load.render())


async def test_keys_send_intents_and_help_lists_remapped_keys():
    core = FakeCore()
    app = Dashboard(core, keymap={"scale_up": "u"}, interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await select(pilot, app, "pid:1101")
        await pilot.press("u", "m", "r", "g", "p")
        await until(pilot, lambda: len(core.calls) >= 5, timeout=5, what="intents")
        assert set(core.calls) >= {("scale", "hello", 3), ("spawn_method", "hello", "direct"),
                                   ("restart", "hello"), ("refork", "hello"), ("pause", True)}
        await pilot.press("plus")  # remapped away: does nothing
        await pilot.press("question_mark")
        await pilot.pause()
        keys = dict(app.key_help())
        assert "u" in keys and "k, f9" in keys
        await pilot.press("escape")
        await select(pilot, app, "app:hello")
        await pilot.press("k")  # an app row: nothing to kill, no dialog
        await pilot.pause()
        assert not isinstance(app.screen, Confirm)
        await pilot.press("slash", "a", "p", "i")
        await until(pilot, lambda: row_keys(app) == ["app:api", "pid:1200"], timeout=5,
                    what="filtered rows")
        await pilot.press("escape")
        await until(pilot, lambda: len(row_keys(app)) == 6, timeout=5, what="all rows")
        assert ("scale", "hello", 3) in core.calls and core.calls.count(("scale", "hello", 3)) == 1


async def test_log_of_a_restarted_instance_is_read_from_its_start():
    """An attached dashboard whose instance restarted and has logged more than before."""
    core = FakeCore()
    app = Dashboard(core, interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app._seq == 3, timeout=5, what="the first log")
        restarted = [{**e, "seq": i, "text": f"new instance line {i}"} for i, e in
                     enumerate(FAKE_EVENTS * 2, start=1)]

        async def events(since: int) -> tuple[int, list[dict[str, Any]]]:
            return 6, [e for e in restarted if e["seq"] > since]

        core.events = events  # type: ignore[method-assign]
        core.snap = {**core.snap, "server": {**core.snap["server"], "started": T0 + 60}}

        def logged() -> str:
            return "\n".join(str(line.text) for line in app.log_panel.lines)

        await until(pilot, lambda: all(f"new instance line {i}" in logged()
                                       for i in range(1, 7)),
                    timeout=5, what="every line of the new instance's log")


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch):
    """Log timestamps in UTC, whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def _loaded(pilot: Any) -> None:
    """Wait for the first snapshot, then put the cursor on worker 1101 (the warned one)."""
    app = pilot.app
    await until(pilot, lambda: len(row_keys(app)) == 6, timeout=5, what="rows")
    app.query_one(ProcessTable).select_key("pid:1101")
    await until(pilot, lambda: app.query_one(FdView).levels, timeout=5, what="detail")
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_main_screen_snapshot(snap_compare, utc, size):
    app = Dashboard(FakeCore(), interval=3600, theme_dir=REPO / "themes")

    async def run_before(pilot: Any) -> None:
        await _loaded(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_fd_tab_and_kill_dialog_snapshot(snap_compare, utc):
    app = Dashboard(FakeCore(), interval=3600, theme_dir=REPO / "themes")

    async def run_before(pilot: Any) -> None:
        await _loaded(pilot)
        await pilot.press("f")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)
    app2 = Dashboard(FakeCore(), interval=3600, theme_dir=REPO / "themes")

    async def kill_dialog(pilot: Any) -> None:
        await _loaded(pilot)
        await pilot.press("k")
        await pilot.pause(0.2)

    assert snap_compare(app2, terminal_size=(80, 24), run_before=kill_dialog)
