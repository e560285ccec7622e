"""Config reload with real processes: apps added, removed (their requests finish), changed
(rolling restart only when a key that matters for the workers changed), a file with an
error (nothing changes), SIGHUP to a headless instance, ``ctl reload`` and the dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from tests.conftest import assert_no_children
from tests.serving import Load, config_text, get, wait_until
from tests.test_dashboard import FakeCore, dashboard_on, notifications, until
from tui_passenger import reload
from tui_passenger.config import load_config, parse_config
from tui_passenger.cores import AttachedCore
from tui_passenger.operations import Action, Operations, RefusalKind, Refused
from tui_passenger.pool.group import READY
from tui_passenger.server import Server
from tui_passenger.tui.app import Dashboard


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    assert_no_children()


class ConfigFile:
    """A passenger.toml the test rewrites; the server was started from it."""

    def __init__(self, path: Path, server: dict[str, Any], apps: list[dict[str, Any]]) -> None:
        self.path = path
        self.server = dict(server)
        self.apps = [dict(app) for app in apps]
        self.port = 0
        self.write()

    def write(self) -> None:
        text = config_text(self.server, self.apps)
        self.path.write_text(text.replace("port = 0\n", f"port = {self.port}\n", 1))

    def app(self, name: str) -> dict[str, Any]:
        return next(app for app in self.apps if app["name"] == name)


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, apps: list[dict[str, Any]],
                  **server: object) -> AsyncIterator[tuple[Server, ConfigFile]]:
    file = ConfigFile(tmp_path / "passenger.toml",
                      {"admin_socket": str(tmp_path / "admin.sock"), **server}, apps)
    srv = Server(load_config(file.path))
    await srv.start()
    try:
        await srv.pool.wait_started(30)
        yield srv, file
    finally:
        await srv.stop()


def pids(server: Server, app: str) -> set[int]:
    return {p.pid for p in server.pool.groups[app].processes if p.state is READY}


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


# -- what a reload changes, decided without processes ------------------------------------

def test_the_plan_sorts_each_change():
    base = [{"name": "a", "env": {"X": "1"}}, {"name": "b", "base_uri": "/b"},
            {"name": "c", "base_uri": "/c"}]
    old = parse_config(config_text({}, base), path="t.toml")
    new_apps = [{"name": "a", "env": {"X": "2"}}, {"name": "b", "base_uri": "/bee",
                                                  "min_instances": 2},
                {"name": "d", "base_uri": "/d"}]
    new = parse_config(config_text({"max_pool_size": 9}, new_apps), path="t.toml")
    new = dataclasses.replace(new, server=dataclasses.replace(
        new.server, admin_socket=old.server.admin_socket, port=3001))
    plan = reload.plan(old, new)
    assert [a.name for a in plan.added] == ["d"] and plan.removed == ("c",)
    assert [(c.app.name, c.keys) for c in plan.restarted] == [("a", ("env",))]
    assert [(c.app.name, c.keys) for c in plan.updated] == [
        ("b", ("min_instances", "base_uri"))]
    assert plan.server_keys == ("max_pool_size",) and plan.restart_needed == ("port",)
    assert plan.config.server.port == 0 and plan.config.server.max_pool_size == 9
    reply = plan.reply()
    assert reply["restarted"] == {"a": ["env"]} and reply["keys"] is None
    assert reload.plan(old, old).reply() == {
        "config": str(old.path), "added": [], "removed": [], "restarted": {}, "updated": {},
        "server": [], "restart_needed": [], "keys": None}


# -- a running server ---------------------------------------------------------------------

async def test_new_apps_start_changed_ones_roll_or_update_and_the_router_follows(tmp_path):
    apps = [{"name": "app", "min_instances": 1},
            {"name": "plain", "base_uri": "/plain", "spawn_method": "direct"}]
    async with serving(tmp_path, apps) as (server, file):
        operations = Operations(server)  # what the embedded core and the admin API call
        before_app, before_plain = pids(server, "app"), pids(server, "plain")
        file.app("app")["env"] = {"RELOAD_MARK": "2"}
        file.app("plain")["base_uri"] = "/other"
        file.app("plain")["min_instances"] = 2
        file.apps.append({"name": "extra", "base_uri": "/extra", "spawn_method": "direct"})
        file.server.update(max_pool_size=7, trusted_proxies=["10.0.0.0/8"])  # live
        file.port = 1  # cannot change live
        file.write()
        done = await operations.reload()
        assert done.action is Action.RELOAD
        assert done.reply["added"] == ["extra"] and done.reply["removed"] == []
        assert done.reply["restarted"] == {"app": ["env"]}
        assert done.reply["updated"] == {"plain": ["min_instances", "base_uri"]}
        assert done.reply["restart_needed"] == ["port"]
        assert done.reply["server"] == ["max_pool_size", "trusted_proxies"]
        assert done.message == (
            f"reloaded {file.path}: added extra; restarting app (env); updated plain "
            "(min_instances, base_uri); [server] max_pool_size, trusted_proxies applied; "
            "[server] port: needs a restart of tui-passenger to take effect")
        assert server.pool.max_pool_size == 7 and "10.1.2.3" in server.proxy.trusted
        assert server.config.server.port == 0  # the running value, as status shows it
        # The router switched at once: /plain/ is no longer plain's, /other/ is.
        status, _, body = await get(server, "/other/x")
        assert status == 200 and json.loads(body)["script_name"] == "/other"
        status, _, body = await get(server, "/plain/x")
        assert json.loads(body)["pid"] in pids(server, "app") | before_app  # "/" is app's
        await wait_until(lambda: len(pids(server, "extra")) == 1, 30)
        status, _, body = await get(server, "/extra/")
        assert status == 200 and json.loads(body)["pid"] in pids(server, "extra")
        # app rolled: new workers, with the new environment; plain kept its worker.
        await wait_until(lambda: pids(server, "app") and not pids(server, "app") & before_app,
                         30)
        (new_pid,) = pids(server, "app")
        assert environ(new_pid).get("RELOAD_MARK") == "2"
        await wait_until(lambda: len(pids(server, "plain")) == 2, 30)
        assert before_plain < pids(server, "plain")
        assert server.address is not None and server.address[1] != 1
        # Reloading the same file again: nothing more to do (the port is still reported).
        again = await operations.reload()
        assert again.reply["restarted"] == {} and again.reply["updated"] == {}
        assert again.reply["restart_needed"] == ["port"]


async def test_a_removed_app_finishes_its_requests_then_its_processes_stop(tmp_path):
    apps = [{"name": "app"}, {"name": "gone", "base_uri": "/gone", "max_instances": 1}]
    async with serving(tmp_path, apps) as (server, file):
        group = server.pool.groups["gone"]
        workers = [p.worker for p in group.processes]
        preloader = group.spawner.preloader
        assert preloader is not None and preloader.pid is not None
        preloader_pid = preloader.pid
        async with aiohttp.ClientSession() as session:
            slow = asyncio.ensure_future(session.get(server.url + "/gone/slow?1.0"))
            await wait_until(lambda: any(p.sessions for p in group.processes))
            queued = asyncio.ensure_future(session.get(server.url + "/gone/slow?0.2"))
            await wait_until(lambda: len(group.waiters) == 1)
            file.apps.pop()
            file.write()
            done = server.reload()
            assert done.removed == ("gone",) and "gone" not in server.pool.groups
            status, _, body = await get(server, "/gone/x")  # now app's, on "/"
            assert status == 200 and json.loads(body)["path"] == "/gone/x"
            first, second = await slow, await queued
            assert (first.status, second.status) == (200, 200)
            assert json.loads(await second.read())["slept"]
            first.release()
            second.release()
        await asyncio.wait_for(asyncio.gather(*(w.exited for w in workers)), 30)
        await wait_until(lambda: not server.pool.retiring, 30)
        await wait_until(lambda: not psutil.pid_exists(preloader_pid), 30)
        assert server.pool.total() == 1


async def test_a_file_with_an_error_changes_nothing_and_says_where(tmp_path):
    async with serving(tmp_path, [{"name": "app"}]) as (server, file):
        embedded = Operations(server)  # what EmbeddedCore.reload calls
        attached = AttachedCore(tmp_path / "admin.sock")
        await attached.start()
        try:
            before = pids(server, "app"), server.config
            file.apps.append({"name": "new", "base_uri": "/new",
                              "spawn_method": "fast"})
            file.write()
            for core in (embedded, attached):
                with pytest.raises(Refused) as caught:
                    await core.reload()
                refused = caught.value
                assert refused.kind is RefusalKind.INVALID
                assert re.search(r'configuration not reloaded, nothing changed: .*passenger\.'
                                 r'toml:\d+: \[\[app\]\] #2 \("new"\): spawn_method: must be',
                                 refused.reason), refused.reason
            assert (pids(server, "app"), server.config) == before
            assert "new" not in server.pool.groups
            _, entries = server.events.since(0)
            assert [e for e in entries if e["level"] == "error"
                    and e["text"].startswith("configuration not reloaded")]
            # The CLI: exit status 1 and the same reason.
            result = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "tui_passenger", "ctl", "reload",
                                 "--admin-socket", str(tmp_path / "admin.sock")],
                capture_output=True, text=True, timeout=60)
            assert result.returncode == 1 and "spawn_method: must be" in result.stderr
            file.apps[-1]["spawn_method"] = "direct"
            file.write()
            result = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "tui_passenger", "ctl", "reload",
                                 "--admin-socket", str(tmp_path / "admin.sock")],
                capture_output=True, text=True, timeout=60)
            assert result.returncode == 0
            assert result.stdout == f"reloaded {file.path}: added new\n"
            await wait_until(lambda: len(pids(server, "new")) == 1, 30)
        finally:
            await attached.stop()


def test_sighup_reloads_a_headless_instance(tmp_path):
    file = ConfigFile(tmp_path / "passenger.toml",
                      {"admin_socket": str(tmp_path / "admin.sock")},
                      [{"name": "app", "spawn_method": "direct"}])
    proc = subprocess.Popen([sys.executable, "-m", "tui_passenger", "--headless",
                             "-c", str(file.path)], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def read_until(pattern: str) -> re.Match[str]:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError("".join(lines))

    try:
        port = int(read_until(r"listening on http://127\.0\.0\.1:(\d+)/").group(1))
        read_until(r"app: worker \d+ spawned")
        file.apps.append({"name": "added", "base_uri": "/added", "spawn_method": "direct"})
        file.write()
        proc.send_signal(signal.SIGHUP)
        read_until(r"reloaded .*passenger\.toml: added added")
        read_until(r"added: worker \d+ spawned")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/added/x", timeout=20) as r:
            assert json.loads(r.read())["script_name"] == "/added"
        file.path.write_text("[server\n")
        proc.send_signal(signal.SIGHUP)
        read_until(r"ERROR .*configuration not reloaded, nothing changed: .*passenger\.toml:1")
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, "".join(lines) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_the_dashboard_key_reloads_and_takes_the_new_keys():
    core = FakeCore()
    app = Dashboard(core, interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        said = notifications(app)
        await pilot.press("R")
        await until(pilot, lambda: ("reload",) in core.calls, what="the reload intent")
        await until(pilot, lambda: "reloaded passenger.toml: [keys] applied" in said,
                    what="the answer")
        assert app.keymap == {"scale_up": "u"}


async def test_a_reload_from_elsewhere_is_notified_in_the_dashboard_once():
    # The config came from a string ("test.toml" is no file): every reload is refused.
    async with dashboard_on({"min_instances": 1}) as (_group, app, pilot):
        said = notifications(app)
        server = app.core.server
        with pytest.raises(Refused):
            await Operations(server).reload()  # as SIGHUP does
        refusals = lambda: [s for s in said if "configuration not reloaded" in s]  # noqa: E731
        await until(pilot, lambda: len(refusals()) == 1, what="the SIGHUP reload's outcome")
        assert "config file not found" in refusals()[0]
        await pilot.press("R")  # answered by the intent; its log entry is not notified again
        await until(pilot, lambda: len(refusals()) == 2, what="the key's reload answer")
        assert refusals()[1].startswith("reload: configuration not reloaded")
        seq = server.events.last
        await until(pilot, lambda: app._seq >= seq, what="the log entries read")
        await pilot.pause(0.2)
        assert len(refusals()) == 2


async def test_a_changed_app_rolls_under_load_without_a_failed_request(tmp_path):
    async with serving(tmp_path, [{"name": "app", "min_instances": 2}]) as (server, file):
        load = Load(server, clients=4)
        try:
            await load.more(20)
            before = {p.pid for p in server.pool.groups["app"].processes}
            file.app("app")["env"] = {"RELOAD_MARK": "3"}
            file.write()
            restarted = server.reload().restarted
            assert [c.keys for c in restarted] == [("env",)]
            # Under load the app may have grown above its minimum (workers spawned while
            # the new code loads come from the old settings): every one is replaced.
            await wait_until(lambda: len(pids(server, "app")) >= 2
                             and not pids(server, "app") & before
                             and all(environ(pid).get("RELOAD_MARK") == "3"
                                     for pid in pids(server, "app")), 60)
            await load.more(20)
        finally:
            await load.stop()
        assert load.failures == []
        assert load.pids & pids(server, "app") and load.pids & before
        assert all(environ(pid).get("RELOAD_MARK") == "3" for pid in pids(server, "app"))
