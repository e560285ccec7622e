"""One group per app: its processes, its request queue, its spawner."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from pathlib import Path
from typing import Any

from tui_passenger.config import AppConfig
from tui_passenger.engine import OutputSink, Spawner, SpawnError, WorkerProcess, make_spawner

#: Backoff after consecutive spawn failures: BASE × 2^(n-1) seconds, at most CAP.
BACKOFF_BASE = 0.5
BACKOFF_CAP = 60.0

#: Pipelining (pipeline_window) starts after this many requests in a row within the window,
#: and stops for PIPELINE_BACKOFF seconds after one that took longer.
PIPELINE_STREAK = 50
PIPELINE_BACKOFF = 10.0

READY, DRAINING, STOPPING = "ready", "draining", "stopping"
#: Refork: a worker taking no more requests until idle, then becoming the new preloader.
MOLDING, MOLD = "molding", "mold"


class PoolProcess:
    """A worker as the pool sees it: state, load, counters."""

    __slots__ = ("worker", "group", "state", "sessions", "processed", "last_used",
                 "busy_since", "queued", "max_requests", "connections", "stop_reason", "idle")

    def __init__(self, worker: WorkerProcess, group: Group) -> None:
        self.worker = worker
        self.group = group
        self.state = READY
        self.sessions = 0
        self.processed = 0
        self.last_used = time.monotonic()
        #: When the request it is running now started (monotonic; see Pool.try_pipeline).
        self.busy_since = 0.0
        #: Requests pipelined to it that have not started yet, oldest first: objects with a
        #: reclaim() method (the proxy's exchanges; see Pool.reclaim_stuck).
        self.queued: deque[Any] = deque()
        app = group.app
        jitter = random.randint(0, app.max_requests_jitter) if app.max_requests_jitter else 0
        self.max_requests = app.max_requests + jitter if app.max_requests else 0
        #: Idle keep-alive connections to the worker, owned by the proxy.
        self.connections: list[Any] = []
        self.stop_reason = ""
        #: Set when a molding process has no session left (see Pool.refork).
        self.idle: asyncio.Future[None] | None = None

    @property
    def pid(self) -> int:
        """The worker's pid."""
        return self.worker.pid

    @property
    def busy(self) -> bool:
        """True while every slot of the worker is taken."""
        return self.sessions >= self.worker.concurrency

    def __repr__(self) -> str:
        return f"<PoolProcess {self.group.name} pid={self.pid} {self.state} {self.sessions}>"


class Group:
    """The processes of one app, the requests waiting for one, and how to spawn more."""

    def __init__(self, app: AppConfig, socket_dir: Path, on_output: OutputSink | None) -> None:
        self.app = app
        self.name = app.name
        self.socket_dir = socket_dir
        self.on_output = on_output
        self.spawner: Spawner = make_spawner(app, socket_dir, on_output=on_output)
        self.processes: list[PoolProcess] = []
        self.spawning = 0
        self.waiters: deque[Any] = deque()  # pool.Waiter entries, oldest first
        self.min_instances = app.min_instances
        self.spawn_failures = 0
        self.backoff_until = 0.0
        self.last_error: SpawnError | None = None
        self.spawned = 0
        self.restarts = 0
        self.requests = 0
        #: Requests sent to a busy worker to run next (pipeline_window); requests in a row
        #: that finished within the window, and until when pipelining is off because one
        #: took longer (see Pool.try_pipeline).
        self.pipelined = 0
        self.fast_streak = 0
        self.pipeline_off_until = 0.0
        #: Pipelined requests taken back from a worker stuck on a slow request, and the
        #: timer of the next check for such workers.
        self.reclaimed = 0
        self.reclaim_timer: asyncio.TimerHandle | None = None
        #: The rolling restart in progress, if any (one at a time per group).
        self.rolling: asyncio.Task[int] | None = None
        #: refork_after: the next count, 0 when there is none left.
        self.refork_index = 0
        self.refork_next = app.refork_after[0] if app.refork_after else 0
        self.reforking = False
        #: Why the last refork did not happen (None: it did, or none was tried).
        self.last_refork_error: str | None = None

    def may_pipeline(self, now: float) -> bool:
        """True when requests may be sent to busy workers (pipeline_window), now."""
        return (self.fast_streak >= PIPELINE_STREAK and now >= self.pipeline_off_until
                and self.app.pipeline_window > 0)

    def next_refork_count(self) -> None:
        """The count in refork_after after this one (0: no more automatic reforks)."""
        self.refork_index += 1
        counts = self.app.refork_after
        self.refork_next = counts[self.refork_index] if self.refork_index < len(counts) else 0

    @property
    def spawn_method(self) -> str:
        """The method new workers are spawned with."""
        return self.spawner.method

    def pick(self) -> PoolProcess | None:
        """The least busy ready process with a free slot; the first one on a tie."""
        best: PoolProcess | None = None
        best_load = 1.0
        for process in self.processes:
            if process.state is not READY:
                continue
            load = process.sessions / process.worker.concurrency
            if load < best_load:
                best, best_load = process, load
                if load == 0.0:
                    break
        return best

    def live_count(self) -> int:
        """Processes that take or will take new requests: ready ones and those spawning."""
        live = self.spawning
        for process in self.processes:  # a loop, not sum(): at_max() runs per queued request
            if process.state is READY:
                live += 1
        return live

    def footprint(self) -> int:
        """Processes counted against max_pool_size: all but those on their way out."""
        return sum(1 for p in self.processes if p.state is not STOPPING) + self.spawning

    def wanted(self) -> int:
        """How many ready-or-spawning processes the group should have right now."""
        want = self.min_instances
        if self.waiters and self.pick() is None:
            # One more process for every `concurrency` queued requests not yet covered by
            # a spawn in flight (WSGI: one per request).
            per = max(1, self.app.effective_concurrency(self._interface()))
            extra = -(-len(self.waiters) // per) - self.spawning
            want = max(want, self.live_count() + max(0, extra))
        limit = self.app.max_instances
        return min(want, limit) if limit else want

    def _interface(self) -> str:
        for process in self.processes:
            return process.worker.interface
        return self.app.interface if self.app.interface != "auto" else "wsgi"

    def at_max(self) -> bool:
        """True when max_instances processes are up or coming (no point in reconciling)."""
        limit = self.app.max_instances
        return bool(limit) and self.live_count() >= limit

    def idle_candidates(self) -> list[PoolProcess]:
        """Ready processes with no session, idle longest first."""
        idle = [p for p in self.processes if p.state is READY and p.sessions == 0]
        idle.sort(key=lambda p: p.last_used)
        return idle

    def note_spawn_failure(self, error: SpawnError) -> float:
        """Record a failed spawn; returns the backoff delay before the next try."""
        self.spawn_failures += 1
        self.last_error = error
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (self.spawn_failures - 1))
        self.backoff_until = time.monotonic() + delay
        return delay

    def note_spawn_success(self) -> None:
        """A spawn worked: forget the failures."""
        self.spawn_failures = 0
        self.backoff_until = 0.0
        self.last_error = None
        self.spawned += 1

    def set_spawn_method(self, method: str) -> Spawner:
        """Use ``method`` for new workers; returns the old spawner (to close it)."""
        old = self.spawner
        self.spawner = make_spawner(self.app, self.socket_dir, method, on_output=self.on_output)
        return old
