"""The pool's decisions (spawn, stop, make room, back off, pipeline) with in-memory workers.

These pin down what the pool decides, fast; the real-process tests (test_proxy, test_faults,
test_refork, test_pipelining) check that the decisions work with real workers and sockets.
A fake worker here is only a pid, a concurrency and an exit future.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.serving import config_text
from tui_passenger.config import AppConfig, parse_config
from tui_passenger.engine import ExitStatus, SpawnError
from tui_passenger.pool import Group, Pool, PoolProcess
from tui_passenger.pool.events import (
    Crashed,
    Draining,
    PoolEvent,
    Spawned,
    SpawnFailed,
    Stopping,
)
from tui_passenger.pool.group import PIPELINE_STREAK, READY, STOPPING

PIDS = itertools.count(100_000)


class FakeWorker:
    """Stands for a worker process: what the pool reads of one, and an exit it can cause."""

    def __init__(self, app: str, concurrency: int, interface: str) -> None:
        self.app = app
        self.pid = next(PIDS)
        self.ppid = 1
        self.concurrency = concurrency
        self.interface = interface
        self.spawn_method = "direct"
        self.spawn_duration = 0.001
        self.lost_threads: tuple[str, ...] = ()
        self.own_fds: frozenset[int] = frozenset()
        self.generation = 0
        self.socket_path = None
        self.exit_was_requested = False
        self.exited: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    def exit(self, status: ExitStatus) -> None:
        if not self.exited.done():
            self.exited.set_result(status)

    async def stop(self, timeout: float = 30.0) -> ExitStatus:
        self.exit_was_requested = True
        self.exit(ExitStatus(code=0))
        return await self.exited

    async def kill(self) -> ExitStatus:
        self.exit_was_requested = True
        self.exit(ExitStatus(signal=9))
        return await self.exited


class FakeSpawner:
    """Spawns FakeWorkers; ``gate`` holds spawns back, ``failures`` makes the next ones fail."""

    method = "direct"

    def __init__(self, app: AppConfig) -> None:
        self.app = app
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures = 0
        self.concurrency = app.concurrency or 1
        self.interface = app.interface if app.interface != "auto" else "wsgi"
        self.numbers = itertools.count(1)  # worker numbers, handed on to the next spawner

    async def spawn(self) -> FakeWorker:
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise SpawnError(self.app.name, "app", "it does not start")
        return FakeWorker(self.app.name, self.concurrency, self.interface)

    async def prepare(self) -> None:
        pass

    async def close(self) -> None:
        pass


def fake_spawner(app: AppConfig, socket_dir: Path, method: str | None = None, *,
                 on_output: Any = None) -> FakeSpawner:
    return FakeSpawner(app)


class Fixture:
    """A pool of fake workers and the events it emitted."""

    def __init__(self, pool: Pool, events: list[PoolEvent]) -> None:
        self.pool = pool
        self.events = events

    def group(self, name: str = "app") -> Group:
        return self.pool.groups[name]

    def spawner(self, name: str = "app") -> FakeSpawner:
        spawner = self.group(name).spawner
        assert isinstance(spawner, FakeSpawner)
        return spawner

    def of(self, kind: type[PoolEvent]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
async def make_pool() -> AsyncIterator[Callable[..., Any]]:
    made: list[Pool] = []

    async def make(*apps: dict[str, object], start: bool = True, **server: object) -> Fixture:
        # Each app on a path of its own (the config refuses two apps on "/").
        apps = tuple({"base_uri": f"/{app['name']}", **app} for app in apps)
        config = parse_config(config_text(server, list(apps) or [{"name": "app"}]),
                              path="test.toml")
        events: list[PoolEvent] = []
        pool = Pool(config, Path("/nonexistent"), on_event=events.append,
                    spawner_factory=fake_spawner)
        made.append(pool)
        if start:
            pool.start()
            await pool.wait_started(1.0)
        return Fixture(pool, events)

    yield make
    for pool in made:
        await pool.close(0.0)


async def settle() -> None:
    """Let the spawn and stop tasks the pool started run to their end."""
    for _ in range(10):
        await asyncio.sleep(0)


def ready(group: Group) -> list[PoolProcess]:
    return [p for p in group.processes if p.state is READY]


class Waiting:
    """Callbacks of queued requests: what each got."""

    def __init__(self) -> None:
        self.got: list[tuple[PoolProcess | None, BaseException | None]] = []

    def __call__(self, process: PoolProcess | None, error: BaseException | None) -> None:
        self.got.append((process, error))


# -- spawning ----------------------------------------------------------------------------

async def test_spawns_each_apps_minimum_at_start(make_pool):
    fx = await make_pool({"name": "a", "min_instances": 2}, {"name": "b", "min_instances": 1})
    assert len(ready(fx.group("a"))) == 2 and len(ready(fx.group("b"))) == 1
    assert fx.group("a").spawned == 2 and len(fx.of(Spawned)) == 3
    assert fx.pool.total() == 3


async def test_queued_requests_spawn_one_process_per_concurrency_waiters(make_pool):
    fx = await make_pool({"name": "app", "min_instances": 0, "interface": "asgi",
                          "concurrency": 4}, max_pool_size=10)
    fx.spawner().gate.clear()
    waiting = Waiting()
    for _ in range(9):
        fx.pool.enqueue(fx.group(), waiting)
    assert fx.group().spawning == 3  # ceil(9 / 4)
    fx.spawner().gate.set()
    await settle()
    assert len(ready(fx.group())) == 3 and fx.group().spawning == 0
    assert len(waiting.got) == 9 and all(p is not None for p, _ in waiting.got)
    assert max(p.sessions for p in fx.group().processes) == 4


async def test_queued_wsgi_requests_spawn_one_each_up_to_max_instances(make_pool):
    fx = await make_pool({"name": "app", "min_instances": 0, "max_instances": 2})
    fx.spawner().gate.clear()
    for _ in range(5):
        fx.pool.enqueue(fx.group(), Waiting())
    assert fx.group().spawning == 2


async def test_a_full_pool_makes_room_by_stopping_another_apps_idle_process(make_pool):
    fx = await make_pool({"name": "a", "min_instances": 2}, {"name": "b", "min_instances": 0},
                         max_pool_size=2)
    a = fx.group("a")
    a.min_instances = 1  # one of its two is above its minimum: that one may make room
    longest_idle = min(a.processes, key=lambda p: p.last_used)
    waiting = Waiting()
    fx.pool.enqueue(fx.group("b"), waiting)
    assert longest_idle.state is STOPPING and longest_idle.stop_reason == "making room for b"
    await settle()
    assert [p.group.name for p, _ in waiting.got] == ["b"]
    assert len(a.processes) == 1 and fx.pool.total() == 2


async def test_making_room_never_takes_an_app_below_its_minimum(make_pool):
    fx = await make_pool({"name": "a", "min_instances": 2}, {"name": "b", "min_instances": 0},
                         max_pool_size=2)
    a = fx.group("a")
    waiting = Waiting()
    fx.pool.enqueue(fx.group("b"), waiting)
    await settle()
    assert len(ready(a)) == 2 and not fx.of(Stopping)
    assert fx.group("b").spawning == 0 and fx.pool.room_for(fx.group("b")) == 0
    # No place can ever free up: b's request is told so (503) rather than left waiting.
    assert [p for p, _ in waiting.got] == [None]
    assert str(waiting.got[0][1]) == ("b: no worker can start: the pool is full (2 of "
                                      "max_pool_size 2) with every app at its min_instances")


async def test_an_app_whose_spawns_fail_evicts_nothing(make_pool):
    fx = await make_pool({"name": "ok", "min_instances": 2},
                         {"name": "broken", "min_instances": 0}, max_pool_size=2)
    ok, broken = fx.group("ok"), fx.group("broken")
    ok.min_instances = 1  # its second worker is above the minimum: room, in principle
    fx.spawner("broken").failures = 100
    assert fx.pool.room_for(broken) == 1
    fx.pool.enqueue(broken, Waiting())  # not known to fail yet: it makes room, once
    await settle()
    assert broken.spawn_failures == 1 and len(fx.of(Stopping)) == 1
    fx.pool.scale(ok, 2)  # the free place back to ok: the pool is full again
    await settle()
    ok.min_instances = 1
    assert len(ready(ok)) == 2 and fx.pool.room_for(broken) == 0
    waiting = Waiting()
    for _ in range(5):
        broken.backoff.until = 0.0  # each time the backoff is over, a burst of requests
        for _ in range(3):
            with contextlib.suppress(SpawnError):
                if fx.pool.try_checkout(broken) is None:
                    fx.pool.enqueue(broken, waiting)
        await settle()
    assert len(fx.of(Stopping)) == 1 and len(ready(ok)) == 2
    # No room, no spawn to wait for: the queued requests get the app's spawn error.
    assert len(waiting.got) == 15 and all(isinstance(e, SpawnError) for _, e in waiting.got)


async def test_an_app_below_its_minimum_takes_an_idle_surplus_process(make_pool):
    fx = await make_pool({"name": "a", "min_instances": 2}, {"name": "b", "min_instances": 0},
                         max_pool_size=2)
    fx.group("a").min_instances = 1
    b = fx.group("b")
    assert fx.pool.room_for(b) == 1
    fx.pool.scale(b, 1)
    await settle()
    assert len(ready(b)) == 1 and len(ready(fx.group("a"))) == 1
    assert [e.reason for e in fx.of(Stopping)] == ["making room for b"]


async def test_a_full_pool_without_idle_processes_keeps_requests_queued(make_pool):
    fx = await make_pool({"name": "a", "min_instances": 1}, {"name": "b", "min_instances": 0},
                         max_pool_size=1)
    fx.group("a").min_instances = 0  # else its one worker could never make room
    busy = fx.pool.try_checkout(fx.group("a"))
    waiting = Waiting()
    fx.pool.enqueue(fx.group("b"), waiting)
    assert busy is not None and busy.state is READY and fx.group("b").spawning == 0
    fx.pool.release(busy)  # now idle: it makes room for b
    await settle()
    assert busy.state is STOPPING and len(waiting.got) == 1 and waiting.got[0][0] is not None


# -- spawn failures ----------------------------------------------------------------------

async def test_spawn_failures_back_off_and_fail_the_waiters(make_pool):
    fx = await make_pool({"name": "app", "min_instances": 0})
    group = fx.group()
    fx.spawner().failures = 2
    waiting = Waiting()
    fx.pool.enqueue(group, waiting)
    await settle()
    (failed,) = fx.of(SpawnFailed)
    assert failed.backoff == 0.5 and group.spawn_failures == 1
    assert waiting.got and waiting.got[0][0] is None
    assert isinstance(waiting.got[0][1], SpawnError)
    assert group.backoff_until > time.monotonic()
    # While it backs off with no process, a request gets the error at once, no spawn.
    with pytest.raises(SpawnError):
        fx.pool.try_checkout(group)
    # Raised again and again (one per request), it keeps no more than one raise's frames:
    # a broken app under traffic must not hold every refused request in memory.
    for _ in range(50):
        with pytest.raises(SpawnError) as raised:
            fx.pool.try_checkout(group)
    depth, tb = 0, raised.value.__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    assert depth <= 3
    fx.pool.enqueue(group, Waiting())
    assert group.spawning == 0
    group.backoff.until = 0.0  # the backoff is over
    fx.pool.reconcile()
    await settle()
    assert [e.backoff for e in fx.of(SpawnFailed)] == [0.5, 1.0]
    group.backoff.until = 0.0
    last = Waiting()
    fx.pool.enqueue(group, last)
    await settle()
    assert len(ready(group)) == 1 and last.got == [(group.processes[0], None)]
    assert group.spawn_failures == 0 and group.last_error is None


# -- stopping ----------------------------------------------------------------------------

async def test_scaling_down_stops_idle_processes_only(make_pool):
    fx = await make_pool({"name": "app", "min_instances": 3})
    group = fx.group()
    busy = fx.pool.try_checkout(group)
    fx.pool.scale(group, 0)
    await settle()
    assert group.processes == [busy] and group.min_instances == 0
    assert [e.reason for e in fx.of(Stopping)] == ["scaled down", "scaled down"]
    fx.pool.scale(group, 2)
    await settle()
    assert len(ready(group)) == 2


async def test_idle_processes_stop_after_pool_idle_time_down_to_the_minimum(make_pool):
    fx = await make_pool({"name": "app", "min_instances": 1, "pool_idle_time": 60})
    group = fx.group()
    busy = [fx.pool.try_checkout(group)]
    waiting = Waiting()
    for _ in range(2):
        fx.pool.enqueue(group, waiting)
    await settle()
    busy += [process for process, _ in waiting.got]
    for process in busy:
        assert process is not None
        fx.pool.release(process)
    assert len(ready(group)) == 3
    for process in group.processes:
        process.last_used -= 30
    fx.pool.shutdown_idle()
    assert all(p.state is READY for p in group.processes)  # not idle long enough
    for process in group.processes:
        process.last_used -= 31
    fx.pool.shutdown_idle()
    await settle()
    assert len(ready(group)) == 1
    assert [e.reason for e in fx.of(Stopping)] == ["idle for 60 s", "idle for 60 s"]


async def test_max_requests_drains_and_replaces_the_worker(make_pool):
    fx = await make_pool({"name": "app", "min_instances": 1, "max_requests": 2})
    group = fx.group()
    (first,) = group.processes
    for _ in range(2):
        assert fx.pool.try_checkout(group) is first
        fx.pool.release(first)
    await settle()
    assert [e.reason for e in fx.of(Draining)] == ["max_requests reached"]
    assert first not in group.processes and len(ready(group)) == 1


async def test_a_crashed_worker_is_counted_and_replaced(make_pool):
    fx = await make_pool({"name": "app", "min_instances": 2})
    group = fx.group()
    victim = group.processes[0]
    victim.worker.exit(ExitStatus(signal=9))
    await settle()
    assert group.crashes == 1 and [e.process for e in fx.of(Crashed)] == [victim]
    assert victim not in group.processes and len(ready(group)) == 2


async def test_a_rolling_restart_readies_each_replacement_before_its_old_one_drains(make_pool):
    fx = await make_pool({"name": "app", "min_instances": 2}, max_pool_size=2)
    group = fx.group()
    old = set(group.processes)
    order: list[tuple[str, int]] = []
    fx.pool.on_event = lambda e: order.append((type(e).__name__, fx.pool.total()))
    assert await fx.pool.restart(group) == 2
    steps = [step for step in order if step[0] in ("Spawned", "Draining", "Stopping")]
    # One over max_pool_size while each replacement is up and its old one not yet stopped:
    # reconcile spawns the surge whatever the limits, for that moment.
    assert steps == [("Spawned", 3), ("Draining", 3), ("Stopping", 2)] * 2
    assert order[-1][0] == "Restarted"
    assert not old & set(group.processes) and len(ready(group)) == 2


# -- sessions and pipelining -------------------------------------------------------------

async def test_a_released_slot_goes_to_the_oldest_waiter(make_pool):
    fx = await make_pool({"name": "app", "min_instances": 1, "max_instances": 1})
    group = fx.group()
    process = fx.pool.try_checkout(group)
    assert process is not None and fx.pool.try_checkout(group) is None
    first, second = Waiting(), Waiting()
    fx.pool.enqueue(group, first)
    fx.pool.enqueue(group, second)
    fx.pool.release(process)
    assert first.got == [(process, None)] and not second.got and process.sessions == 1
    assert process.processed == 1


def pipelining_on(fx: Fixture) -> PoolProcess:
    """Make the app's streak of fast requests; returns its only worker, now busy."""
    group = fx.group()
    process = group.processes[0]
    for _ in range(PIPELINE_STREAK):
        assert fx.pool.try_checkout(group) is process
        fx.pool.release(process)
    assert group.may_pipeline(time.monotonic())
    assert fx.pool.try_checkout(group) is process
    return process


