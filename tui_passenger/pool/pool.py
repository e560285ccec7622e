"""The pool: every app's group, the global process limit, and the one reconciliation loop.

Everything that changes what should run (a request that found no free process, a finished
request, a timer, an operator's command) changes desired state and calls
:meth:`Pool.reconcile`, which alone decides what to spawn and what to shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tui_passenger.config import Config
from tui_passenger.engine import OutputSink, SpawnError
from tui_passenger.pool.group import DRAINING, MOLD, READY, STOPPING, Group, PoolProcess
from tui_passenger.pool.live import LiveOperations
from tui_passenger.pool.pipelining import Pipelining

log = logging.getLogger("tui_passenger.pool")


class QueueFull(Exception):
    """The app's request queue is at ``max_request_queue_size``."""


class PoolClosed(Exception):
    """The pool is shutting down and takes no more requests."""


EventSink = Callable[[str, dict[str, Any]], None]
WaiterCallback = Callable[[PoolProcess | None, BaseException | None], None]


class Waiter:
    """A request waiting in a group's queue; cancelled when its client goes away."""

    __slots__ = ("callback", "cancelled", "pipelinable")

    def __init__(self, callback: WaiterCallback, pipelinable: bool = False) -> None:
        self.callback = callback
        self.cancelled = False
        #: The request may be sent to a busy worker to run next (see Pool.try_pipeline).
        self.pipelinable = pipelinable


