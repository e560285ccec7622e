"""Refork against a real server: a warmed worker becomes the preloader ("mold") of the next
generation, by request count and on demand, with no failed request and no process left."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import assert_no_children
from tests.serving import Load, get, running, wait_until
from tests.test_admin import ctl
from tui_passenger.pool.events import Molded, PoolEvent
from tui_passenger.status import snapshot

PROBE = str(Path(__file__).resolve().parent / "apps" / "refork_probe")


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    assert_no_children()


def probe_app(**settings: object) -> dict:
    return {"name": "app", "root": PROBE, "min_instances": 3, "max_instances": 4, **settings}


def generation_in_place(group, generation: int, count: int) -> bool:
    """At least ``count`` ready workers, all forked by the mold of ``generation``, none spawning."""
    preloader = group.spawner.preloader
    ready = [p for p in group.processes if p.state == "ready"]
    return (preloader is not None and preloader.generation == generation
            and preloader.state == "ready" and group.spawning == 0 and not group.reforking
            and len(ready) >= count
            and all(p.worker.generation == generation and p.worker.ppid == preloader.pid
                    for p in group.processes))


async def test_refork_after_counts_promote_a_worker_each_time_under_load():
    app = probe_app(refork_after=[30, 80])
    async with running([app], max_pool_size=6) as server:
        group = server.pool.groups["app"]
        first_preloader = group.spawner.preloader.pid
        load = Load(server, clients=4)
        try:
            await wait_until(lambda: generation_in_place(group, 1, 3) or
                             group.spawner.generation == 2, 30)
            mold1 = group.spawner.previous[0].pid if group.spawner.previous else None
            await wait_until(lambda: generation_in_place(group, 2, 3), 30)
            await load.more(50)
        finally:
            await load.stop()
        assert load.failures == []
        assert group.spawner.reforks == 2
        assert group.refork_next == 0  # both counts used: no more automatic reforks
        mold = group.spawner.preloader
        assert mold.mold is not None and mold.pid != first_preloader
        # Earlier generations' preloaders are gone once their workers were replaced.
        assert group.spawner.previous == []
        for pid in (first_preloader, mold1):
            if pid is not None:
                await wait_until(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 10)
        state = json.loads((await ctl(server, "status", "--json"))[1])
        (entry,) = state["apps"]
        assert entry["generation"] == 2 and entry["mold"] == mold.pid
        assert entry["preloader"]["mold"] is True and entry["reforks"] == 2
        assert {p["generation"] for p in entry["processes"]} == {2}
        assert {p["ppid"] for p in entry["processes"]} == {mold.pid}


async def test_ctl_refork_children_start_warm_and_run_hooks_as_forked():
    async with running([probe_app(min_instances=2, max_instances=2)], max_pool_size=4) as server:
        group = server.pool.groups["app"]
        warm_up = Load(server, clients=3)
        try:
            await warm_up.more(60)
        finally:
            await warm_up.stop()
        # No traffic while the CLI starts, so the busiest worker stays the busiest.
        busiest = max(group.processes, key=lambda p: p.processed)
        code, out, err = await ctl(server, "ctl", "refork", "app")
        assert code == 0, err
        load = Load(server, clients=3)
        try:
            await load.more(30)
        finally:
            await load.stop()
        assert warm_up.failures == [] and load.failures == []
        mold = group.spawner.preloader
        assert mold.pid == busiest.pid  # the worker that served most became the mold
        # A worker ran under SCHED_BATCH (worker_scheduling); as a preloader it is normal again.
        assert os.sched_getscheduler(mold.pid) == os.SCHED_OTHER
        assert {os.sched_getscheduler(p.pid) for p in group.processes} == {os.SCHED_BATCH}
        assert f"worker {mold.pid} is the mold of generation 1" in out
        await wait_until(lambda: generation_in_place(group, 1, 2), 10)
        _, _, body = await get(server, "/")
        answer = json.loads(body)
        assert answer["ppid"] == mold.pid
        # The cache the mold filled while it was a worker came along with the fork.
        assert answer["cache"] > busiest.processed // 2
        events = [tuple(h) for h in answer["hooks"]]
        assert ("starting_mold", mold.pid, None) in events
        assert ("starting_worker_process", answer["pid"], True) in events


async def test_refork_of_an_asgi_app_runs_lifespan_startup_in_each_new_worker():
    app = {"name": "asgi", "root": PROBE, "entry": "asgi:app", "min_instances": 2}
    async with running([app], max_pool_size=4) as server:
        group = server.pool.groups["asgi"]
        load = Load(server, clients=3)
        try:
            await load.more(40)
            replaced = await server.pool.refork(group)
            await load.more(40)
        finally:
            await load.stop()
        assert load.failures == [] and replaced >= 1
        assert group.last_refork_error is None
        await wait_until(lambda: generation_in_place(group, 1, 2), 10)
        _, _, body = await get(server, "/")
        answer = json.loads(body)
        mold = group.spawner.preloader.pid
        # The mold ran startup as a worker (and shutdown when it stopped serving); its
        # child runs startup again, in its own event loop.
        assert answer["ppid"] == mold and answer["startups"] == [mold, answer["pid"]]


async def test_the_chosen_worker_finishes_its_request_first_and_spawns_go_on_meanwhile():
    async with running([probe_app(min_instances=2)], max_pool_size=6) as server:
        group = server.pool.groups["app"]
        for _ in range(10):  # sequential: the first worker takes them all (first on a tie)
            await get(server, "/")
        busiest = max(group.processes, key=lambda p: p.processed)
        slow = asyncio.ensure_future(get(server, "/slow?1.5"))
        await wait_until(lambda: busiest.sessions == 1)
        refork = server.pool.refork(group)
        await wait_until(lambda: busiest.state == "molding")
        load = Load(server, clients=3)
        try:
            await load.more(20)  # served by the others while the chosen one finishes
            assert not refork.done() and busiest.sessions == 1
            # Its place was filled from the current preloader: spawns are not held up.
            await wait_until(lambda: len([p for p in group.processes
                                          if p.state == "ready"]) >= 2)
            status, _, body = await slow
            assert status == 200 and json.loads(body)["pid"] == busiest.pid
            await refork
            await load.more(20)
        finally:
            await load.stop()
        assert load.failures == [] and group.last_refork_error is None
        assert group.spawner.preloader.pid == busiest.pid
        await wait_until(lambda: generation_in_place(group, 1, 2), 10)


async def busy_while_molding(server, group, seconds: float):
    """Make the busiest worker the refork's choice while it serves a slow request."""
    for _ in range(5):  # sequential: the first worker takes them all (first on a tie)
        await get(server, "/")
    busiest = max(group.processes, key=lambda p: p.processed)
    slow = asyncio.ensure_future(get(server, f"/slow?{seconds}"))
    await wait_until(lambda: busiest.sessions == 1)
    refork = server.pool.refork(group)
    await wait_until(lambda: busiest.state == "molding")
    return busiest, slow, refork


