"""pipeline_window: a GET-like request that would wait for a worker is sent to a busy one to
run next, only while the app's requests are fast, and never behind a request already running
longer than the window. Real server, real workers."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from tests.conftest import assert_no_children
from tests.serving import get, running, wait_until
from tui_passenger.admin.report import status_text
from tui_passenger.pool.group import PIPELINE_STREAK
from tui_passenger.status import snapshot


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    assert_no_children()


def one_worker(**options) -> list[dict]:
    return [{"name": "app", "min_instances": 1, "max_instances": 1, **options}]


async def warm_up(server, count: int = PIPELINE_STREAK + 10) -> None:
    """Enough fast requests in a row for pipelining to start."""
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.get(server.url + "/") as response:
                assert response.status == 200
                await response.read()


async def burst(server, count: int, method: str = "GET", **kwargs) -> list[int]:
    """``count`` requests at once, each on its own connection; their statuses."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one() -> int:
            async with session.request(method, server.url + "/", **kwargs) as response:
                await response.read()
                return response.status
        return await asyncio.gather(*(one() for _ in range(count)))


async def test_fast_requests_queue_in_a_busy_worker_and_all_succeed():
    async with running(one_worker(pipeline_window=0.5)) as server:
        group = server.pool.groups["app"]
        await warm_up(server)
        assert group.may_pipeline(time.monotonic()) and group.pipelined == 0
        assert await burst(server, 40) == [200] * 40
        assert group.pipelined > 0
        state = snapshot(server).to_json()
        app = state["apps"][0]
        assert app["pipelined"] == group.pipelined and app["pipelining"] is True
        assert f"Pipelined to busy workers: {group.pipelined} requests, 0 taken back (now on)" \
            in status_text(state)


async def test_requests_with_a_body_are_never_pipelined():
    async with running(one_worker(pipeline_window=0.5)) as server:
        group = server.pool.groups["app"]
        await warm_up(server)
        assert await burst(server, 30, method="POST", data=b"x" * 100) == [200] * 30
        assert group.pipelined == 0


async def test_pipeline_window_zero_turns_it_off():
    async with running(one_worker(pipeline_window=0)) as server:
        group = server.pool.groups["app"]
        await warm_up(server)
        assert await burst(server, 40) == [200] * 40
        assert group.pipelined == 0 and not group.may_pipeline(time.monotonic())


async def test_no_request_waits_behind_one_running_longer_than_the_window():
    window = 0.2
    async with running(one_worker(pipeline_window=window)) as server:
        group = server.pool.groups["app"]
        await warm_up(server)
        (process,) = group.processes
        slow = asyncio.ensure_future(get(server, "/slow?1.0"))
        await wait_until(lambda: process.sessions == 1)
        await wait_until(lambda: time.monotonic() - process.busy_since > window)
        fast = asyncio.ensure_future(get(server, "/"))
        # It waits in the proxy's queue (where a worker that frees up first would take it),
        # not in the busy worker.
        await wait_until(lambda: len(group.waiters) == 1)
        assert group.pipelined == 0 and process.sessions == 1
        assert (await slow)[0] == 200 and (await fast)[0] == 200
        # The slow request turned pipelining off for a while.
        assert not group.may_pipeline(time.monotonic())
        assert snapshot(server).apps[0].pipelining is False
        assert await burst(server, 20) == [200] * 20
        assert group.pipelined == 0


async def test_worker_killed_with_pipelined_requests_behind_it_loses_none(tmp_path):
    # /die-once kills the worker that runs it (once); what was sent to that worker behind
    # it is retried on the replacement: GET is idempotent.
    app = one_worker(pipeline_window=0.5, env={"PROBE_DIR": str(tmp_path)})
    async with running(app) as server:
        group = server.pool.groups["app"]
        await warm_up(server)
        first_pid = group.processes[0].pid
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def one(path: str) -> tuple[int, bytes]:
                async with session.get(server.url + path) as response:
                    return response.status, await response.read()
            results = await asyncio.gather(one("/slow?0.05"), one("/die-once"),
                                           *(one("/") for _ in range(20)))
        assert [status for status, _ in results] == [200] * 22
        assert json.loads(results[1][1])["survived"] is True
        assert group.pipelined > 0 and server.proxy.stats.retries >= 1
        assert first_pid not in {p.pid for p in group.processes}


async def test_no_pipelining_while_a_worker_can_still_be_spawned():
    # Below max_instances a request that finds every worker busy queues and a worker is
    # spawned for it (the pool's usual scale-out), even while pipelining is on.
    app = {"name": "app", "min_instances": 1, "max_instances": 2, "pipeline_window": 0.5}
    async with running([app]) as server:
        group = server.pool.groups["app"]
        await warm_up(server)
        assert group.may_pipeline(time.monotonic()) and len(group.processes) == 1
        slow = asyncio.ensure_future(get(server, "/slow?0.5"))
        await wait_until(lambda: group.processes[0].sessions == 1)
        status, _, body = await get(server, "/")
        assert status == 200 and group.pipelined == 0
        slow_status, _, slow_body = await slow
        assert slow_status == 200
        assert json.loads(body)["pid"] != json.loads(slow_body)["pid"]
        assert group.spawned == 2


async def test_request_behind_one_that_turned_slow_is_taken_back_and_served_elsewhere():
    # Worker X runs a request past the window; worker Y has just started one that will take
    # 3 s, so a new request is pipelined behind Y. Once Y's request is past the window the
    # proxy takes it back; X serves it when free, and Y never runs it.
    lines: list[str] = []
    app = {"name": "app", "min_instances": 2, "max_instances": 2, "pipeline_window": 0.3}
    async with running([app], on_output=lambda line: lines.append(line.text)) as server:
        group = server.pool.groups["app"]
        await warm_up(server)
        first = asyncio.ensure_future(get(server, "/slow?0.8"))
        await wait_until(lambda: any(p.sessions for p in group.processes))
        (x,) = [p for p in group.processes if p.sessions]
        await wait_until(lambda: time.monotonic() - x.busy_since > 0.3)
        long = asyncio.ensure_future(get(server, "/slow?3"))
        await wait_until(lambda: all(p.sessions for p in group.processes))
        (y,) = [p for p in group.processes if p is not x]
        behind = asyncio.ensure_future(get(server, "/slow?0"))
        await wait_until(lambda: group.pipelined == 1)
        status, _, body = await behind
        assert status == 200 and json.loads(body)["pid"] == x.pid and not long.done()
        assert group.reclaimed == 1 and not group.may_pipeline(time.monotonic())
        assert (await first)[0] == 200 and (await long)[0] == 200
        pids = [json.loads((await get(server, "/slow?0"))[2])["pid"] for _ in range(5)]
        ran_on_y = sum(f"slow request started in {y.pid}" in text for text in lines)
        assert ran_on_y == 1 + pids.count(y.pid)  # /slow?3 and these, not the taken-back one