class Pool(LiveOperations, Pipelining):
    """All groups, and the decisions about which processes run."""

    def __init__(self, config: Config, socket_dir: Path, *, on_output: OutputSink | None = None,
                 on_event: EventSink | None = None) -> None:
        self.config = config
        self.max_pool_size = config.server.max_pool_size
        self.groups = {app.name: Group(app, socket_dir, on_output) for app in config.apps}
        self.on_event = on_event
        self.closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._spawns_settled = asyncio.Condition()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Spawn every app's minimum and start the idle-shutdown ticker."""
        self._ticker = asyncio.ensure_future(self._tick_forever())
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
        if self._timer is not None:
            self._timer.cancel()
        # Requests already queued are still served by the processes that are up.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._sessions_done(), grace)
        for group in self.groups.values():
            self._fail_waiters(group, PoolClosed("shutting down"))
        for task in list(self._tasks):
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        processes = [p for g in self.groups.values() for p in g.processes]
        for process in processes:
            process.state = STOPPING
        # Each exit removes its process from its group (see _on_exit).
        await asyncio.gather(*(p.worker.stop(5.0) for p in processes))
        await asyncio.gather(*(g.spawner.close() for g in self.groups.values()))

    async def _sessions_done(self) -> None:
        def busy() -> bool:
            return any(g.waiters and any(p.state is READY for p in g.processes)
                       or any(p.sessions for p in g.processes)
                       for g in self.groups.values())

        while busy():
            self._idle.clear()
            await self._idle.wait()

    # -- requests ------------------------------------------------------------------------

    def try_checkout(self, group: Group) -> PoolProcess | None:
        """A process of ``group`` with a free slot right now, or None (then queue).

        Raises PoolClosed while shutting down, and the group's last SpawnError while it
        has no process and is backing off after failed spawns.
        """
        if self.closing:
            raise PoolClosed("shutting down")
        process = group.pick()
        if process is not None:
            if not process.sessions:
                process.busy_since = time.monotonic()
            process.sessions += 1
            return process
        if group.last_error is not None and not group.processes and not group.spawning \
                and time.monotonic() < group.backoff_until:
            raise group.last_error
        return None

    def enqueue(self, group: Group, callback: WaiterCallback,
                pipelinable: bool = False) -> Waiter:
        """Queue for the next free process of ``group``: ``callback(process, None)``.

        If none can come (spawn failure with no process left, shutdown), the callback gets
        ``(None, error)``. Raises QueueFull when ``max_request_queue_size`` are waiting.
        """
        if len(group.waiters) >= group.app.max_request_queue_size:
            raise QueueFull(f"{group.name}: request queue full "
                            f"({group.app.max_request_queue_size} waiting)")
        waiter = Waiter(callback, pipelinable)
        group.waiters.append(waiter)
        if not group.at_max():
            self.reconcile()
        return waiter

    @staticmethod
    def withdraw(group: Group, waiter: Waiter) -> None:
        """Take a waiter out of the queue (its client went away)."""
        waiter.cancelled = True
        with contextlib.suppress(ValueError):
            group.waiters.remove(waiter)

    def release(self, process: PoolProcess) -> None:
        """A request on ``process`` has finished."""
        process.sessions -= 1
        process.processed += 1
        process.last_used = now = time.monotonic()
        group = process.group
        self._timed(process, group, now)
        if process.max_requests and process.processed >= process.max_requests \
                and process.state is READY:
            self.drain(process, "max_requests reached")
        elif process.state is DRAINING and process.sessions == 0:
            self._stop(process)
        elif process.sessions == 0 and process.idle is not None and not process.idle.done():
            process.idle.set_result(None)  # a molding process is idle now
        if group.refork_next and process.processed >= group.refork_next \
                and process.state is READY and not group.reforking:
            self._refork_after(process)
        if group.waiters:
            if process.state is READY and process.sessions <= process.worker.concurrency:
                # Only this process gained a free slot: hand it the next waiter without
                # looking over the whole group (the hot path when requests queue).
                self._hand_over(process, group, now)
            else:
                self._dispatch(group)
        elif process.sessions == 0 and len(self.groups) > 1 and any(
                g.waiters for g in self.groups.values()):
            # Another app may be waiting for room in a full pool, which this now idle
            # process can give.
            self.reconcile()
        if self.closing:
            self._idle.set()

    def _hand_over(self, process: PoolProcess, group: Group, now: float) -> None:
        """Give ``process``'s free slots to the first waiters of ``group``; a worker that has
        just started a pipelined request gets the next one pipelined too (try_pipeline)."""
        waiters = group.waiters
        concurrency = process.worker.concurrency
        limit = self._pipeline_limit(process, group, now)
        while waiters and process.sessions < limit and process.state is READY:
            waiter = waiters[0]
            if waiter.cancelled:
                waiters.popleft()
                continue
            if process.sessions >= concurrency and not waiter.pipelinable:
                return
            waiters.popleft()
            process.sessions += 1
            waiter.callback(process, None)

    def _dispatch(self, group: Group) -> None:
        while group.waiters:
            process = group.pick()
            if process is None:
                return
            waiter = group.waiters.popleft()
            if waiter.cancelled:
                continue
            if not process.sessions:
                process.busy_since = time.monotonic()
            process.sessions += 1
            waiter.callback(process, None)

    @staticmethod
    def _fail_waiters(group: Group, error: BaseException) -> None:
        while group.waiters:
            waiter = group.waiters.popleft()
            if not waiter.cancelled:
                waiter.callback(None, error)

    # -- desired state -------------------------------------------------------------------

    def scale(self, group: Group, count: int) -> None:
        """Keep ``count`` processes of ``group`` warm (its new min_instances)."""
        group.min_instances = max(0, count)
        excess = group.live_count() - group.wanted()
        for process in group.idle_candidates()[:max(0, excess)]:
            self._stop(process, "scaled down")
        self.reconcile()

    def drain(self, process: PoolProcess, reason: str) -> None:
        """Take no new requests on ``process``, stop it when idle; a replacement is spawned."""
        if process.state is not READY:
            return
        process.state = DRAINING
        process.stop_reason = reason
        self._event("draining", process=process, reason=reason)
        if process.sessions == 0:
            self._stop(process)
        self.reconcile()

    def total(self) -> int:
        """Processes counted against max_pool_size."""
        return sum(g.footprint() for g in self.groups.values())

    def reconcile(self) -> None:
        """Spawn what is missing (within limits, outside backoff); free room for waiters."""
        if self.closing:
            return
        now = time.monotonic()
        for group in self.groups.values():
            missing = group.wanted() - group.live_count()
            while missing > 0:
                if now < group.backoff_until:
                    self._wake_at(group.backoff_until)
                    break
                if self.total() >= self.max_pool_size and not (
                        group.waiters and self._free_room(group)):
                    break
                self._spawn(group)
                missing -= 1

    def _free_room(self, needy: Group) -> bool:
        """Stop an idle process of another app to make room for ``needy`` (as Passenger)."""
        candidates = [p for g in self.groups.values() if g is not needy
                      for p in g.idle_candidates()]
        if not candidates:
            return False
        # Prefer apps above their minimum, then the longest idle.
        candidates.sort(key=lambda p: (p.group.live_count() <= p.group.min_instances,
                                       p.last_used))
        self._stop(candidates[0], f"making room for {needy.name}")
        return True

    def _spawn(self, group: Group) -> None:
        group.spawning += 1
        self._track(self._spawn_one(group))

    async def _spawn_one(self, group: Group) -> PoolProcess | None:
        try:
            return await self._spawn_and_register(group)
        finally:
            async with self._spawns_settled:
                self._spawns_settled.notify_all()

    async def _spawn_and_register(self, group: Group) -> PoolProcess | None:
        spawner = group.spawner
        try:
            worker = await spawner.spawn()
        except SpawnError as error:
            group.spawning -= 1
            delay = group.note_spawn_failure(error)
            log.error("%s\n(next spawn of %s in %.1f s)", error.details(), group.name, delay)
            self._event("spawn_error", group=group, error=error, backoff=delay)
            if not group.processes:
                self._fail_waiters(group, error)
            self.reconcile()
            return None
        group.spawning -= 1
        group.note_spawn_success()
        process = PoolProcess(worker, group)
        group.processes.append(process)
        worker.exited.add_done_callback(lambda _f, p=process: self._on_exit(p))
        self._event("spawned", process=process)
        if self.closing or spawner is not group.spawner:
            # Shutting down, or the spawn method changed while this one was on its way.
            self._stop(process, "not needed")
            return None
        self._dispatch(group)
        self.reconcile()
        return process

    def _stop(self, process: PoolProcess, reason: str = "") -> None:
        if process.state is STOPPING:
            return
        process.state = STOPPING
        process.stop_reason = reason or process.stop_reason
        self._event("stopping", process=process, reason=process.stop_reason)
        self._track(process.worker.stop(self.config.server.shutdown_timeout))

    def _on_exit(self, process: PoolProcess) -> None:
        if self.closing:
            self._idle.set()  # what close() waits for may have changed
        if process.idle is not None and not process.idle.done():
            process.idle.set_result(None)
        group = process.group
        if process.state is MOLD:
            status = process.worker.exited.result()
            self._event("mold_exited", group=group, pid=process.pid, status=status)
            self.reconcile()
            return
        if process in group.processes:
            group.processes.remove(process)
        self._close_connections(process)
        status = process.worker.exited.result()
        if not process.worker.exit_was_requested and not self.closing:
            group.restarts += 1
            log.warning("%s: worker %d exited unexpectedly (%s)", group.name, process.pid,
                        status.describe())
            self._event("crashed", process=process, status=status)
        else:
            self._event("exited", process=process, status=status)
        self.reconcile()

    @staticmethod
    def _close_connections(process: PoolProcess) -> None:
        for connection in process.connections:
            connection.close()
        process.connections.clear()

    # -- timers --------------------------------------------------------------------------

    def _wake_at(self, when: float) -> None:
        if self._timer is not None and self._timer.when() <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + max(0.0, when - time.monotonic()),
                                   self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.reconcile()

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
        now = time.monotonic()
        for group in self.groups.values():
            idle_time = group.app.pool_idle_time
            excess = group.live_count() - max(group.min_instances, 0)
            for process in group.idle_candidates():
                if excess <= 0 or not idle_time or now - process.last_used < idle_time:
                    break
                self._stop(process, f"idle for {idle_time:g} s")
                excess -= 1

    # -- bookkeeping ---------------------------------------------------------------------

    def _track(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _event(self, kind: str, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, data)
        process = data.get("process")
        if process is not None:
            detail = data.get("reason") or (data["status"].describe() if "status" in data else "")
            log.info("%s: worker %d %s%s", process.group.name, process.pid, kind,
                     f" ({detail})" if detail else "")
