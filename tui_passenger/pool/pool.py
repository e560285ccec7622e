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
from tui_passenger.pool.group import (
    DRAINING,
    MOLD,
    MOLDING,
    READY,
    STOPPING,
    Group,
    PoolProcess,
)

log = logging.getLogger("tui_passenger.pool")


class QueueFull(Exception):
    """The app's request queue is at ``max_request_queue_size``."""


class PoolClosed(Exception):
    """The pool is shutting down and takes no more requests."""


EventSink = Callable[[str, dict[str, Any]], None]
WaiterCallback = Callable[[PoolProcess | None, BaseException | None], None]


async def _nothing() -> int:
    return 0


class Waiter:
    """A request waiting in a group's queue; cancelled when its client goes away."""

    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: WaiterCallback) -> None:
        self.callback = callback
        self.cancelled = False


class Pool:
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
            process.sessions += 1
            return process
        if group.last_error is not None and not group.processes and not group.spawning \
                and time.monotonic() < group.backoff_until:
            raise group.last_error
        return None

    def enqueue(self, group: Group, callback: WaiterCallback) -> Waiter:
        """Queue for the next free process of ``group``: ``callback(process, None)``.

        If none can come (spawn failure with no process left, shutdown), the callback gets
        ``(None, error)``. Raises QueueFull when ``max_request_queue_size`` are waiting.
        """
        if len(group.waiters) >= group.app.max_request_queue_size:
            raise QueueFull(f"{group.name}: request queue full "
                            f"({group.app.max_request_queue_size} waiting)")
        waiter = Waiter(callback)
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
        process.last_used = time.monotonic()
        if process.max_requests and process.processed >= process.max_requests \
                and process.state is READY:
            self.drain(process, "max_requests reached")
        elif process.state is DRAINING and process.sessions == 0:
            self._stop(process)
        elif process.sessions == 0 and process.idle is not None and not process.idle.done():
            process.idle.set_result(None)  # a molding process is idle now
        group = process.group
        if group.refork_next and process.processed >= group.refork_next \
                and process.state is READY and not group.reforking:
            self._refork_after(process)
        if group.waiters:
            self._dispatch(group)
        elif process.sessions == 0 and len(self.groups) > 1 and any(
                g.waiters for g in self.groups.values()):
            # Another app may be waiting for room in a full pool, which this now idle
            # process can give.
            self.reconcile()
        if self.closing:
            self._idle.set()

    def _refork_after(self, process: PoolProcess) -> None:
        group = process.group
        spawner = group.spawner
        if group.spawn_method != "smart" or process.worker.generation != spawner.generation:
            return  # only a worker of the current generation may become its successor
        count = group.refork_next
        group.next_refork_count()
        self.refork(group, process, f"served {count} requests (refork_after)")

    def _dispatch(self, group: Group) -> None:
        while group.waiters:
            process = group.pick()
            if process is None:
                return
            waiter = group.waiters.popleft()
            if waiter.cancelled:
                continue
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

    # -- live operations -----------------------------------------------------------------

    def find(self, pid: int) -> PoolProcess | None:
        """The process with ``pid``, in any group."""
        for group in self.groups.values():
            for process in group.processes:
                if process.pid == pid:
                    return process
        return None

    def kill(self, process: PoolProcess, *, force: bool = False,
             reason: str = "") -> None:
        """Remove one worker: drain and stop it (SIGKILL at once with ``force``).

        The pool spawns a replacement if the group falls below its minimum.
        """
        if force:
            process.state = STOPPING
            process.stop_reason = reason or "killed by operator"
            self._event("stopping", process=process, reason=process.stop_reason)
            self._track(process.worker.kill())
        else:
            self.drain(process, reason or "stopped by operator")
        self.reconcile()

    def restart(self, group: Group, reason: str = "rolling restart") -> asyncio.Task[int]:
        """Replace every worker of ``group``, one at a time; returns the task (→ count)."""
        previous = group.rolling
        task = asyncio.ensure_future(self._roll(group, reason, previous))
        group.rolling = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def set_spawn_method(self, group: Group, method: str) -> asyncio.Task[int]:
        """Spawn ``group``'s workers with ``method`` from now on, replacing the running ones
        one at a time (the old preloader stops once they are gone)."""
        if method == group.spawn_method:
            return asyncio.ensure_future(_nothing())
        old = group.set_spawn_method(method)
        self._event("spawn_method", group=group, method=method)
        task = self.restart(group, f"switching to {method} spawning")
        task.add_done_callback(lambda _t: self._track(old.close()))
        return task

    async def _roll(self, group: Group, reason: str, previous: asyncio.Task[int] | None) -> int:
        if previous is not None and not previous.done():
            await asyncio.gather(previous, return_exceptions=True)
        replaced = 0
        for old in [p for p in group.processes if p.state is READY]:
            if self.closing:
                break
            if old.state is not READY:
                continue  # it went away meanwhile
            # Start the new one first: capacity never drops during the roll.
            group.spawning += 1
            new = await self._spawn_one(group)
            if new is None:
                log.error("%s: %s stopped: could not spawn a replacement", group.name, reason)
                break
            self.drain(old, reason)
            await asyncio.shield(old.worker.exited)
            replaced += 1
        self._event("restarted", group=group, reason=reason, count=replaced)
        return replaced

    # -- refork -------------------------------------------------------------------------

    def refork(self, group: Group, process: PoolProcess | None = None,
               reason: str = "refork requested") -> asyncio.Task[int]:
        """Make a warmed worker of ``group`` (``process``, else the one that served most) the
        preloader of a new generation, then replace the older workers from it, a batch at a
        time. Returns the task (→ workers replaced). ValueError unless smart spawning."""
        if group.spawn_method != "smart":
            raise ValueError(f"{group.name}: refork needs smart spawning "
                             f"(the app uses {group.spawn_method})")
        group.reforking = True
        group.last_refork_error = None
        previous = group.rolling
        task = asyncio.ensure_future(self._refork(group, process, reason, previous))
        group.rolling = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _t: setattr(group, "reforking", False))
        return task

    async def _refork(self, group: Group, chosen: PoolProcess | None, reason: str,
                      previous: asyncio.Task[int] | None) -> int:
        if previous is not None and not previous.done():
            await asyncio.gather(previous, return_exceptions=True)
        spawner = group.spawner
        if self.closing or group.spawn_method != "smart":
            return 0
        if chosen is None or chosen.state is not READY:
            ready = [p for p in group.processes if p.state is READY]
            if not ready:
                self._refork_failed(group, "no ready worker to become the mold")
                return 0
            chosen = max(ready, key=lambda p: p.processed)
        chosen.state = MOLDING
        self._event("molding", process=chosen, reason=reason)
        spawner.begin_refork()  # spawns from here on wait for the mold
        try:
            if chosen.sessions:
                chosen.idle = asyncio.get_running_loop().create_future()
                await asyncio.shield(chosen.idle)
            if not chosen.worker.alive:
                spawner.end_refork()
                return 0
            group.processes.remove(chosen)
            self._close_connections(chosen)
            self.reconcile()  # the mold's place in the pool, forked from the mold
            mold = await spawner.refork(chosen.worker)
        except SpawnError as error:
            log.error("%s", error.details())
            self._refork_failed(group, f"{error.message}; spawning goes on from the "
                                       "previous preloader")
            await chosen.worker.kill()
            return 0
        except asyncio.CancelledError:
            spawner.end_refork()
            if chosen not in group.processes:
                await chosen.worker.kill()
            raise
        chosen.state = MOLD
        self._event("molded", process=chosen, generation=mold.generation, reason=reason)
        replaced = await self._replace_older_generations(group, reason)
        if group.spawner is spawner:
            await spawner.retire_previous()
        self._event("reforked", group=group, generation=mold.generation, count=replaced)
        return replaced

    def _refork_failed(self, group: Group, reason: str) -> None:
        group.last_refork_error = reason
        log.warning("%s: refork failed: %s", group.name, reason)
        self._event("refork_failed", group=group, reason=reason)

    async def _replace_older_generations(self, group: Group, reason: str) -> int:
        """Replace the workers not forked by the current preloader, ``refork_max_unavailable``
        of them at a time, each batch's replacements ready before the batch drains."""
        spawner = group.spawner
        batch_size = max(1, int(group.live_count() * group.app.refork_max_unavailable))
        replaced = 0
        while not self.closing and group.spawner is spawner:
            current = spawner.generation
            batch = [p for p in group.processes
                     if p.state is READY and p.worker.generation != current][:batch_size]
            if not batch:
                break
            group.spawning += len(batch)
            new = await asyncio.gather(*(self._spawn_one(group) for _ in batch))
            done = batch[:sum(1 for n in new if n is not None)]
            if not done:
                log.error("%s: refork stopped: could not spawn from the mold", group.name)
                break
            for process in done:
                self.drain(process, f"replaced by generation {current}")
            await asyncio.gather(*(asyncio.shield(p.worker.exited) for p in done))
            replaced += len(done)
        return replaced

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
