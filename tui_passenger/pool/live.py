"""Operations on running workers: rolling restart, spawn-method switch, refork.

Like everything else they only change desired state (a surge of replacements, a drain) and
let the pool spawn and stop through its usual paths; what they use of the pool is
:class:`PoolActions`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tui_passenger.engine import SmartSpawner, Spawner, SpawnError
from tui_passenger.pool.events import (
    Molded,
    Molding,
    PoolEvent,
    Reforked,
    ReforkFailed,
    Restarted,
    RestartFailed,
    Restarting,
    SpawnMethodChanged,
)
from tui_passenger.pool.process import DRAINING, MOLD, MOLDING, READY, PoolProcess

if TYPE_CHECKING:
    from tui_passenger.pool.group import Group

log = logging.getLogger("tui_passenger.pool")
T = TypeVar("T")


class PoolActions(Protocol):
    """What the live operations ask of the pool."""

    closing: bool

    def drain(self, process: PoolProcess, reason: str) -> None:
        """Stop ``process`` once idle."""

    def dispatch(self, group: Group) -> None:
        """Hand free slots of ``group`` to its waiters."""

    def reconcile(self) -> None:
        """Spawn and stop what desired state says."""

    def surge(self, group: Group, count: int) -> Awaitable[list[PoolProcess | None]]:
        """Spawn ``count`` replacements beyond what ``group`` wants (None: failed)."""

    def detach(self, process: PoolProcess) -> None:
        """Take ``process`` out of its group, closing its idle connections."""

    def emit(self, event: PoolEvent) -> None:
        """Report ``event``."""

    def track(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as a task the pool cancels when it closes."""


class Rollout:
    """One app's live operations: the one in progress, and the refork_after schedule."""

    __slots__ = ("task", "counts", "index", "refork_next", "reforking", "last_refork_error",
                 "queued_restart", "last_restart_error", "fresh")

    def __init__(self, refork_after: Sequence[int]) -> None:
        #: The rolling restart or refork in progress, if any (one at a time per group).
        self.task: asyncio.Task[int] | None = None
        self.counts = tuple(refork_after)
        #: refork_after: the next count, 0 when there is none left.
        self.index = 0
        self.refork_next = self.counts[0] if self.counts else 0
        self.reforking = False
        #: Why the last refork did not happen (None: it did, or none was tried).
        self.last_refork_error: str | None = None
        #: A restart asked for and not begun yet: later requests for one join it.
        self.queued_restart: asyncio.Task[int] | None = None
        #: Why the last restart failed (None: it worked, or none was tried).
        self.last_restart_error: str | None = None
        #: always_restart.txt: the spawner of the latest fresh load.
        self.fresh: Spawner | None = None

    def restart_schedule(self) -> None:
        """A restart: the refork_after counts start over from the first."""
        self.index = -1
        self.next_refork_count()

    def next_refork_count(self) -> None:
        """The count in refork_after after this one (0: no more automatic reforks)."""
        self.index += 1
        self.refork_next = self.counts[self.index] if self.index < len(self.counts) else 0


async def _nothing() -> int:
    return 0


