"""The demonstration apps in sample_apps/ behave as their docstrings say, under both methods.

memcache_shared: one memcached connection opened at import, shared by every forked worker
unless the hook reconnects (memcache_fixed). threads_at_import: a thread started at import
is lost in forked workers, and the manager reports it. broken: a spawn error page.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import socket
import time

import aiohttp
import psutil
import pytest

from tests.conftest import SAMPLE_APPS
from tests.memcached import RUNNING_PIDS, memcached_addr  # noqa: F401  (fixture)
from tests.serving import get, running
from tui_passenger.status import snapshot

WORKERS = 2


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    """No worker or preloader survives a test (our memcached is meant to)."""
    yield
    me = psutil.Process()
    deadline = time.monotonic() + 5
    while True:
        leftover = []
        for child in me.children(recursive=True):
            if child.pid not in RUNNING_PIDS:
                with contextlib.suppress(psutil.NoSuchProcess):
                    leftover.append((child.pid, child.name(), child.status()))
        if not leftover:
            return
        assert time.monotonic() < deadline, f"processes left behind: {leftover}"
        time.sleep(0.05)


def app(name: str, root: str, method: str, **settings: object) -> dict:
    return {"name": name, "root": str(SAMPLE_APPS / root), "entry": "app:application",
            "spawn_method": method, "min_instances": WORKERS, "max_instances": WORKERS,
            "environment": "development", **settings}


async def workers_of(server, name: str, count: int = WORKERS):
    """The group's processes once ``count`` are up (bounded wait)."""
    group = server.pool.groups[name]

    async def poll() -> None:
        while len(group.processes) < count:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), 20)
    assert group.last_error is None, group.last_error
    return group.processes


async def ask_worker(process, path: str = "/") -> dict:
    """GET ``path`` from one worker directly on its Unix socket (bypassing least-busy)."""
    connector = aiohttp.UnixConnector(path=process.worker.socket_path)
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.get("http://worker" + path) as response:
        assert response.status == 200, await response.text()
        return json.loads(await response.read())


@pytest.mark.parametrize(("root", "method", "shared"), [
    ("memcache_shared", "direct", False),
    ("memcache_shared", "smart", True),   # the bug: one inherited connection for everyone
    ("memcache_fixed", "smart", False),   # the hook reconnects in every forked worker
])
async def test_memcache_connection_per_worker(memcached_addr, root, method, shared):  # noqa: F811
    config = app("mc", root, method, env={"MEMCACHED_ADDR": memcached_addr})
    async with running([config], max_pool_size=WORKERS) as server:
        processes = await workers_of(server, "mc")
        # One request at a time: even a shared connection gives the right replies then.
        replies = [await ask_worker(p) for p in processes]
        assert all(r["matched"] for r in replies), replies
        assert len({r["pid"] for r in replies}) == WORKERS
        ports = {r["local_port"] for r in replies}
        opened_by = {r["connection_opened_by"] for r in replies}
        if shared:
            assert len(ports) == 1
            assert opened_by == {server.pool.groups["mc"].spawner.preloader.pid}
        else:
            assert len(ports) == WORKERS
            assert opened_by == {r["pid"] for r in replies}
        # The see-inside view flags the inherited connection (and only that case).
        await server.sample_now()
        state = snapshot(server).to_json()
        mc_port = memcached_addr.rsplit(":", 1)[1]
        flagged = {p["pid"]: [fd for fd in p["fds"] if fd["level"] == "warning"]
                   for p in state["apps"][0]["processes"]}
        for pid, warnings in flagged.items():
            if shared:
                assert len(warnings) == 1, (pid, warnings)
                assert warnings[0]["kind"] == "tcp" and warnings[0]["target"].endswith(mc_port)
                assert "starting_worker_process" in warnings[0]["warning"]
                assert set(warnings[0]["shared_with"]) >= set(flagged) - {pid}
            else:
                assert warnings == [], (pid, warnings)
        if root == "memcache_fixed":
            assert all(r["stats"]["reconnected"] for r in replies)
            # Own connections: concurrent traffic through the proxy never mixes replies up.
            results = await asyncio.gather(*(get(server, "/") for _ in range(40)))
            bodies = [json.loads(body) for status, _, body in results if status == 200]
            assert len(bodies) == 40 and all(b["matched"] for b in bodies)


async def test_memcache_unreachable_is_a_clear_spawn_error():
    with socket_bound_nowhere() as addr:
        config = app("mc", "memcache_shared", "direct", min_instances=0,
                     env={"MEMCACHED_ADDR": addr})
        async with running([config]) as server:
            status, _, body = await get(server, "/")
    assert status == 500
    assert f"cannot reach memcached at MEMCACHED_ADDR='{addr}'" in html.unescape(body.decode())


@contextlib.contextmanager
def socket_bound_nowhere():
    """A loopback address nobody listens on (bound, not listening: connections refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(("method", "restart"), [
    ("direct", False), ("smart", False), ("smart", True)])
async def test_thread_started_at_import(method, restart):
    env = {"THREADS_RESTART_IN_HOOK": "1"} if restart else {}
    config = app("threads", "threads_at_import", method, env=env)
    async with running([config], max_pool_size=WORKERS) as server:
        processes = await workers_of(server, "threads")
        for process in processes:
            reply = await ask_worker(process)
            assert reply["pid"] == process.pid
            lost = process.worker.lost_threads
            status_warnings = [w for p in snapshot(server).apps[0].processes
                               if p.pid == process.pid for w in p.warnings]
            # Warned while lost: not when the hook has started the thread again.
            assert any("did not survive the fork: metrics-flusher" in w
                       for w in status_warnings) == (method == "smart" and not restart)
            if method == "direct":
                assert reply["thread_alive"] and lost == ()
                assert reply["thread_started_by"] == process.pid
            else:
                # The manager knows the preloader's thread did not survive the fork (unless
                # the hook started it again)...
                assert ("metrics-flusher" in lost) is not restart
                # ...and the app sees it: dead unless the hook started a new one.
                assert reply["thread_alive"] is restart
                assert reply["restarted_in_hook"] is restart
                assert ("metrics-flusher" in reply["threads"]) is restart


@pytest.mark.parametrize("method", ["direct", "smart"])
async def test_broken_app_spawn_error_page(method):
    config = app("broken", "broken", method, min_instances=0)
    async with running([config]) as server:
        status, _, body = await get(server, "/")
        assert status == 500
        page = html.unescape(body.decode())
        assert "Traceback" in page and "from settings import DATABASE_URL" in page
        assert "ImportError: cannot import name 'DATABASE_URL' from 'settings'" in page