class Pipelined:
    """A request pipelined to a busy worker; records being taken back."""

    reclaimed = False

    def reclaim(self) -> None:
        self.reclaimed = True


async def test_pipelining_only_after_a_fast_streak_and_when_no_worker_can_be_added(make_pool):
    fx = await make_pool({"name": "app", "min_instances": 1, "max_instances": 2,
                          "pipeline_window": 5.0})
    group = fx.group()
    process = group.processes[0]
    assert fx.pool.try_checkout(group) is process
    assert fx.pool.try_pipeline(group) is None  # no streak yet
    fx.pool.release(process)
    process = pipelining_on(fx)
    assert fx.pool.try_pipeline(group) is None  # a second worker can still be spawned
    fx.pool.scale(group, 2)
    await settle()
    other = fx.pool.try_checkout(group)
    assert other is not None and other is not process
    assert fx.pool.try_pipeline(group) is process  # the one running longest
    assert process.sessions == 2 and fx.pool.try_pipeline(group) is other
    assert fx.pool.try_pipeline(group) is None  # one extra request each


async def test_no_pipelining_with_requests_queued_or_after_a_slow_request(make_pool):
    fx = await make_pool({"name": "app", "min_instances": 1, "max_instances": 1,
                          "pipeline_window": 5.0})
    group = fx.group()
    process = pipelining_on(fx)
    waiter = fx.pool.enqueue(group, Waiting())
    assert fx.pool.try_pipeline(group) is None
    fx.pool.withdraw(group, waiter)
    process.busy_since -= 6  # the request running now has taken longer than the window
    fx.pool.release(process)
    assert not group.may_pipeline(time.monotonic())
    assert fx.pool.try_checkout(group) is process and fx.pool.try_pipeline(group) is None


