"""Operations on running workers: kill, rolling restart, spawn-method switch, refork.

They are part of :class:`~tui_passenger.pool.pool.Pool` (mixed in), and like everything
else only change desired state and let the pool spawn and stop through its usual paths.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tui_passenger.config import Config
from tui_passenger.engine import SpawnError
from tui_passenger.pool.group import MOLD, MOLDING, READY, STOPPING, Group, PoolProcess

log = logging.getLogger("tui_passenger.pool")


async def _nothing() -> int:
    return 0


class LiveOperations:
    """The pool's live operations; the state they use lives on the Pool."""

    groups: dict[str, Group]
    config: Config
    closing: bool
    _tasks: set[asyncio.Task[Any]]

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
        return self._after_previous(group, lambda previous: self._roll(group, reason, previous))

    def _after_previous(self, group: Group,
                        operation: Callable[[asyncio.Task[int] | None], Awaitable[int]]
                        ) -> asyncio.Task[int]:
        """Run ``operation`` once the group's operation in progress (if any) is done."""
        task = asyncio.ensure_future(operation(group.rolling))
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
        running = {p for p in group.processes if p.state is READY}
        replaced = await self._replace(group, reason, running.__contains__, 1)
        self._event("restarted", group=group, reason=reason, count=replaced)
        return replaced

    def _refork_after(self, process: PoolProcess) -> None:
        group = process.group
        spawner = group.spawner
        if group.spawn_method != "smart" or process.worker.generation != spawner.generation:
            return  # only a worker of the current generation may become its successor
        count = group.refork_next
        group.next_refork_count()
        self.refork(group, process, f"served {count} requests (refork_after)")

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
        task = self._after_previous(
            group, lambda previous: self._refork(group, process, reason, previous))
        task.add_done_callback(lambda _t: setattr(group, "reforking", False))
        return task

    async def refork_now(self, group: Group) -> int:
        """An operator's refork (``ctl refork``, the dashboard): wait for it; ValueError
        with the reason if it did not happen. Returns the workers replaced."""
        replaced = await self.refork(group)
        if group.last_refork_error is not None:
            raise ValueError(f"{group.name}: refork failed: {group.last_refork_error}")
        return replaced

    async def _refork(self, group: Group, chosen: PoolProcess | None, reason: str,
                      previous: asyncio.Task[int] | None) -> int:
        if previous is not None and not previous.done():
            await asyncio.gather(previous, return_exceptions=True)
        spawner = group.spawner
        if self.closing:
            return 0
        if group.spawn_method != "smart":
            self._refork_failed(group, "the app no longer uses smart spawning")
            return 0
        if chosen is None or chosen.state is not READY:
            ready = [p for p in group.processes if p.state is READY]
            if not ready:
                self._refork_failed(group, "no ready worker to become the mold")
                return 0
            chosen = max(ready, key=lambda p: p.processed)
        chosen.state = MOLDING
        self._event("molding", process=chosen, reason=reason)
        try:
            if chosen.sessions:
                # Spawns meanwhile (its place is free) still come from the old preloader:
                # a long request here must not hold up the whole group.
                chosen.idle = asyncio.get_running_loop().create_future()
                limit = self.config.server.shutdown_timeout
                try:
                    await asyncio.wait_for(asyncio.shield(chosen.idle), limit or None)
                except asyncio.TimeoutError:
                    self._back_in_service(chosen)
                    self._refork_failed(group, f"worker {chosen.pid} was still busy after "
                                               f"{limit:g} s (shutdown_timeout)")
                    return 0
            if not chosen.worker.alive:
                self._refork_failed(group, f"worker {chosen.pid} exited before it became "
                                           "the mold")
                return 0
            if self.closing or group.spawner is not spawner:
                self._back_in_service(chosen)
                self._refork_failed(group, "shutting down" if self.closing else
                                    "the spawn method changed meanwhile")
                return 0
            spawner.begin_refork()  # spawns from here on wait for the mold
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
            elif chosen.state is MOLDING:
                self._back_in_service(chosen)
            raise
        chosen.state = MOLD
        self._event("molded", process=chosen, generation=mold.generation, reason=reason)
        # Workers not forked by the current preloader (the mold, or whichever one took over
        # if it died), refork_max_unavailable at a time, while the group keeps this spawner.
        replaced = await self._replace(
            group, f"replaced by generation {mold.generation}",
            lambda p: p.worker.generation != spawner.generation,
            max(1, int(group.live_count() * group.app.refork_max_unavailable)),
            lambda: group.spawner is spawner)
        if group.spawner is spawner:
            await spawner.retire_previous()
        self._event("reforked", group=group, generation=mold.generation, count=replaced)
        return replaced

    def _back_in_service(self, process: PoolProcess) -> None:
        """A worker chosen to become the mold takes requests again."""
        process.state = READY
        process.idle = None
        self._dispatch(process.group)
        self.reconcile()

    def _refork_failed(self, group: Group, reason: str) -> None:
        group.last_refork_error = reason
        log.warning("%s: refork failed: %s", group.name, reason)
        self._event("refork_failed", group=group, reason=reason)

    async def _replace(self, group: Group, reason: str, stale: Callable[[PoolProcess], bool],
                       batch_size: int, keep_going: Callable[[], bool] = lambda: True) -> int:
        """Replace the ready workers that are ``stale``, ``batch_size`` at a time: each
        batch's replacements are ready before the batch drains, so capacity never drops."""
        replaced = 0
        while not self.closing and keep_going():
            batch = [p for p in group.processes if p.state is READY and stale(p)][:batch_size]
            if not batch:
                break
            group.spawning += len(batch)
            new = await asyncio.gather(*(self._spawn_one(group) for _ in batch))
            done = batch[:sum(1 for n in new if n is not None)]
            if not done:
                log.error("%s: %s stopped: could not spawn a replacement", group.name, reason)
                break
            for process in done:
                self.drain(process, reason)
            await asyncio.gather(*(asyncio.shield(p.worker.exited) for p in done))
            replaced += len(done)
        return replaced
