"""Restarts against a real server: a restart loads the edited code (a new preloader under
smart spawning) with no failed request, a broken edit is refused and changes nothing, and
Passenger's files (tmp/restart.txt, tmp/always_restart.txt) and ``watch`` trigger it."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import assert_no_children
from tests.serving import Load, get, running, wait_until
from tests.test_admin import ctl
from tui_passenger.config import ConfigError, parse_config
from tui_passenger.pool.events import PoolEvent, Restarted, RestartFailed
from tui_passenger.pool.triggers import source_filter

T = TypeVar("T")

APP = '''\
import json
import os

VERSION = {version!r}
LOADED_BY = os.getpid()  # smart: the preloader that imported this; direct: the worker


def application(environ, start_response):
    body = json.dumps({{"pid": os.getpid(), "version": VERSION,
                        "loaded_by": LOADED_BY}}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    assert_no_children()


def write_app(root: Path, version: str) -> None:
    """(Re)write the app; versions of different lengths, so no stale .pyc can pass."""
    (root / "app.py").write_text(APP.format(version=version))


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "tmp").mkdir(parents=True)
    write_app(root, "one")
    return root


def app_config(root: Path, **settings: object) -> dict:
    return {"name": "app", "root": str(root), "min_instances": 2, "max_instances": 3,
            **settings}


async def answer(server) -> dict:
    status, _, body = await get(server)
    assert status == 200, body
    return json.loads(body)


async def under_load(server, action: Awaitable[T]) -> tuple[T, Load]:
    """Await ``action`` while three clients send requests (20 answered before, 20 after)."""
    load = Load(server, clients=3)
    try:
        await load.more(20)
        result = await action
        await load.more(20)
    finally:
        await load.stop()
    return result, load


def gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


async def test_restart_loads_the_edited_code_from_a_new_preloader_under_load(app_root):
    app = app_config(app_root, refork_after=[1000])
    events: list[PoolEvent] = []
    async with running([app], max_pool_size=6,
                       server_options={"on_event": events.append}) as server:
        group = server.pool.groups["app"]
        await server.pool.refork_now(group)  # a mold of generation 1 forks the workers now
        mold = group.spawner.preloader
        assert mold.mold is not None and group.spawner.generation == 1
        group.rollout.next_refork_count()
        assert group.refork_next == 0
        old_workers = {p.pid for p in group.processes}
        write_app(app_root, "second")
        (code, out, err), load = await under_load(server, ctl(server, "ctl", "restart", "app"))
        assert code == 0, err
        assert "worker(s) replaced" in out and not out.startswith("app: 0 ")
        assert load.failures == []
        reply = await answer(server)
        preloader = group.spawner.preloader
        assert reply["version"] == "second" and reply["loaded_by"] == preloader.pid
        assert preloader.pid != mold.pid and preloader.mold is None
        assert group.spawner.generation == 0
        assert group.refork_next == 1000  # refork_after counts start over
        assert not old_workers & {p.pid for p in group.processes}
        await wait_until(lambda: gone(mold.pid), 10)  # the old mold is stopped
        assert [e.reason for e in events if isinstance(e, Restarted)] == ["rolling restart"]
        state = json.loads((await ctl(server, "status", "--json"))[1])
        (entry,) = state["apps"]
        assert entry["restarts"] == 1 and entry["crashes"] == 0
        assert entry["generation"] == 0 and entry["preloader"]["pid"] == preloader.pid
        assert {p["ppid"] for p in entry["processes"]} == {preloader.pid}
        code, out, _ = await ctl(server, "status")
        assert "Restarts: 1   Crashes: 0" in out


async def test_direct_restart_loads_the_edited_code_and_counts(app_root):
    async with running([app_config(app_root, spawn_method="direct")]) as server:
        group = server.pool.groups["app"]
        before = {p.pid for p in group.processes}
        write_app(app_root, "second")
        code, out, err = await ctl(server, "ctl", "restart", "app")
        assert code == 0, err
        reply = await answer(server)
        assert reply["version"] == "second" and reply["pid"] not in before
        assert group.restarts == 1 and group.crashes == 0


@pytest.mark.parametrize("method", ["smart", "direct"])
async def test_a_broken_edit_is_refused_and_the_old_workers_keep_serving(app_root, method):
    events: list[PoolEvent] = []
    async with running([app_config(app_root, spawn_method=method)],
                       server_options={"on_event": events.append}) as server:
        group = server.pool.groups["app"]
        before = {p.pid for p in group.processes}
        preloader = group.spawner.preloader
        (app_root / "app.py").write_text("def application(:\n")
        code, out, err = await ctl(server, "ctl", "restart", "app")
        assert code != 0 and "restart failed" in err and "SyntaxError" in err, (out, err)
        (failed,) = [e for e in events if isinstance(e, RestartFailed)]
        assert "SyntaxError" in failed.text and "keep serving" in failed.text
        assert {p.pid for p in group.processes if p.state == "ready"} == before
        assert group.spawner.preloader is preloader and group.restarts == 0
        load = Load(server, clients=2)
        try:
            await load.more(10)
        finally:
            await load.stop()
        assert load.failures == [] and load.pids <= before
        assert (await answer(server))["version"] == "one"
        write_app(app_root, "fixed!")  # fixed: the next restart goes through
        code, _, err = await ctl(server, "ctl", "restart", "app")
        assert code == 0, err
        assert (await answer(server))["version"] == "fixed!" and group.restarts == 1


async def test_touching_restart_txt_restarts_within_the_default_interval(app_root):
    restart_txt = app_root / "tmp" / "restart.txt"
    restart_txt.touch()  # there at start: asks for nothing
    events: list[PoolEvent] = []
    async with running([app_config(app_root, min_instances=1)],
                       server_options={"on_event": events.append}) as server:
        group = server.pool.groups["app"]
        assert group.app.restart_check_interval == 2.0
        first = await answer(server)
        write_app(app_root, "second")
        os.utime(restart_txt, ns=(0, restart_txt.stat().st_mtime_ns + 10**9))
        await wait_until(lambda: group.restarts == 1, 2.0 + 10)
        assert [e.reason for e in events if isinstance(e, Restarted)] == ["restart.txt touched"]
        reply = await answer(server)
        assert reply["version"] == "second" and reply["loaded_by"] != first["loaded_by"]
        restart_txt.unlink()  # removing it asks for nothing; creating it again does
        write_app(app_root, "third!")
        restart_txt.touch()
        await wait_until(lambda: group.restarts == 2, 2.0 + 10)
        assert (await answer(server))["version"] == "third!"


@pytest.mark.parametrize("method", ["smart", "direct"])
async def test_always_restart_txt_gives_a_fresh_load_per_request(app_root, method):
    app = app_config(app_root, spawn_method=method, min_instances=1,
                     restart_check_interval=0.1)
    async with running([app]) as server:
        group = server.pool.groups["app"]
        always = app_root / "tmp" / "always_restart.txt"
        always.touch()
        await wait_until(lambda: group.always_restart, 5)
        loads = [(await answer(server))["loaded_by"] for _ in range(3)]
        assert len(set(loads)) == 3
        always.unlink()
        await wait_until(lambda: not group.always_restart, 5)
        settled = [(await answer(server))["loaded_by"] for _ in range(3)]
        assert settled == [loads[-1]] * 3  # the last fresh load stays
        assert group.restarts >= 3 and group.crashes == 0


async def test_watch_restarts_once_for_a_save_of_several_files(app_root):
    events: list[PoolEvent] = []
    async with running([app_config(app_root, min_instances=1, watch=True)],
                       server_options={"on_event": events.append}) as server:
        group = server.pool.groups["app"]
        write_app(app_root, "second")
        (app_root / "helper.py").write_text("X = 1\n")
        await wait_until(lambda: group.restarts >= 1, 15)
        assert (await answer(server))["version"] == "second"
        (restarted,) = [e for e in events if isinstance(e, Restarted)]
        assert restarted.reason == "source changed: app.py, helper.py"
        task = group.rollout.task
        assert task is not None and task.done() and group.restarts == 1


def test_watch_looks_at_python_source_only(app_root):
    (app_root / "venv").mkdir()
    (app_root / "myenv").mkdir()
    (app_root / "myenv" / "pyvenv.cfg").write_text("home = /usr\n")
    wanted = source_filter(app_root)
    yes = ["app.py", "pkg/models.py"]
    no = ["tmp/restart.py", "__pycache__/app.cpython-312.pyc", ".git/hooks/x.py",
          "venv/lib/site.py", "myenv/lib/mod.py", "notes.txt", "pkg/__pycache__/m.py"]
    for name in yes:
        assert wanted(None, str(app_root / name)), name
    for name in no:
        assert not wanted(None, str(app_root / name)), name


def test_restart_keys_are_checked(app_root):
    def parse(line: str) -> None:
        parse_config(f'[[app]]\nname = "a"\nroot = "{app_root}"\nentry = "app:application"\n'
                     f"{line}\n", path="t.toml")

    with pytest.raises(ConfigError) as error:
        parse("restart_check_interval = -1")
    assert "restart_check_interval" in str(error.value) and "t.toml:5" in str(error.value)
    with pytest.raises(ConfigError) as error:
        parse('watch = "yes"')
    assert "watch" in str(error.value) and "t.toml:5" in str(error.value)
    config = parse_config(f'[server]\nrestart_check_interval = 0\n[[app]]\nname = "a"\n'
                          f'root = "{app_root}"\nentry = "app:application"\nwatch = true\n')
    (app,) = config.apps
    assert app.restart_check_interval == 0 and app.watch is True


async def test_restart_txt_brings_up_an_app_that_did_not_load(app_root):
    (app_root / "app.py").write_text("raise RuntimeError('not configured yet')\n")
    app = app_config(app_root, min_instances=1, restart_check_interval=0.1)
    async with running([app]) as server:
        group = server.pool.groups["app"]
        assert not group.processes and group.last_error is not None
        write_app(app_root, "fixed!")
        (app_root / "tmp" / "restart.txt").touch()
        await wait_until(lambda: group.restarts == 1, 10)
        assert (await answer(server))["version"] == "fixed!" and group.last_error is None
