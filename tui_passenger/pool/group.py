"""One group per app: its processes, its request queue, its spawner, and the state of
each concern (spawn backoff, pipelining, live operations) in a small object of its own."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from tui_passenger.activity import MemoryRing
from tui_passenger.config import AppConfig
from tui_passenger.engine import OutputSink, Spawner, SpawnError, make_spawner
from tui_passenger.pool.live import Rollout
from tui_passenger.pool.pipelining import PIPELINE_BACKOFF, PIPELINE_STREAK, PipelineState
from tui_passenger.pool.process import DRAINING, MOLD, MOLDING, READY, STOPPING, PoolProcess
from tui_passenger.pool.waiters import QueueFull, Waiter, expire_waiters

__all__ = ["DRAINING", "MOLD", "MOLDING", "PIPELINE_BACKOFF", "PIPELINE_STREAK", "READY",
           "STOPPING", "Alarm", "Backoff", "Group", "PoolProcess", "SpawnerFactory"]

#: Backoff after consecutive spawn failures: BASE × 2^(n-1) seconds, at most CAP.
BACKOFF_BASE = 0.5
BACKOFF_CAP = 60.0

#: Makes a group's spawner: ``(app, socket_dir, method, on_output=...)`` (make_spawner).
SpawnerFactory = Callable[..., Spawner]


class Backoff:
    """Consecutive spawn failures of one app, and until when the next spawn waits."""

    __slots__ = ("failures", "until", "last_error")

    def __init__(self) -> None:
        self.failures = 0
        self.until = 0.0
        self.last_error: SpawnError | None = None

    def failed(self, error: SpawnError) -> float:
        """Record a failed spawn; returns the delay before the next try."""
        self.failures += 1
        self.last_error = error
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (self.failures - 1))
        self.until = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        """A spawn worked: forget the failures."""
        self.failures = 0
        self.until = 0.0
        self.last_error = None


class Alarm:
    """One timer that calls ``callback`` at the earliest time asked for (monotonic clock):
    the pool's wake-up at the end of a spawn backoff."""

    __slots__ = ("_callback", "_timer")

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._timer: asyncio.TimerHandle | None = None

    def at(self, when: float) -> None:
        """Call back at ``when`` (or earlier, if already set for earlier)."""
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + max(0.0, when - time.monotonic()), self._fire)

    @property
    def armed(self) -> bool:
        """Whether a call back is coming."""
        return self._timer is not None

    def cancel(self) -> None:
        """No call back."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self._callback()


class Group:
    """The processes of one app, the requests waiting for one, and how to spawn more."""

    def __init__(self, app: AppConfig, socket_dir: Path, on_output: OutputSink | None,
                 spawner_factory: SpawnerFactory = make_spawner) -> None:
        self.app = app
        self.name = app.name
        self.socket_dir = socket_dir
        self.on_output = on_output
        self._make_spawner = spawner_factory
        self.spawner: Spawner = spawner_factory(app, socket_dir, on_output=on_output)
        self.processes: list[PoolProcess] = []
        #: The app's PSS and saving vs direct over time (status.record_memory).
        self.memory = MemoryRing()
        self.spawning = 0
        self.waiters: deque[Waiter] = deque()  # oldest first
        #: Fails the waiters past max_request_queue_time: one timer for the whole queue,
        #: set for its oldest waiter while the queue is not empty (see expire_queue).
        self.queue_alarm = Alarm(self.expire_queue)
        self.min_instances = app.min_instances
        #: Desired state for the pool's reconcile(): replacements to spawn beyond what the
        #: group wants (a rolling restart's; each resolves to the new process or None), and
        #: whether idle processes above what it wants should stop now (scaled down).
        self.surge: deque[asyncio.Future[PoolProcess | None]] = deque()
        self.trim = False
        #: Removed by a configuration reload: its workers drain and stop, none is spawned.
        self.retired = False
        self.spawned = 0
        #: Rolling restarts (operator, restart.txt, watch, spawn-method switch), and workers
        #: that exited without being asked to.
        self.restarts = 0
        self.crashes = 0
        #: ROOT/tmp/always_restart.txt exists (set by the file triggers' timer): every
        #: request gets a worker of a freshly loaded app (see LiveOperations.fresh_load).
        self.always_restart = False
        self.requests = 0
        self.backoff = Backoff()
        self.pipeline = PipelineState(app.pipeline_window)
        self.rollout = Rollout(app.refork_after)

    # -- the request queue ---------------------------------------------------------------

    def queue_refusal(self, why: str) -> QueueFull:
        """The 503 for a request the queue does not take (any longer): retry after the time
        the queue may take to move on (max_request_queue_time, at least 1 s)."""
        return QueueFull(f"{self.name}: {why}",
                         retry_after=max(1, math.ceil(self.app.max_request_queue_time)))

    def expire_queue(self) -> None:
        """Answer 503 to the waiters queued longer than max_request_queue_time, then set the
        alarm for the next oldest."""
        limit = self.app.max_request_queue_time
        if not limit:  # turned off by a reload
            return
        waiters = self.waiters
        deadline = time.monotonic() - limit
        if waiters and waiters[0].since <= deadline:
            expire_waiters(waiters, deadline, self.queue_refusal(
                f"waited in the request queue longer than max_request_queue_time ({limit:g} s)"))
        if waiters:
            self.queue_alarm.at(waiters[0].since + limit)

    def queue_age(self, now: float) -> float:
        """Seconds the oldest queued request has waited (0 when none waits)."""
        return now - self.waiters[0].since if self.waiters else 0.0

    # -- what status.py and the tests read -----------------------------------------------

    @property
    def last_error(self) -> SpawnError | None:
        """The last spawn failure, until a spawn works."""
        return self.backoff.last_error

    @property
    def spawn_failures(self) -> int:
        """Spawns failed in a row."""
        return self.backoff.failures

    @property
    def backoff_until(self) -> float:
        """No spawn before this (monotonic) time."""
        return self.backoff.until

    @property
    def pipelined(self) -> int:
        """Requests sent to a busy worker to run next."""
        return self.pipeline.pipelined

    @property
    def reclaimed(self) -> int:
        """Pipelined requests taken back from a worker stuck on a slow request."""
        return self.pipeline.reclaimed

    def may_pipeline(self, now: float) -> bool:
        """True when requests may be sent to busy workers (pipeline_window), now."""
        return self.pipeline.on(now)

    @property
    def refork_next(self) -> int:
        """The request count of a worker that triggers the next refork (0: none)."""
        return self.rollout.refork_next

    @property
    def reforking(self) -> bool:
        """A refork is asked for or in progress."""
        return self.rollout.reforking

    @property
    def last_refork_error(self) -> str | None:
        """Why the last refork did not happen (None: it did, or none was tried)."""
        return self.rollout.last_refork_error

    @property
    def spawn_method(self) -> str:
        """The method new workers are spawned with."""
        return self.spawner.method

    # -- decisions -----------------------------------------------------------------------

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
        if not limit:
            return False
        live = self.spawning  # live_count(), without the call: twice per queued request
        for process in self.processes:
            if process.state is READY:
                live += 1
        return live >= limit

    def idle_candidates(self) -> list[PoolProcess]:
        """Ready processes with no session (nor open WebSocket), idle longest first."""
        idle = [p for p in self.processes
                if p.state is READY and p.sessions == 0 and not p.websockets]
        idle.sort(key=lambda p: p.last_used)
        return idle

    def new_spawner(self, method: str | None = None) -> Spawner:
        """A spawner of ``method`` (default: the current one's) that has loaded nothing yet."""
        return self._make_spawner(self.app, self.socket_dir, method or self.spawn_method,
                                  on_output=self.on_output)

    def use_spawner(self, spawner: Spawner) -> Spawner:
        """Spawn new workers with ``spawner``; returns the old one (to close it)."""
        old, self.spawner = self.spawner, spawner
        spawner.numbers = old.numbers  # worker numbers go on, whatever the spawner
        return old

    def set_spawn_method(self, method: str) -> Spawner:
        """Use ``method`` for new workers; returns the old spawner (to close it)."""
        return self.use_spawner(self.new_spawner(method))
