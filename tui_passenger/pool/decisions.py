"""The pool's one decider: which processes to spawn and which to stop, from desired state.

:class:`Decisions` is a part of :class:`~tui_passenger.pool.pool.Pool` (a base class, so
that a reconcile costs no extra call); the pool carries the decisions out with its own
``_spawn`` and ``_stop``.

Room in a full pool: a group with queued requests, or below its min_instances, may have an
idle process of another app stopped to make room (as Passenger does), but only one above
that app's min_instances, and never for an app whose spawns are failing (its spawn would
most likely fail again, and each try would cost a healthy app a worker).
"""

from __future__ import annotations

import asyncio
import time

from tui_passenger.pool.group import Alarm, Group
from tui_passenger.pool.process import READY, PoolProcess
from tui_passenger.pool.waiters import PoolFull, fail_waiters


def surplus(group: Group) -> int:
    """Processes of ``group`` above its min_instances (ready or spawning)."""
    return max(0, group.live_count() - group.min_instances)


class Decisions:
    """reconcile() and what it decides with: the surplus to stop, the room to make."""

    groups: dict[str, Group]
    retiring: set[Group]
    closing: bool
    max_pool_size: int
    _alarm: Alarm
    _idle_due: bool

    def _spawn(self, group: Group,
               result: asyncio.Future[PoolProcess | None] | None = None) -> None:
        raise NotImplementedError  # the pool's

    def _stop(self, process: PoolProcess, reason: str = "", *, force: bool = False) -> None:
        raise NotImplementedError  # the pool's

    def total(self) -> int:
        """Processes counted against max_pool_size."""
        total = sum(g.footprint() for g in self.groups.values())
        return total + sum(g.footprint() for g in self.retiring) if self.retiring else total

    def reconcile(self) -> None:
        """Decide which processes to spawn and which to stop, from desired state.

        Spawns: up to each group's wanted() (min_instances, one per ``concurrency`` queued
        requests, at most max_instances), outside spawn backoff, within max_pool_size (for
        queued requests, or to reach its minimum, it stops another app's idle process above
        that app's minimum to make room, unless its own spawns are failing: see
        _free_room); and a group's ``surge`` of replacements asked for by a rolling restart
        or refork, spawned at once whatever the limits and backoff say, as the processes
        they replace drain as soon as they are ready. Stops: idle processes above wanted()
        after a scale-down, and (when the ticker says so) processes idle past
        pool_idle_time down to the minimum.

        Orders about one given process are carried out where they are given, and then
        this is called to fill the gap: drain() (operator, max_requests, memory_limit, a
        rolling replacement) stops a draining process once its last request is done;
        kill(force=True) kills at once; a spawn that finishes after the spawn method
        changed, after its app was removed, or while closing is stopped as not needed;
        close() stops everything.
        """
        if self.closing:
            for group in self.groups.values():
                while group.surge:  # no more spawns: the replacement is not coming
                    group.surge.popleft().set_result(None)
            return
        now = time.monotonic()
        idle_due, self._idle_due = self._idle_due, False
        groups = self.groups.values()
        if idle_due or any(g.trim for g in groups):
            for group in groups:
                self._stop_surplus(group, now, idle_due)
        for group in groups:
            while group.surge:
                self._spawn(group, group.surge.popleft())
            missing = group.wanted() - group.live_count()
            while missing > 0:
                if now < group.backoff.until:
                    self._alarm.at(group.backoff.until)
                    break
                if self.total() >= self.max_pool_size and not self._free_room(group):
                    self._no_room(group)
                    break
                self._spawn(group)
                missing -= 1

    def _stop_surplus(self, group: Group, now: float, idle_due: bool) -> None:
        """Stop idle processes: above wanted() after a scale-down, and (``idle_due``) those
        idle past pool_idle_time, down to the group's minimum."""
        if group.trim:
            group.trim = False
            excess = group.live_count() - group.wanted()
            for process in group.idle_candidates()[:max(0, excess)]:
                self._stop(process, "scaled down")
        idle_time = group.app.pool_idle_time
        if not idle_due or not idle_time:
            return
        excess = surplus(group)
        for process in group.idle_candidates():
            if excess <= 0 or now - process.last_used < idle_time:
                break
            self._stop(process, f"idle for {idle_time:g} s")
            excess -= 1

    def _no_room(self, group: Group) -> None:
        """``group`` cannot spawn for want of room. If it has no process and none can come
        (its spawns are failing; or no place will ever free up: every other app at or
        below its minimum, nothing on its way out or spawning), its queued requests get
        the reason now rather than wait for nothing."""
        if group.processes or group.spawning or not group.waiters:
            return
        error = group.backoff.last_error
        if error is not None:
            fail_waiters(group.waiters, error)
            return
        others = [g for g in self.groups.values() if g is not group]
        if any(surplus(g) or g.spawning or any(p.state is not READY for p in g.processes)
               for g in others):
            return  # a place may free up: a busy worker above its minimum, an exit
        fail_waiters(group.waiters, PoolFull(
            f"{group.name}: no worker can start: the pool is full ({self.total()} of "
            f"max_pool_size {self.max_pool_size}) with every app at its min_instances"))

    def _evictable(self, needy: Group) -> list[PoolProcess]:
        """The idle processes that may be stopped to make room for ``needy``: those of the
        other apps above their min_instances, idle longest first within each app."""
        return [p for g in self.groups.values() if g is not needy
                for p in g.idle_candidates()[:surplus(g)]]

    def _free_room(self, needy: Group) -> bool:
        """Stop an idle process of another app, above that app's minimum, to make room for
        ``needy`` (requests queued, or below its own minimum); nothing for an app whose
        spawns are failing."""
        if needy.backoff.failures or not (
                needy.waiters or needy.live_count() < needy.min_instances):
            return False
        candidates = self._evictable(needy)
        if not candidates:
            return False
        victim = min(candidates, key=lambda p: p.last_used)
        self._stop(victim, f"making room for {needy.name}")
        return True

    def room_for(self, group: Group) -> int:
        """How many processes ``group`` could add now: free places under max_pool_size,
        and (unless its spawns are failing) idle processes of other apps above their
        minimum, which would be stopped to make room (see _free_room)."""
        free = max(0, self.max_pool_size - self.total())
        if group.backoff.failures:
            return free
        return free + len(self._evictable(group))