async def test_a_worker_still_busy_after_shutdown_timeout_goes_back_to_work():
    async with running([probe_app(min_instances=2)], max_pool_size=6,
                       shutdown_timeout=0.5) as server:
        group = server.pool.groups["app"]
        busiest, slow, refork = await busy_while_molding(server, group, 2)
        assert await refork == 0
        assert "still busy after 0.5 s" in group.last_refork_error
        assert busiest.state == "ready" and group.spawner.reforks == 0
        assert (await slow)[0] == 200
        await wait_until(lambda: busiest.sessions == 0)
        for _ in range(3):  # first on a tie again: it takes requests
            status, _, body = await get(server, "/")
            assert status == 200 and json.loads(body)["pid"] == busiest.pid


async def test_a_spawn_method_switch_while_molding_gives_the_refork_up():
    async with running([probe_app(min_instances=2)], max_pool_size=6) as server:
        group = server.pool.groups["app"]
        busiest, slow, refork = await busy_while_molding(server, group, 1)
        switch = server.pool.set_spawn_method(group, "direct")
        assert await refork == 0 and (await slow)[0] == 200
        assert group.last_refork_error == "the spawn method changed meanwhile"
        await switch
        await wait_until(lambda: {p.worker.spawn_method for p in group.processes} == {"direct"}
                         and len(group.processes) == 2, 30)
        assert (await get(server, "/"))[0] == 200


