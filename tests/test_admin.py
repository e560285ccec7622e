"""The admin API and CLI against a real server: status, memory, metrics, live operations."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys

import pytest

from tests.conftest import assert_no_children
from tests.serving import Load, get, running, wait_until
from tui_passenger.admin.client import AdminClient
from tui_passenger.inspect.memory import read_smaps_rollup


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    assert_no_children()


async def admin(server, method: str, url: str, body: dict | None = None):
    client = AdminClient(server.admin.path)
    return await asyncio.to_thread(client.request, method, url, body)


async def ctl(server, *args: str) -> tuple[int, str, str]:
    """Run the real CLI in a subprocess against the server's admin socket."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tui_passenger", args[0], "--admin-socket",
        str(server.admin.path), *args[1:],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


async def test_admin_socket_is_private_and_not_on_the_public_port():
    async with running([{"name": "app", "base_uri": "/app"}]) as server:
        mode = os.stat(server.admin.path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        for path in ("/status", "/metrics", "/apps/app/scale"):
            status, _, body = await get(server, path)
            assert status == 404, (path, body)
        status, body = await admin(server, "GET", "/status")
        assert status == 200 and json.loads(body)["schema"] == 1
    assert not server.admin.path.exists()


async def test_status_json_memory_agrees_with_smaps():
    app = {"name": "app", "min_instances": 2, "max_instances": 2}
    async with running([app]) as server:
        await get(server, "/")
        code, out, err = await ctl(server, "status", "--json")
        assert code == 0, err
        state = json.loads(out)
        group = state["apps"][0]
        assert group["name"] == "app" and group["spawn_method"] == "smart"
        assert group["preloader"]["pid"] == server.pool.groups["app"].spawner.preloader.pid
        assert len(group["processes"]) == 2
        for process in group["processes"]:
            assert {"pid", "ppid", "state", "spawn_method", "spawn_ms", "sessions",
                    "processed", "threads", "memory", "fds", "warnings"} <= set(process)
            assert process["ppid"] == group["preloader"]["pid"]
            direct = read_smaps_rollup(process["pid"])
            for key in ("pss", "private_dirty"):
                assert abs(process["memory"][key] - getattr(direct, key)) \
                    <= 0.1 * getattr(direct, key) + 64 * 1024, key
            kinds = {fd["kind"] for fd in process["fds"]}
            assert "unix" in kinds  # its listening socket and control channel, at least
            assert not [fd for fd in process["fds"] if fd["own"] and fd["warning"]]
        # ?fds=PID: that process's fds only (a dashboard's), the rest of the reply alike.
        first, second = (process["pid"] for process in group["processes"])
        status, body = await admin(server, "GET", f"/status?fds={first}")
        assert status == 200
        some = json.loads(body)
        assert set(some) == set(state) and set(some["apps"][0]) == set(group)
        fds = {process["pid"]: process["fds"] for process in some["apps"][0]["processes"]}
        assert "unix" in {fd["kind"] for fd in fds[first]} and fds[second] == []
        assert some["apps"][0]["preloader"]["fds"] == [] and some["manager"]["fds"] == []
        status, body = await admin(server, "GET", "/status?fds=one")
        assert status == 400 and b"fds must be pids" in body
        assert state["totals"]["pss"] > 0
        assert state["totals"]["direct_estimate"] >= state["totals"]["pss"]
        code, out, err = await ctl(server, "status")
        assert code == 0 and "Application groups" in out and "Preloader: PID" in out
        code, out, err = await ctl(server, "memory")
        assert code == 0 and "PSS" in out and "saves" in out


async def test_metrics_in_prometheus_format():
    async with running([{"name": "app"}]) as server:
        for _ in range(3):
            await get(server, "/")
        status, body = await admin(server, "GET", "/metrics")
        text = body.decode()
        assert status == 200
        assert 'tui_passenger_requests_total{app="app"} 3.0' in text
        assert 'tui_passenger_queue_length{app="app"} 0.0' in text
        assert 'tui_passenger_processes{app="app",state="ready"} 1.0' in text
        assert "tui_passenger_spawn_duration_seconds_bucket" in text
        assert 'tui_passenger_memory_bytes{app="app",kind="pss"}' in text


async def test_bad_admin_requests_get_reasons():
    async with running([{"name": "app"}]) as server:
        status, body = await admin(server, "POST", "/apps/nope/scale", {"count": 1})
        assert status == 404 and b"no app named 'nope'" in body
        status, body = await admin(server, "POST", "/apps/app/scale", {"count": -1})
        assert status == 400 and b"count" in body
        status, body = await admin(server, "POST", "/processes/1/kill")
        assert status == 404
        code, _, err = await ctl(server, "ctl", "spawn-method", "nope", "direct")
        assert code == 1 and "no app named 'nope'" in err


async def test_live_operations_under_load_lose_no_request():
    app = {"name": "app", "min_instances": 1, "max_instances": 4}
    async with running([app], max_pool_size=4) as server:
        group = server.pool.groups["app"]
        load = Load(server, clients=2)
        try:
            code, out, err = await ctl(server, "ctl", "scale", "app", "3")
            assert code == 0, err
            await wait_until(lambda: group.live_count() == 3, 30)
            victim = group.processes[0].pid
            code, out, err = await ctl(server, "ctl", "kill", str(victim))
            assert code == 0 and f"worker {victim} stopped" in out, err
            await wait_until(lambda: group.live_count() == 3, 30)
            assert victim not in {p.pid for p in group.processes}
            before = {p.pid for p in group.processes}
            code, out, err = await ctl(server, "ctl", "restart", "app")
            assert code == 0 and "3 worker(s) replaced" in out, err
            assert not before & {p.pid for p in group.processes}
            code, out, err = await ctl(server, "ctl", "spawn-method", "app", "direct")
            assert code == 0 and "now direct spawning" in out, err
            assert {p.worker.spawn_method for p in group.processes} == {"direct"}
            assert all(p.worker.ppid == os.getpid() for p in group.processes)
            code, out, err = await ctl(server, "ctl", "spawn-method", "app", "smart")
            assert code == 0, err
            assert {p.worker.spawn_method for p in group.processes} == {"smart"}
            ok_before = load.ok
            await wait_until(lambda: load.ok > ok_before + 20, 30)
        finally:
            await load.stop()
        assert load.failures == []
        assert load.ok > 50 and len(load.pids) >= 6
        assert group.crashes == 0  # nothing crashed: every replacement was planned
