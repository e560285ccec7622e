"""A worker as the pool sees it, and the states it goes through."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from tui_passenger.activity import MemoryRing
from tui_passenger.engine import WorkerProcess

if TYPE_CHECKING:
    from tui_passenger.pool.group import Group

READY, DRAINING, STOPPING = "ready", "draining", "stopping"
#: Refork: a worker taking no more requests until idle, then becoming the new preloader.
MOLDING, MOLD = "molding", "mold"


class PoolProcess:
    """A worker as the pool sees it: state, load, counters.

    ``sessions`` (the requests sent to it and not finished) changes only through
    :meth:`checkout` and :meth:`checkin`. ``websockets`` counts the WebSockets open on it
    (and upgrades sent to it not yet answered): they hold no session once open, since an
    ASGI worker runs them outside its request concurrency (see proxy/websocket.py).
    """

    __slots__ = ("worker", "group", "state", "sessions", "processed", "last_used",
                 "busy_since", "queued", "max_requests", "connections", "stop_reason", "idle",
                 "websockets", "memory")

    def __init__(self, worker: WorkerProcess, group: Group) -> None:
        self.worker = worker
        self.group = group
        self.state = READY
        self.sessions = 0
        self.websockets = 0
        self.processed = 0
        self.last_used = time.monotonic()
        #: When the request it is running now started (monotonic; see Pool.try_pipeline).
        self.busy_since = 0.0
        #: Requests pipelined to it that have not started yet, oldest first: objects with a
        #: reclaim() method (the proxy's exchanges; see Pipelining.reclaim_stuck).
        self.queued: deque[Any] = deque()
        app = group.app
        jitter = random.randint(0, app.max_requests_jitter) if app.max_requests_jitter else 0
        self.max_requests = app.max_requests + jitter if app.max_requests else 0
        #: Idle keep-alive connections to the worker, owned by the proxy.
        self.connections: list[Any] = []
        self.stop_reason = ""
        #: Set when a molding process has no session left (see LiveOperations.refork), or
        #: when a draining one with open WebSockets stops (LiveOperations._retired).
        self.idle: asyncio.Future[None] | None = None
        #: Its shared and private dirty memory over its life (status.record_memory).
        self.memory = MemoryRing()

    @property
    def pid(self) -> int:
        """The worker's pid."""
        return self.worker.pid

    @property
    def busy(self) -> bool:
        """True while every slot of the worker is taken."""
        return self.sessions >= self.worker.concurrency

    def checkout(self) -> None:
        """One more request sent to it (the clock of a request starts if it was idle)."""
        if not self.sessions:
            self.busy_since = time.monotonic()
        self.sessions += 1

    def checkin(self) -> None:
        """One request fewer: it finished, or was taken back before it started."""
        self.sessions -= 1

    def __repr__(self) -> str:
        return f"<PoolProcess {self.group.name} pid={self.pid} {self.state} {self.sessions}>"