async def test_shutdown_in_the_middle_of_a_refork_leaves_nothing_behind():
    async with running([probe_app(min_instances=2)], max_pool_size=6) as server:
        group = server.pool.groups["app"]
        _, slow, refork = await busy_while_molding(server, group, 1)
        await server.stop()  # drains the slow request, then stops whatever refork got to
        status, _, _ = await slow
        assert status == 200 and refork.done()
    # the autouse fixture checks that no worker, mold or preloader is left


async def test_a_failing_mold_falls_back_to_the_previous_preloader():
    app = probe_app(min_instances=2, env={"PROBE_MOLD_HOOK": "fail"})
    async with running([app], max_pool_size=4) as server:
        group = server.pool.groups["app"]
        preloader = group.spawner.preloader
        load = Load(server, clients=3)
        try:
            await load.more(30)
            code, _, err = await ctl(server, "ctl", "refork", "app")
            await load.more(30)
        finally:
            await load.stop()
        assert code == 1 and "mold hook refuses" in err, err
        assert load.failures == []
        assert group.spawner.preloader is preloader and preloader.state == "ready"
        server.pool.scale(group, 3)
        await wait_until(lambda: generation_in_place(group, 0, 3), 10)


async def test_a_mold_killed_mid_refork_falls_back_and_nothing_is_lost():
    killed: list[int] = []

    def on_event(event: PoolEvent) -> None:
        if isinstance(event, Molded):  # the mold is ready; its generation is not in place yet
            killed.append(event.process.pid)
            os.kill(event.process.pid, signal.SIGKILL)

    async with running([probe_app()], max_pool_size=6,
                       server_options={"on_event": on_event}) as server:
        group = server.pool.groups["app"]
        previous = group.spawner.preloader
        load = Load(server, clients=4)
        try:
            await load.more(30)
            await server.pool.refork(group)
            await wait_until(lambda: group.spawning == 0 and len(
                [p for p in group.processes if p.state == "ready"]) >= 3, 10)
            await load.more(50)
        finally:
            await load.stop()
        assert killed and load.failures == []
        assert group.spawner.preloader is previous and previous.state == "ready"
        assert all(p.worker.ppid == previous.pid for p in group.processes)


async def test_after_the_mold_dies_a_fresh_preloader_takes_over():
    async with running([probe_app(min_instances=2)], max_pool_size=6) as server:
        group = server.pool.groups["app"]
        load = Load(server, clients=2)
        try:
            await load.more(20)
            await server.pool.refork(group)
            mold = group.spawner.preloader
            os.kill(mold.pid, signal.SIGKILL)
            await wait_until(lambda: mold.state == "gone", 10)
            server.pool.scale(group, 3)
            await wait_until(lambda: group.spawning == 0 and len(
                [p for p in group.processes if p.state == "ready"]) == 3, 20)
            await load.more(20)
        finally:
            await load.stop()
        assert load.failures == []
        fresh = group.spawner.preloader
        assert fresh.mold is None and fresh.generation == 2 and fresh.state == "ready"
        generations = sorted(p.worker.generation for p in group.processes)
        assert generations[-1] == 2 and generations.count(1) >= 2  # the mold's children live on
        code, _, err = await ctl(server, "ctl", "spawn-method", "app", "direct")
        assert code == 0, err
        code, _, err = await ctl(server, "ctl", "refork", "app")
        assert code == 1 and "refork needs smart spawning" in err, err


async def test_fd_warning_for_a_connection_a_request_left_open_in_the_mold():
    accepted: list[asyncio.StreamWriter] = []

    async def on_client(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    listener = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with running([probe_app(min_instances=1, max_instances=2)],
                           max_pool_size=3) as server:
            group = server.pool.groups["app"]
            status, _, body = await get(server, f"/connect?127.0.0.1:{port}")
            assert status == 200
            await server.pool.refork(group)
            server.pool.scale(group, 2)
            await wait_until(lambda: generation_in_place(group, 1, 2), 10)
            await server.sample_now()
            state = snapshot(server).to_json()
        (app,) = state["apps"]
        assert app["preloader"]["mold"] is True
        for process in app["processes"]:
            warnings = " ".join(process["warnings"])
            assert "handed on by refork" in warnings and "starting_mold" in warnings, warnings
    finally:
        for writer in accepted:
            writer.close()
        listener.close()
        await listener.wait_closed()