async def test_requests_pipelined_behind_a_slow_one_are_taken_back(make_pool):
    fx = await make_pool({"name": "app", "min_instances": 1, "max_instances": 1,
                          "pipeline_window": 5.0})
    group = fx.group()
    process = pipelining_on(fx)
    assert fx.pool.try_pipeline(group) is process and process.sessions == 2
    stuck = Pipelined()
    fx.pool.pipelined(process, stuck)
    assert group.pipelined == 1 and list(process.queued) == [stuck]
    fx.pool.pipelining.reclaim_stuck(group)
    assert not stuck.reclaimed  # the request ahead is still within the window
    process.busy_since -= 6
    fx.pool.pipelining.reclaim_stuck(group)
    assert stuck.reclaimed and group.reclaimed == 1 and process.sessions == 1
    assert not process.queued and not group.may_pipeline(time.monotonic())


async def test_a_pipelined_request_that_started_is_not_taken_back(make_pool):
    fx = await make_pool({"name": "app", "min_instances": 1, "max_instances": 1,
                          "pipeline_window": 5.0})
    group = fx.group()
    process = pipelining_on(fx)
    assert fx.pool.try_pipeline(group) is process
    started = Pipelined()
    fx.pool.pipelined(process, started)
    fx.pool.unqueue(process, started)
    process.busy_since -= 6
    fx.pool.pipelining.reclaim_stuck(group)
    assert not started.reclaimed and group.reclaimed == 0 and process.sessions == 2
