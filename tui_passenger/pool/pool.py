"""The pool: every app's group, the global process limit, requests in and out, and the
carrying out of what the one reconciliation loop decides.

Everything that changes what should run (a request that found no free process, a finished
request, a timer, an operator's command) changes desired state and calls
:meth:`Pool.reconcile` (pool/decisions.py), which decides what to spawn and what to shut
down (its docstring lists the orders about one given process that are carried out
elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from tui_passenger.config import AppConfig, Config
from tui_passenger.engine import OutputSink, SpawnError, make_spawner
from tui_passenger.pool import events, reconfigure
from tui_passenger.pool.decisions import Decisions
from tui_passenger.pool.events import EventSink, PoolEvent
from tui_passenger.pool.group import Alarm, Group, SpawnerFactory
from tui_passenger.pool.live import LiveOperations
from tui_passenger.pool.pipelining import Pipelining
from tui_passenger.pool.process import DRAINING, MOLD, READY, STOPPING, PoolProcess
from tui_passenger.pool.triggers import watch_restart_triggers
from tui_passenger.pool.waiters import PoolClosed, QueueFull, Waiter, WaiterCallback, fail_waiters

__all__ = ["EventSink", "Pool", "PoolClosed", "QueueFull", "Waiter", "WaiterCallback"]

log = logging.getLogger("tui_passenger.pool")
T = TypeVar("T")


class Pool(Decisions):
    """All groups, and the decisions about which processes run.

    A worker's session count changes only through PoolProcess.checkout/checkin: taken by
    try_checkout, try_pipeline and the hand-over to waiters, given back by release and by
    the take-back of pipelined requests. Pipelining (:class:`Pipelining`) and the live
    operations (:class:`LiveOperations`) are objects of their own.
    """

    #: Pipelining, called by the proxy: these are the Pipelining object's own methods
    #: (bound in __init__, so that a request costs no extra call). See Pipelining.
    try_pipeline: Callable[[Group], PoolProcess | None]
    pipelined: Callable[[PoolProcess, Any], None]
    #: ``unqueue(process, request)``: request no longer waits in process's pipelined queue
    #: (it started, or it left).
    unqueue: Callable[[PoolProcess, Any], None]

    def __init__(self, config: Config, socket_dir: Path, *, on_output: OutputSink | None = None,
                 on_event: EventSink | None = None,
                 spawner_factory: SpawnerFactory = make_spawner) -> None:
        self.config = config
        self.max_pool_size = config.server.max_pool_size
        self._make_group: Callable[[AppConfig], Group] = lambda app: Group(
            app, socket_dir, on_output, spawner_factory)
        self.groups = {app.name: self._make_group(app) for app in config.apps}
        #: Apps removed by a configuration reload whose workers are still on their way out
        #: (counted against max_pool_size until they are gone).
        self.retiring: set[Group] = set()
        self.on_event = on_event
        self.closing = False
        self.pipelining = Pipelining(self._full, lambda: self.closing)
        self.try_pipeline = self.pipelining.try_pipeline
        self.pipelined = self.pipelining.pipelined
        self.unqueue = self.pipelining.unqueue
        self.live = LiveOperations(self, config.server.shutdown_timeout)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._alarm = Alarm(self.reconcile)
        self._idle_due = False
        self._idle = asyncio.Event()
        self._spawns_settled = asyncio.Condition()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Spawn every app's minimum and start the idle-shutdown ticker."""
        self._ticker = asyncio.ensure_future(self._tick_forever())
        watch_restart_triggers(self.groups.values(), self.restart, self.track)
        self.reconcile()

    async def wait_started(self, timeout: float | None = None) -> None:
        """Wait until every group's first round of spawns has finished (ready or failed)."""
        async def settled() -> None:
            async with self._spawns_settled:
                await self._spawns_settled.wait_for(
                    lambda: not any(g.spawning for g in self.groups.values()))

        await asyncio.wait_for(settled(), timeout)

    async def close(self, grace: float) -> None:
        """Stop taking requests, let running ones finish (up to ``grace``), stop everything."""
        self.closing = True
        if self._ticker is not None:
            self._ticker.cancel()
        self._alarm.cancel()
        # Requests already queued are still served by the processes that are up.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._sessions_done(), grace)
        groups = [*self.groups.values(), *self.retiring]
        for group in groups:
            fail_waiters(group.waiters, PoolClosed("shutting down"))
        for task in list(self._tasks):
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        processes = [p for g in groups for p in g.processes]
        for process in processes:
            process.state = STOPPING
        # Each exit removes its process from its group (see _on_exit).
        await asyncio.gather(*(p.worker.stop(5.0) for p in processes))
        await asyncio.gather(*(g.spawner.close() for g in groups))

    async def _sessions_done(self) -> None:
        def busy() -> bool:
            return any(g.waiters and any(p.state is READY for p in g.processes)
                       or any(p.sessions or p.websockets for p in g.processes)
                       for g in self.groups.values())

        while busy():
            await self.idle_changed()

    async def idle_changed(self) -> None:
        """Wait for a request to finish or a worker to exit (while closing, or while a
        removed app's requests finish)."""
        self._idle.clear()
        await self._idle.wait()

    async def spawns_settled(self, group: Group) -> None:
        """Wait until none of ``group``'s spawns is in flight."""
        async with self._spawns_settled:
            await self._spawns_settled.wait_for(lambda: not group.spawning)

    # -- requests ------------------------------------------------------------------------

    def try_checkout(self, group: Group) -> PoolProcess | None:
        """A process of ``group`` with a free slot right now, or None (then queue).

        Raises PoolClosed while shutting down, and the group's last SpawnError while it
        has no process and is backing off after failed spawns.
        """
        if self.closing:
            raise PoolClosed("shutting down")
        if group.always_restart:  # ROOT/tmp/always_restart.txt: wait for a fresh load
            self.live.fresh_load(group)
            return None
        process = group.pick()
        if process is not None:
            # process.checkout(), without the call (once per request)
            if not process.sessions:
                process.busy_since = time.monotonic()
            process.sessions += 1
            return process
        backoff = group.backoff
        if backoff.last_error is not None and not group.processes and not group.spawning \
                and time.monotonic() < backoff.until:
            # The same error for every request: without its old traceback, else each raise
            # chains onto the last one and keeps every earlier request's frames alive.
            raise backoff.last_error.with_traceback(None)
        return None

    def enqueue(self, group: Group, callback: WaiterCallback,
                pipelinable: bool = False) -> Waiter:
        """Queue for the next free process of ``group``: ``callback(process, None)``.

        If none can come (spawn failure with no process left, shutdown), the callback gets
        ``(None, error)``: QueueFull after waiting ``max_request_queue_time`` (the group's
        queue alarm). Raises QueueFull when ``max_request_queue_size`` are waiting.
        """
        app = group.app
        if len(group.waiters) >= app.max_request_queue_size:
            raise group.queue_refusal(
                f"request queue full ({app.max_request_queue_size} waiting)")
        waiter = Waiter(callback, pipelinable, time.monotonic())
        group.waiters.append(waiter)
        if app.max_request_queue_time and not group.queue_alarm.armed:
            group.queue_alarm.at(waiter.since + app.max_request_queue_time)
        if not group.at_max() and group.wanted() > group.live_count():
            self.reconcile()  # only when this waiter is not covered by a spawn in flight
        return waiter

    @staticmethod
    def withdraw(group: Group, waiter: Waiter) -> None:
        """Take a waiter out of the queue (its client went away)."""
        waiter.cancelled = True
        with contextlib.suppress(ValueError):
            group.waiters.remove(waiter)

    def release(self, process: PoolProcess) -> None:
        """A request on ``process`` has finished."""
        process.sessions -= 1  # process.checkin(), without the call (once per request)
        process.processed += 1
        process.last_used = now = time.monotonic()
        group = process.group
        group.pipeline.ended(process, now)
        if process.max_requests and process.processed >= process.max_requests \
                and process.state is READY:
            self.drain(process, "max_requests reached")
        elif process.state is DRAINING and process.sessions == 0:
            self._stop(process)
        elif process.sessions == 0 and process.idle is not None and not process.idle.done():
            process.idle.set_result(None)  # a molding process is idle now
        rollout = group.rollout
        if rollout.refork_next and process.processed >= rollout.refork_next \
                and process.state is READY and not rollout.reforking:
            self.live.refork_after(process)
        if group.waiters:
            if process.state is READY and process.sessions <= process.worker.concurrency:
                # Only this process gained a free slot: hand it the next waiter without
                # looking over the whole group (the hot path when requests queue).
                self._hand_over(process, group, now)
            else:
                self.dispatch(group)
        elif process.sessions == 0 and len(self.groups) > 1 and any(
                g.waiters for g in self.groups.values()):
            # Another app may be waiting for room in a full pool, which this now idle
            # process can give.
            self.reconcile()
        if self.closing or self.retiring:
            self._idle.set()

    def websocket_closed(self, process: PoolProcess) -> None:
        """A WebSocket on ``process`` has closed (a stop may be waiting for it)."""
        process.websockets -= 1
        if self.closing or self.retiring:
            self._idle.set()

    def _hand_over(self, process: PoolProcess, group: Group, now: float) -> None:
        """Give ``process``'s free slots to the first waiters of ``group``; a worker that has
        just started a pipelined request gets the next one pipelined too (try_pipeline)."""
        waiters = group.waiters
        concurrency = process.worker.concurrency
        limit = self.pipelining.limit(process, group, now)
        while waiters and process.sessions < limit and process.state is READY:
            waiter = waiters[0]
            if waiter.cancelled:
                waiters.popleft()
                continue
            if process.sessions >= concurrency and not waiter.pipelinable:
                return
            waiters.popleft()
            # process.checkout() (``now`` is this moment's clock), without the call
            if not process.sessions:
                process.busy_since = now
            process.sessions += 1
            waiter.callback(process, None)

    def dispatch(self, group: Group) -> None:
        """Hand the free slots of ``group``'s processes to its waiters, oldest first."""
        while group.waiters:
            process = group.pick()
            if process is None:
                return
            waiter = group.waiters.popleft()
            if waiter.cancelled:
                continue
            process.checkout()
            waiter.callback(process, None)

    # -- orders from operators (and the proxy) -------------------------------------------

    def find(self, pid: int) -> PoolProcess | None:
        """The process with ``pid``, in any group."""
        for group in [*self.groups.values(), *self.retiring]:
            for process in group.processes:
                if process.pid == pid:
                    return process
        return None

    def scale(self, group: Group, count: int) -> None:
        """Keep ``count`` processes of ``group`` warm (its new min_instances)."""
        group.min_instances = max(0, count)
        group.trim = True  # idle ones above what it wants now stop (see reconcile)
        self.reconcile()

    def drain(self, process: PoolProcess, reason: str) -> None:
        """Take no new requests on ``process``, stop it when idle; a replacement is spawned."""
        if process.state is not READY:
            return
        process.state = DRAINING
        process.stop_reason = reason
        self.emit(events.Draining(process, reason))
        if process.sessions == 0:
            self._stop(process)
        self.reconcile()

    def kill(self, process: PoolProcess, *, force: bool = False, reason: str = "") -> None:
        """Remove one worker: drain and stop it (SIGKILL at once with ``force``).

        The pool spawns a replacement if the group falls below its minimum.
        """
        if force:
            self._stop(process, reason or "killed by operator", force=True)
        else:
            self.drain(process, reason or "stopped by operator")
        self.reconcile()

    def restart(self, group: Group, reason: str = "rolling restart") -> asyncio.Task[int]:
        """Load ``group``'s app afresh and replace its workers (LiveOperations.restart)."""
        return self.live.restart(group, reason)

    def set_spawn_method(self, group: Group, method: str) -> asyncio.Task[int]:
        """Spawn ``group``'s workers with ``method`` from now on, replacing the running ones
        one at a time (the old preloader stops once they are gone)."""
        return self.live.set_spawn_method(group, method)

    def refork(self, group: Group, process: PoolProcess | None = None,
               reason: str = "refork requested") -> asyncio.Task[int]:
        """Make a warmed worker the preloader of a new generation and replace the older
        workers from it (see LiveOperations.refork). ValueError unless smart spawning."""
        return self.live.refork(group, process, reason)

    async def refork_now(self, group: Group) -> int:
        """An operator's refork: wait for it; ValueError with the reason if it did not
        happen. Returns the workers replaced."""
        return await self.live.refork_now(group)

    # -- configuration reload (see pool/reconfigure.py) -----------------------------------

    def add_app(self, app: AppConfig) -> Group:
        """Serve ``app`` from now on; its minimum starts at the next reconcile()."""
        group = self._make_group(app)
        reconfigure.add_app(self, group)
        return group

    def update_app(self, group: Group, app: AppConfig, keys: tuple[str, ...],
                   restart: bool) -> asyncio.Task[int] | None:
        """New settings for ``group`` (``keys`` changed): in place, or (``restart``) by
        replacing its workers one at a time (returns that task)."""
        return reconfigure.update_app(self, group, app, keys, restart)

    def remove_app(self, group: Group) -> asyncio.Task[None]:
        """Stop serving ``group``'s app: its requests finish, then its workers and preloader
        stop (returns the task doing so)."""
        return reconfigure.remove_app(self, group)

    def surge(self, group: Group, count: int) -> Awaitable[list[PoolProcess | None]]:
        """Have ``count`` processes of ``group`` spawned beyond what it wants, to replace
        others (rolling restart, refork); resolves to each one, None for a failed spawn."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[PoolProcess | None]] = [
            loop.create_future() for _ in range(count)]
        group.surge.extend(futures)
        self.reconcile()
        return asyncio.gather(*futures)

    def _full(self, group: Group) -> bool:
        """No worker can be added to ``group`` now (max_instances, or max_pool_size)."""
        return group.at_max() or self.total() >= self.max_pool_size

    # -- spawning and stopping -----------------------------------------------------------

    def _spawn(self, group: Group,
               result: asyncio.Future[PoolProcess | None] | None = None) -> None:
        group.spawning += 1
        self.track(self._spawn_one(group, result))

    async def _spawn_one(self, group: Group,
                         result: asyncio.Future[PoolProcess | None] | None) -> None:
        process = None
        try:
            process = await self._spawn_and_register(group)
        finally:
            if result is not None and not result.done():
                result.set_result(process)
            async with self._spawns_settled:
                self._spawns_settled.notify_all()

    async def _spawn_and_register(self, group: Group) -> PoolProcess | None:
        spawner = group.spawner
        try:
            worker = await spawner.spawn()
        except SpawnError as error:
            group.spawning -= 1
            delay = group.backoff.failed(error)
            log.error("%s\n(next spawn of %s in %.1f s)", error.details(), group.name, delay)
            self.emit(events.SpawnFailed(group, error, delay))
            if not group.processes:
                fail_waiters(group.waiters, error)
            self.reconcile()
            return None
        group.spawning -= 1
        group.backoff.succeeded()
        group.spawned += 1
        process = PoolProcess(worker, group)
        group.processes.append(process)
        worker.exited.add_done_callback(lambda _f: self._on_exit(process))
        self.emit(events.Spawned(process))
        if self.closing or spawner is not group.spawner or group.retired:
            # Shutting down, the spawn method changed while this one was on its way, or
            # the app was removed.
            self._stop(process, "not needed")
            return None
        self.dispatch(group)
        self.reconcile()
        return process

    def _stop(self, process: PoolProcess, reason: str = "", *, force: bool = False) -> None:
        """Stop ``process`` (kill it at once with ``force``, even if already stopping)."""
        if process.state is STOPPING and not force:
            return
        idle = process.idle
        if process.state is DRAINING and idle is not None and not idle.done():
            idle.set_result(None)  # a rolling restart waits for this (LiveOperations._retired)
        process.state = STOPPING
        process.stop_reason = reason or process.stop_reason
        self.emit(events.Stopping(process, process.stop_reason))
        worker = process.worker
        if force:
            self.track(worker.kill())
            return
        # Open WebSockets go on up to shutdown_timeout, then the worker closes them: 1012
        # (service restart) when it is being replaced, 1001 (going away) when not.
        timeout = self.config.server.shutdown_timeout
        if process.websockets:
            code = 1001 if self.closing or process.group.retired else 1012
            self.track(worker.stop(timeout, websocket_code=code))
        else:
            self.track(worker.stop(timeout))

    def _on_exit(self, process: PoolProcess) -> None:
        if self.closing or self.retiring:
            self._idle.set()  # what close() or a removal waits for may have changed
        if process.idle is not None and not process.idle.done():
            process.idle.set_result(None)
        group = process.group
        status = process.worker.exited.result()
        if process.state is MOLD:
            self.emit(events.MoldExited(group, process, status))
            self.reconcile()
            return
        self.detach(process)
        if not process.worker.exit_was_requested and not self.closing:
            group.crashes += 1
            log.warning("%s: worker %d exited unexpectedly (%s)", group.name, process.pid,
                        status.describe())
            self.emit(events.Crashed(process, status))
        else:
            self.emit(events.Exited(process, status))
        self.reconcile()

    @staticmethod
    def detach(process: PoolProcess) -> None:
        """Take ``process`` out of its group; close its idle connections."""
        processes = process.group.processes
        if process in processes:
            processes.remove(process)
        for connection in process.connections:
            connection.close()
        process.connections.clear()

    # -- timers --------------------------------------------------------------------------

    def tick_interval(self) -> float:
        """How often idle processes are looked for: a fraction of the shortest idle time."""
        shortest = min((g.app.pool_idle_time for g in self.groups.values()), default=300.0)
        return min(5.0, max(0.05, shortest / 4))

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval())
            self.shutdown_idle()

    def shutdown_idle(self) -> None:
        """Stop processes idle longer than pool_idle_time, down to each group's minimum."""
        self._idle_due = True  # reconcile decides which
        self.reconcile()

    # -- bookkeeping ---------------------------------------------------------------------

    def track(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as a task that close() cancels if it is still running."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def emit(self, event: PoolEvent) -> None:
        """Report ``event`` to on_event and the Python log."""
        if self.on_event is not None:
            self.on_event(event)
        event.log(log)
