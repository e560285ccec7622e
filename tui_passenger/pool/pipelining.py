"""Pipelining to busy workers (``pipeline_window``), part of :class:`~tui_passenger.pool.pool.Pool`.

While an app answers fast and no worker can be added, a GET-like request that would wait
for a worker is sent to a busy one-request worker instead and runs as soon as its current
request ends, without the proxy's round trip in between. What was sent behind a request
that then runs past the window is taken back and queued again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tui_passenger.pool.group import PIPELINE_BACKOFF, READY, Group, PoolProcess


class Pipelining:
    """The pool's pipelining decisions; the state they use lives on the Pool and its groups."""

    closing: bool
    max_pool_size: int
    total: Callable[[], int]

    def try_pipeline(self, group: Group) -> PoolProcess | None:
        """A busy worker of ``group`` that may take one more request now, or None.

        Only for workers that run one request at a time, one extra request each, and only
        when no request is queued before this one and no worker can be added (the group is
        at max_instances or the pool at max_pool_size: else the request queues and a worker
        is spawned for it, as without pipelining). The request waits in the worker's socket
        and runs as soon as the current one is done, without the proxy's round trip in
        between; the price is that it cannot go to another worker that frees up first. So
        it is done only when that costs little: the current request started less than
        ``pipeline_window`` ago and the app's last PIPELINE_STREAK requests all took less
        than that (one slower turns pipelining off for PIPELINE_BACKOFF seconds). The caller
        sends only requests that may be retried on another worker (idempotent, no body).
        """
        now = time.monotonic()
        if group.waiters or not group.may_pipeline(now) or not self._full(group):
            return None
        window = group.app.pipeline_window
        best: PoolProcess | None = None
        for process in group.processes:
            if process.state is READY and process.sessions == 1 \
                    and process.worker.concurrency == 1 and now - process.busy_since < window \
                    and (best is None or process.busy_since < best.busy_since):
                best = process  # the one running longest is likely the first to finish
        if best is not None:
            best.sessions += 1
        return best

    def pipelined(self, process: PoolProcess, request: Any) -> None:
        """``request`` was sent to the busy ``process`` to run next; it is taken back if the
        request ahead of it runs past the window (reclaim_stuck)."""
        process.queued.append(request)
        group = process.group
        group.pipelined += 1
        if group.reclaim_timer is None:
            group.reclaim_timer = asyncio.get_running_loop().call_later(
                group.app.pipeline_window / 2, self.reclaim_stuck, group)

    def unqueue(self, process: PoolProcess, request: Any) -> None:
        """``request`` no longer waits in ``process``'s pipelined queue (it started, or it
        left)."""
        queued = process.queued
        if queued and request in queued:
            queued.remove(request)

    def reclaim_stuck(self, group: Group) -> None:
        """Take back what was pipelined to workers whose current request has run longer
        than the window: each such request goes back to the queue (or to a free worker)
        instead of waiting behind a slow one. The worker skips a request whose connection
        the proxy has closed (see WSGIServer); pipelining pauses (a request was slow)."""
        group.reclaim_timer = None
        if self.closing:
            return  # what was sent still gets served: the pool waits for every session
        now = time.monotonic()
        window = group.app.pipeline_window
        waiting = False
        for process in group.processes:
            if not process.queued:
                continue
            if now - process.busy_since <= window:
                waiting = True
                continue
            group.fast_streak = 0
            group.pipeline_off_until = now + PIPELINE_BACKOFF
            stuck = list(process.queued)
            process.queued.clear()
            for request in stuck:
                process.sessions -= 1
                group.reclaimed += 1
                request.reclaim()
        if waiting and group.reclaim_timer is None:
            group.reclaim_timer = asyncio.get_running_loop().call_later(
                window / 2, self.reclaim_stuck, group)

    def _full(self, group: Group) -> bool:
        """No worker can be added to ``group`` now (max_instances, or max_pool_size)."""
        return group.at_max() or self.total() >= self.max_pool_size

    def _pipeline_limit(self, process: PoolProcess, group: Group, now: float) -> int:
        """Sessions ``process`` may hold: its concurrency, or one more when it has just
        started a pipelined request and pipelining is on (see try_pipeline)."""
        concurrency = process.worker.concurrency
        if concurrency == 1 and process.sessions == 1 and group.may_pipeline(now) \
                and self._full(group):
            return 2
        return concurrency

    @staticmethod
    def _timed(process: PoolProcess, group: Group, now: float) -> None:
        """A request on ``process`` ended at ``now``: keep the app's streak of requests
        within the window (or pause pipelining), and start the clock of the next one."""
        if process.worker.concurrency == 1:
            if now - process.busy_since < group.app.pipeline_window:
                group.fast_streak += 1
            else:
                group.fast_streak = 0
                group.pipeline_off_until = now + PIPELINE_BACKOFF
        process.busy_since = now  # a request sent to it while busy starts now
        if process.queued:
            process.queued.popleft()  # ... the oldest of them (a worker runs one at a time)
