"""Fault injection against a real server: workers and preloaders killed under load, apps
that crash or fail to import, and slow clients that must never hold a worker."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import assert_no_children
from tests.serving import Load, get, running, wait_until

CRASHY_APP = Path(__file__).resolve().parent / "apps" / "crashy"


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    assert_no_children()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def healthy(group, count: int) -> bool:
    """``count`` ready workers, none spawning, every one of them a live process."""
    ready = [p for p in group.processes if p.state == "ready"]
    return (group.spawning == 0 and len(ready) == count
            and all(p.worker.alive and alive(p.pid) for p in ready))


async def test_kill_9_random_worker_every_half_second_under_load():
    app = {"name": "app", "min_instances": 3, "max_instances": 3}
    async with running([app], max_pool_size=3) as server:
        group = server.pool.groups["app"]
        load = Load(server, clients=4)
        killed = []
        try:
            await load.more(20)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                candidates = [p.pid for p in group.processes
                              if p.state == "ready" and alive(p.pid)]
                if candidates:
                    victim = random.choice(candidates)
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
                await asyncio.sleep(0.5)  # the kill cadence is the scenario
            await wait_until(lambda: healthy(group, 3) and not
                             set(killed) & {p.pid for p in group.processes}, 10)
            await load.more(20)
        finally:
            await load.stop()
        assert len(killed) >= 8
        assert load.failures == []
        assert not set(killed) & {p.pid for p in group.processes}
        assert group.crashes >= len(killed)


async def test_kill_9_preloader_under_load_then_a_new_one_forks_the_replacement():
    app = {"name": "app", "min_instances": 2, "max_instances": 2}
    async with running([app], max_pool_size=2) as server:
        group = server.pool.groups["app"]
        old = group.spawner.preloader
        assert old is not None and old.state == "ready"
        old_pid, starts = old.pid, group.spawner.preloader_starts
        load = Load(server, clients=4)
        try:
            await load.more(20)
            os.kill(old_pid, signal.SIGKILL)
            await wait_until(lambda: old.state == "gone")
            await load.more(100)  # the forked workers outlive their preloader
            assert healthy(group, 2)
            assert group.spawner.preloader_starts == starts
            # Now a spawn is needed: a new preloader starts and forks the replacement.
            victim = group.processes[0].pid
            os.kill(victim, signal.SIGKILL)
            await wait_until(lambda: healthy(group, 2)
                             and victim not in {p.pid for p in group.processes}, 15)
            await load.more(20)
        finally:
            await load.stop()
        assert load.failures == []
        new = group.spawner.preloader
        assert group.spawner.preloader_starts == starts + 1
        assert new is not old and new.state == "ready" and new.pid != old_pid
        replacement = [p for p in group.processes if p.worker.ppid != old_pid]
        assert len(replacement) == 1 and replacement[0].worker.ppid == new.pid


async def test_app_crashing_on_a_request_fails_only_that_request():
    """README "Failures": a worker dying before its first response byte → the request is
    retried once on another worker if idempotent, else 502. /crash kills every worker
    that takes it, so a GET costs two workers and still gets 502; a POST costs one.
    (No pipelining: a load request sent to the crashing worker behind /crash would be
    retried too, and the counts below are those of /crash; see test_pipelining.py.)"""
    app = {"name": "crashy", "root": str(CRASHY_APP), "min_instances": 3,
           "max_instances": 3, "pipeline_window": 0}
    async with running([app], max_pool_size=3) as server:
        group = server.pool.groups["crashy"]
        load = Load(server, clients=2)
        try:
            await load.more(20)
            status, _, body = await get(server, "/crash", method="POST", data=b"x")
            assert status == 502 and b"failed before responding" in body
            assert server.proxy.stats.retries == 0
            await wait_until(lambda: group.crashes == 1 and healthy(group, 3))
            status, _, body = await get(server, "/crash")
            assert status == 502 and b"failed before responding" in body
            assert server.proxy.stats.retries == 1
            await wait_until(lambda: group.crashes == 3 and healthy(group, 3))
            await load.more(20)
        finally:
            await load.stop()
        assert load.failures == []
        assert server.proxy.stats.errors_502 == 2
        assert group.crashes == 3


@pytest.mark.parametrize("method", ["smart", "direct"])
async def test_import_failure_backs_off_without_a_spawn_storm(tmp_path, method):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "app.py").write_text("raise ImportError('no module named totally_missing')\n")
    app = {"name": "broken", "root": str(broken), "min_instances": 0,
           "spawn_method": method}
    async with running([app]) as server:
        group = server.pool.groups["broken"]
        statuses = []
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                async with session.get(server.url + "/") as response:
                    statuses.append(response.status)
                    await response.read()
                await asyncio.sleep(0.05)
        attempts = (group.spawner.preloader_starts if method == "smart"
                    else group.spawn_failures)
        assert set(statuses) == {500} and len(statuses) >= 40
        # 0.5, 1, 2, 4 s apart: about four tries in five seconds, never one per request.
        assert 2 <= attempts <= 5, attempts
        assert group.spawn_failures == attempts and not group.processes


async def _hold_slow_clients(server, heads: int, bodies: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(heads):
        _, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow")
        writers.append(writer)
    for _ in range(bodies):
        _, writer = await asyncio.open_connection(*server.address)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                     + b"0123456789")
        writers.append(writer)
    return writers


async def _p99_of_gets(session, url: str, count: int) -> tuple[float, list[str]]:
    latencies, failures = [], []
    for _ in range(count):
        started = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
            if response.status != 200:
                failures.append(str(response.status))
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    return latencies[int(0.99 * (len(latencies) - 1))], failures


async def test_slow_clients_hold_no_worker_and_do_not_slow_normal_traffic():
    app = {"name": "app", "min_instances": 1, "max_instances": 1}
    async with running([app], client_header_timeout=60, client_body_timeout=60) as server:
        process = server.pool.groups["app"].processes[0]
        async with aiohttp.ClientSession() as session:
            url = server.url + "/"
            await _p99_of_gets(session, url, 30)  # warm up
            quiet, failures = await _p99_of_gets(session, url, 300)
            assert failures == []
            writers = await _hold_slow_clients(server, heads=50, bodies=20)
            try:
                await wait_until(lambda: len(server.proxy.connections) >= 71)
                loaded, failures = await _p99_of_gets(session, url, 300)
                assert failures == []
                # Every slow client is still connected and none holds the worker.
                assert len(server.proxy.connections) >= 71
                assert process.sessions == 0
                assert process.processed == 630  # the normal requests, nothing else
            finally:
                for writer in writers:
                    writer.close()
        assert loaded <= 2 * quiet + 0.005, (quiet, loaded)
