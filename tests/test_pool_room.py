"""A full pool with real workers: an app that cannot start never costs another app a worker,
and making room never takes an app below its min_instances."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.conftest import assert_no_children
from tests.serving import get, running, wait_until
from tui_passenger.pool.events import PoolEvent, Stopping
from tui_passenger.pool.group import READY


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    assert_no_children()


async def burst(url: str, clients: int, seconds: float = 3.0) -> list[int]:
    """GET ``url`` from ``clients`` loops for ``seconds``; the statuses answered."""
    statuses: list[int] = []
    deadline = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            async with session.get(url) as response:
                statuses.append(response.status)
                await response.read()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return statuses


async def test_a_burst_to_a_broken_app_leaves_the_healthy_apps_their_workers(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "app.py").write_text("raise ImportError('no module named totally_missing')\n")
    apps = [{"name": "hello", "min_instances": 2},
            {"name": "api", "min_instances": 1, "base_uri": "/api", "spawn_method": "direct"},
            {"name": "broken", "root": str(broken), "min_instances": 0, "base_uri": "/broken",
             "spawn_method": "direct"}]
    events: list[PoolEvent] = []
    async with running(apps, server_options={"on_event": events.append},
                       max_pool_size=3) as server:
        groups = server.pool.groups
        before = {name: sorted(p.pid for p in groups[name].processes) for name in ("hello", "api")}
        assert [len(pids) for pids in before.values()] == [2, 1] and server.pool.total() == 3
        statuses = await burst(server.url + "/broken/", clients=4)
        assert len(statuses) >= 20 and set(statuses) <= {500, 503}, set(statuses)
        after = {name: sorted(p.pid for p in groups[name].processes if p.state is READY)
                 for name in ("hello", "api")}
        assert after == before
        assert not [e for e in events if isinstance(e, Stopping)]
        status, _, _ = await get(server, "/api/")
        assert status == 200


async def test_an_idle_worker_above_its_minimum_makes_room_only_before_the_app_fails(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "app.py").write_text("raise ImportError('no module named totally_missing')\n")
    apps = [{"name": "hello", "min_instances": 2},
            {"name": "broken", "root": str(broken), "min_instances": 0, "base_uri": "/broken",
             "spawn_method": "direct"}]
    events: list[PoolEvent] = []
    async with running(apps, server_options={"on_event": events.append},
                       max_pool_size=2) as server:
        hello = server.pool.groups["hello"]
        hello.min_instances = 1  # as after a scale down that left the second one warm
        statuses = await burst(server.url + "/broken/", clients=1)
        made_room = [e for e in events if isinstance(e, Stopping)]
        # At most the first try, before the app was known to fail; never below the minimum.
        assert len(made_room) <= 1 and set(statuses) <= {500, 503}
        await wait_until(lambda: sum(p.state is READY for p in hello.processes) >= 1)
        assert server.pool.groups["broken"].spawn_failures >= 1
