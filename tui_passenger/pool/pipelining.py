"""Pipelining to busy workers (``pipeline_window``).

While an app answers fast and no worker can be added, a GET-like request that would wait
for a worker is sent to a busy one-request worker instead and runs as soon as its current
request ends, without the proxy's round trip in between. What was sent behind a request
that then runs past the window is taken back and queued again.

Each group keeps its own :class:`PipelineState`; :class:`Pipelining` makes the decisions
for the pool, which tells it whether a group can still grow and whether it is closing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tui_passenger.pool.process import READY, PoolProcess

if TYPE_CHECKING:
    from tui_passenger.pool.group import Group

#: Pipelining (pipeline_window) starts after this many requests in a row within the window,
#: and stops for PIPELINE_BACKOFF seconds after one that took longer.
PIPELINE_STREAK = 50
PIPELINE_BACKOFF = 10.0


class PipelineState:
    """One app's pipelining: whether it is on, and what was pipelined or taken back."""

    __slots__ = ("window", "fast_streak", "off_until", "pipelined", "reclaimed", "reclaim_timer")

    def __init__(self, window: float) -> None:
        self.window = window
        #: Requests in a row that finished within the window, and until when pipelining is
        #: off because one took longer.
        self.fast_streak = 0
        self.off_until = 0.0
        #: Requests sent to a busy worker to run next, and those taken back from a worker
        #: stuck on a slow request.
        self.pipelined = 0
        self.reclaimed = 0
        #: The next check for workers stuck with pipelined requests behind a slow one.
        self.reclaim_timer: asyncio.TimerHandle | None = None

    def on(self, now: float) -> bool:
        """True when requests may be sent to busy workers, now."""
        return self.fast_streak >= PIPELINE_STREAK and now >= self.off_until and self.window > 0

    def pause(self, now: float) -> None:
        """A request took longer than the window: off for PIPELINE_BACKOFF seconds."""
        self.fast_streak = 0
        self.off_until = now + PIPELINE_BACKOFF

    def ended(self, process: PoolProcess, now: float) -> None:
        """A request on ``process`` ended at ``now``: keep the streak of requests within the
        window (or pause), and start the clock of the next one."""
        if process.worker.concurrency == 1:
            if now - process.busy_since < self.window:
                self.fast_streak += 1
            else:
                self.pause(now)
        process.busy_since = now  # a request sent to it while busy starts now
        if process.queued:
            process.queued.popleft()  # ... the oldest of them (a worker runs one at a time)


class Pipelining:
    """The pool's pipelining decisions: which busy worker takes one more, what to take back.

    ``full(group)``: no worker can be added to the group now (max_instances or
    max_pool_size); ``closing()``: the pool is shutting down.
    """

    def __init__(self, full: Callable[[Group], bool], closing: Callable[[], bool]) -> None:
        self.full = full
        self.closing = closing

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
        if group.waiters:  # (before the clock: the common case under load)
            return None
        now = time.monotonic()
        if not group.pipeline.on(now) or not self.full(group):
            return None
        window = group.pipeline.window
        best: PoolProcess | None = None
        for process in group.processes:
            if process.state is READY and process.sessions == 1 \
                    and process.worker.concurrency == 1 and now - process.busy_since < window \
                    and (best is None or process.busy_since < best.busy_since):
                best = process  # the one running longest is likely the first to finish
        if best is not None:
            best.checkout()
        return best

    def limit(self, process: PoolProcess, group: Group, now: float) -> int:
        """Sessions ``process`` may hold: its concurrency, or one more when it has just
        started a pipelined request and pipelining is on (see try_pipeline)."""
        concurrency = process.worker.concurrency
        if concurrency == 1 and process.sessions == 1:
            state = group.pipeline  # state.on(now), without the call (once per hand-over)
            if state.fast_streak >= PIPELINE_STREAK and now >= state.off_until \
                    and state.window > 0 and self.full(group):
                return 2
        return concurrency

    def pipelined(self, process: PoolProcess, request: Any) -> None:
        """``request`` was sent to the busy ``process`` to run next; it is taken back if the
        request ahead of it runs past the window (reclaim_stuck)."""
        process.queued.append(request)
        state = process.group.pipeline
        state.pipelined += 1
        if state.reclaim_timer is None:
            self._check_later(process.group)

    def unqueue(self, process: PoolProcess, request: Any) -> None:
        """``request`` no longer waits in ``process``'s pipelined queue (it started, or it
        left)."""
        queued = process.queued
        # Not remove() under a try: the common miss (the request ahead of a pipelined one
        # starting) would raise and catch an exception per response.
        if queued and request in queued:
            queued.remove(request)

    def reclaim_stuck(self, group: Group) -> None:
        """Take back what was pipelined to workers whose current request has run longer
        than the window: each such request goes back to the queue (or to a free worker)
        instead of waiting behind a slow one. The worker skips a request whose connection
        the proxy has closed (see WSGIServer); pipelining pauses (a request was slow)."""
        state = group.pipeline
        state.reclaim_timer = None
        if self.closing():
            return  # what was sent still gets served: the pool waits for every session
        now = time.monotonic()
        waiting = False
        for process in group.processes:
            if not process.queued:
                continue
            if now - process.busy_since <= state.window:
                waiting = True
                continue
            state.pause(now)
            stuck = list(process.queued)
            process.queued.clear()
            for request in stuck:
                process.checkin()
                state.reclaimed += 1
                request.reclaim()
        if waiting and state.reclaim_timer is None:
            self._check_later(group)

    def _check_later(self, group: Group) -> None:
        group.pipeline.reclaim_timer = asyncio.get_running_loop().call_later(
            group.pipeline.window / 2, self.reclaim_stuck, group)