class LiveOperations:
    """Rolling restarts, spawn-method switches and reforks, one at a time per group."""

    def __init__(self, pool: PoolActions, shutdown_timeout: float) -> None:
        self.pool = pool
        self.shutdown_timeout = shutdown_timeout

    def restart(self, group: Group, reason: str = "rolling restart") -> asyncio.Task[int]:
        """Load ``group``'s app afresh (smart: a new preloader, generation 0) and replace
        every worker from it, one at a time, each replacement ready before the old worker
        drains; then stop the old preloader or mold. Returns the task (→ workers replaced).

        A restart asked for while another waits to begin joins it. If the new code cannot
        be loaded, nothing changes: ``rollout.last_restart_error`` says why.
        """
        rollout = group.rollout
        queued = rollout.queued_restart
        if queued is not None and not queued.done():
            return queued
        task = self._after_previous(
            group, lambda previous: self._restart(group, reason, previous))
        rollout.queued_restart = task
        return task

    async def restart_now(self, group: Group) -> int:
        """An operator's restart (``ctl restart``, the dashboard): wait for it; ValueError
        with the reason if the new code could not be loaded. Returns the workers replaced."""
        replaced = await self.restart(group)
        if group.rollout.last_restart_error is not None:
            raise ValueError(f"{group.name}: restart failed, the running workers keep "
                             f"serving: {group.rollout.last_restart_error}")
        return replaced

    async def _restart(self, group: Group, reason: str,
                       previous: asyncio.Task[int] | None) -> int:
        if previous is not None and not previous.done():
            await asyncio.gather(previous, return_exceptions=True)
        rollout = group.rollout
        rollout.queued_restart = None  # begun: a request for a restart from now on waits
        rollout.last_restart_error = None
        if self.pool.closing:
            return 0
        spawner = group.new_spawner()
        try:
            await spawner.prepare()  # smart: the new preloader imports the app
        except SpawnError as error:
            await spawner.close()
            self._restart_failed(group, reason, error)
            return 0
        except asyncio.CancelledError:  # shutting down: the new preloader must not stay
            await spawner.close()
            raise
        old = group.use_spawner(spawner)
        group.backoff.succeeded()  # the new code loads: spawn without waiting
        rollout.restart_schedule()
        self.pool.emit(Restarting(group, reason))
        self.pool.reconcile()  # an app with no worker (it did not load before) gets some
        stale = set(group.processes)
        try:
            replaced = await self._replace(group, reason, stale.__contains__, 1)
        finally:
            await old.close()  # its preloader or mold; its workers are gone or draining
        left = [p for p in stale if p.state is READY and p in group.processes]
        if left and not self.pool.closing:
            self._restart_failed(group, reason, group.last_error or SpawnError(
                group.name, "spawn", "no replacement could be spawned"))
        elif not self.pool.closing:
            group.restarts += 1
            self.pool.emit(Restarted(group, reason, replaced))
        return replaced

    def _restart_failed(self, group: Group, reason: str, error: SpawnError) -> None:
        group.rollout.last_restart_error = error.message
        log.error("%s: restart (%s) failed, the running workers keep serving: %s",
                  group.name, reason, error.details())
        self.pool.emit(RestartFailed(group, error, reason))

    def fresh_load(self, group: Group) -> None:
        """always_restart.txt exists: called for each request to ``group``, which then
        queues for a worker of a freshly loaded app. The first such request starts the
        load (a new spawner: smart, a new preloader) and drains the workers there were;
        requests arriving while it is on its way wait for it too; the first one after it
        took its request starts the next."""
        rollout = group.rollout
        if rollout.fresh is group.spawner and group.spawning \
                and not any(p.state is READY for p in group.processes):
            return
        old = group.use_spawner(group.new_spawner())
        rollout.fresh = group.spawner
        group.restarts += 1
        group.backoff.succeeded()  # each request tries the code as it is now
        self.pool.emit(Restarting(group, "always_restart.txt exists"))
        for process in [p for p in group.processes if p.state is READY]:
            self.pool.drain(process, "always_restart.txt")
        self.pool.track(old.close())  # forked workers outlive their preloader
        self.pool.reconcile()

    def _after_previous(self, group: Group,
                        operation: Callable[[asyncio.Task[int] | None],
                                            Coroutine[Any, Any, int]]) -> asyncio.Task[int]:
        """Run ``operation`` once the group's operation in progress (if any) is done."""
        task = self.pool.track(operation(group.rollout.task))
        group.rollout.task = task
        return task

    def set_spawn_method(self, group: Group, method: str) -> asyncio.Task[int]:
        """Spawn ``group``'s workers with ``method`` from now on, replacing the running ones
        one at a time (the old preloader stops once they are gone)."""
        if method == group.spawn_method:
            return asyncio.ensure_future(_nothing())
        old = group.set_spawn_method(method)
        self.pool.emit(SpawnMethodChanged(group, method))
        reason = f"switching to {method} spawning"
        task = self._after_previous(group, lambda previous: self._roll(group, reason, previous))
        task.add_done_callback(lambda _t: self.pool.track(old.close()))
        return task

    async def _roll(self, group: Group, reason: str, previous: asyncio.Task[int] | None) -> int:
        if previous is not None and not previous.done():
            await asyncio.gather(previous, return_exceptions=True)
        running = {p for p in group.processes if p.state is READY}
        replaced = await self._replace(group, reason, running.__contains__, 1)
        group.restarts += 1
        group.rollout.restart_schedule()
        self.pool.emit(Restarted(group, reason, replaced))
        return replaced

    def refork_after(self, process: PoolProcess) -> None:
        """``process`` has served the next refork_after count: refork from it."""
        group = process.group
        spawner = group.spawner
        if not isinstance(spawner, SmartSpawner) \
                or process.worker.generation != spawner.generation:
            return  # only a worker of the current generation may become its successor
        count = group.rollout.refork_next
        group.rollout.next_refork_count()
        self.refork(group, process, f"served {count} requests (refork_after)")

    def refork(self, group: Group, process: PoolProcess | None = None,
               reason: str = "refork requested") -> asyncio.Task[int]:
        """Make a warmed worker of ``group`` (``process``, else the one that served most) the
        preloader of a new generation, then replace the older workers from it, a batch at a
        time. Returns the task (→ workers replaced). ValueError unless smart spawning."""
        if group.spawn_method != "smart":
            raise ValueError(f"{group.name}: refork needs smart spawning "
                             f"(the app uses {group.spawn_method})")
        rollout = group.rollout
        rollout.reforking = True
        rollout.last_refork_error = None
        task = self._after_previous(
            group, lambda previous: self._refork(group, process, reason, previous))
        task.add_done_callback(lambda _t: setattr(rollout, "reforking", False))
        return task

    async def refork_now(self, group: Group) -> int:
        """An operator's refork (``ctl refork``, the dashboard): wait for it; ValueError
        with the reason if it did not happen. Returns the workers replaced."""
        replaced = await self.refork(group)
        if group.rollout.last_refork_error is not None:
            raise ValueError(f"{group.name}: refork failed: {group.rollout.last_refork_error}")
        return replaced

    async def _refork(self, group: Group, chosen: PoolProcess | None, reason: str,
                      previous: asyncio.Task[int] | None) -> int:
        if previous is not None and not previous.done():
            await asyncio.gather(previous, return_exceptions=True)
        spawner = group.spawner
        if self.pool.closing:
            return 0
        if not isinstance(spawner, SmartSpawner):
            self._refork_failed(group, "the app no longer uses smart spawning")
            return 0
        if chosen is None or chosen.state is not READY:
            ready = [p for p in group.processes if p.state is READY]
            if not ready:
                self._refork_failed(group, "no ready worker to become the mold")
                return 0
            chosen = max(ready, key=lambda p: p.processed)
        generation = await self._mold(group, spawner, chosen, reason)
        if generation is None:
            return 0
        # Workers not forked by the current preloader (the mold, or whichever one took over
        # if it died), refork_max_unavailable at a time, while the group keeps this spawner.
        replaced = await self._replace(
            group, f"replaced by generation {generation}",
            lambda p: p.worker.generation != spawner.generation,
            max(1, int(group.live_count() * group.app.refork_max_unavailable)),
            lambda: group.spawner is spawner)
        if group.spawner is spawner:
            await spawner.retire_previous()
        self.pool.emit(Reforked(group, generation, replaced))
        return replaced

    async def _mold(self, group: Group, spawner: SmartSpawner, chosen: PoolProcess,
                    reason: str) -> int | None:
        """Turn ``chosen`` into the preloader of a new generation once it is idle; returns
        the generation, or None if the refork failed (then spawning goes on as before)."""
        chosen.state = MOLDING
        self.pool.emit(Molding(chosen, reason))
        try:
            if chosen.sessions:
                # Spawns meanwhile (its place is free) still come from the old preloader:
                # a long request here must not hold up the whole group.
                chosen.idle = asyncio.get_running_loop().create_future()
                limit = self.shutdown_timeout
                try:
                    await asyncio.wait_for(asyncio.shield(chosen.idle), limit or None)
                except asyncio.TimeoutError:
                    self._back_in_service(chosen)
                    self._refork_failed(group, f"worker {chosen.pid} was still busy after "
                                               f"{limit:g} s (shutdown_timeout)")
                    return None
            if not chosen.worker.alive:
                self._refork_failed(group, f"worker {chosen.pid} exited before it became "
                                           "the mold")
                return None
            if self.pool.closing or group.spawner is not spawner:
                self._back_in_service(chosen)
                self._refork_failed(group, "shutting down" if self.pool.closing else
                                    "the spawn method changed meanwhile")
                return None
            spawner.begin_refork()  # spawns from here on wait for the mold
            self.pool.detach(chosen)
            self.pool.reconcile()  # the mold's place in the pool, forked from the mold
            mold = await spawner.refork(chosen.worker)
        except SpawnError as error:
            log.error("%s", error.details())
            self._refork_failed(group, f"{error.message}; spawning goes on from the "
                                       "previous preloader")
            await chosen.worker.kill()
            return None
        except asyncio.CancelledError:
            spawner.end_refork()
            if chosen not in group.processes:
                await chosen.worker.kill()
            elif chosen.state is MOLDING:
                self._back_in_service(chosen)
            raise
        chosen.state = MOLD
        self.pool.emit(Molded(chosen, reason, mold.generation))
        return mold.generation

    def _back_in_service(self, process: PoolProcess) -> None:
        """A worker chosen to become the mold takes requests again."""
        process.state = READY
        process.idle = None
        self.pool.dispatch(process.group)
        self.pool.reconcile()

    def _refork_failed(self, group: Group, reason: str) -> None:
        group.rollout.last_refork_error = reason
        log.warning("%s: refork failed: %s", group.name, reason)
        self.pool.emit(ReforkFailed(group, reason))

    async def _replace(self, group: Group, reason: str, stale: Callable[[PoolProcess], bool],
                       batch_size: int, keep_going: Callable[[], bool] = lambda: True) -> int:
        """Replace the ready workers that are ``stale``, ``batch_size`` at a time: each
        batch's replacements are ready before the batch drains, so capacity never drops."""
        replaced = 0
        while not self.pool.closing and keep_going():
            batch = [p for p in group.processes if p.state is READY and stale(p)][:batch_size]
            if not batch:
                break
            new = await self.pool.surge(group, len(batch))
            done = batch[:sum(1 for n in new if n is not None)]
            if not done:
                log.error("%s: %s stopped: could not spawn a replacement", group.name, reason)
                break
            for process in done:
                self.pool.drain(process, reason)
            await asyncio.gather(*(self._retired(p) for p in done))
            replaced += len(done)
        return replaced

    @staticmethod
    async def _retired(process: PoolProcess) -> None:
        """Wait until a drained ``process`` has exited, or (if it has open WebSockets) has
        no request left and is stopping: its WebSockets may run for most of
        shutdown_timeout, which the next batch need not wait for."""
        exited = asyncio.shield(process.worker.exited)
        if not process.websockets:
            await exited
        elif process.state is DRAINING:  # requests still running; Pool._stop sets idle
            process.idle = asyncio.get_running_loop().create_future()
            either: list[asyncio.Future[Any]] = [process.idle, exited]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
