"""A configuration reload's changes to the pool: an app added, updated in place or with new
workers, or removed (its requests finish, then its workers and preloader stop).

The pool's :meth:`~tui_passenger.pool.pool.Pool.add_app`, ``update_app`` and ``remove_app``
call these; what to change comes from :mod:`tui_passenger.reload`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from tui_passenger.config import AppConfig
from tui_passenger.pool.events import AppAdded, AppRemoved, Reconfigured
from tui_passenger.pool.group import Group
from tui_passenger.pool.process import DRAINING, READY, STOPPING
from tui_passenger.pool.waiters import PoolClosed, fail_waiters

if TYPE_CHECKING:
    from tui_passenger.pool.pool import Pool

REMOVED = "removed from the configuration"


def add_app(pool: Pool, group: Group) -> None:
    """Serve ``group``'s app from now on (its minimum starts at the next reconcile)."""
    pool.groups[group.name] = group
    pool.emit(AppAdded(group))


def update_app(pool: Pool, group: Group, app: AppConfig, keys: tuple[str, ...],
               restart: bool) -> asyncio.Task[int] | None:
    """Give ``group`` the new ``app`` settings (``keys`` changed). With ``restart``, its
    workers are replaced, one at a time, from a new spawner made with them (returns that
    rolling restart's task); otherwise they apply in place."""
    old = group.app
    group.app = app
    if app.min_instances != old.min_instances:
        group.min_instances = app.min_instances
    if "min_instances" in keys or "max_instances" in keys:
        group.trim = True  # idle ones above a lowered minimum or maximum stop
    group.pipeline.window = app.pipeline_window
    if app.refork_after != old.refork_after:
        group.rollout.counts = tuple(app.refork_after)
        group.rollout.restart_schedule()  # from the first of the new counts
    pool.emit(Reconfigured(group, keys, restart))
    if not restart:
        group.spawner.app = app  # live keys only: what it made from the app still holds
        return None
    group.backoff.succeeded()  # the new settings get their chance at once
    # Either way the new spawner is made from group.app, the new settings, and the old one
    # (its preloader or mold) is stopped once the workers are replaced.
    if app.spawn_method != group.spawn_method:
        return pool.set_spawn_method(group, app.spawn_method)
    return pool.restart(group, "configuration changed")


def remove_app(pool: Pool, group: Group) -> asyncio.Task[None]:
    """Stop serving ``group``'s app: no new requests reach it (the caller has swapped the
    router already), the queued ones are served by its workers, then they drain and stop,
    and its spawner (preloader) closes. Returns the task doing so."""
    del pool.groups[group.name]
    group.retired = True
    group.min_instances = 0
    pool.retiring.add(group)
    pool.emit(AppRemoved(group))
    return pool.track(_retire(pool, group))


async def _retire(pool: Pool, group: Group) -> None:
    grace = pool.config.server.shutdown_timeout
    deadline = time.monotonic() + grace
    try:
        rollout = group.rollout.task
        if rollout is not None and not rollout.done():
            rollout.cancel()
        # Queued requests first: the workers still ready serve them (none join the queue).
        while group.waiters and any(p.state is READY for p in group.processes) \
                and time.monotonic() < deadline:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(pool.idle_changed(), deadline - time.monotonic())
        fail_waiters(group.waiters, PoolClosed(f"{group.name}: {REMOVED}"))
        await pool.spawns_settled(group)  # a spawn that lands now is stopped as not needed
        for process in list(group.processes):
            if process.state is READY:
                pool.drain(process, REMOVED)
            elif process.state is not DRAINING and process.state is not STOPPING:
                pool.kill(process, force=True, reason=REMOVED)  # a mold in the making
        exits = [asyncio.shield(p.worker.exited) for p in group.processes]
        try:
            await asyncio.wait_for(asyncio.gather(*exits),
                                   max(0.1, deadline - time.monotonic()) + grace)
        except asyncio.TimeoutError:
            for process in list(group.processes):
                pool.kill(process, force=True, reason=f"{REMOVED}: still busy after {grace:g} s")
            await asyncio.gather(*exits, return_exceptions=True)
        await group.spawner.close()
    finally:
        pool.retiring.discard(group)
