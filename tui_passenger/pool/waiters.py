"""Requests waiting for a process: the queue entries and the errors of a refused request."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from tui_passenger.pool.process import PoolProcess


class QueueFull(Exception):
    """The app's request queue is at ``max_request_queue_size``."""


class PoolFull(Exception):
    """No worker of the app can start: max_pool_size is taken by apps at their minimum."""


class PoolClosed(Exception):
    """The pool is shutting down and takes no more requests."""


WaiterCallback = Callable[[PoolProcess | None, BaseException | None], None]


class Waiter:
    """A request waiting in a group's queue; cancelled when its client goes away."""

    __slots__ = ("callback", "cancelled", "pipelinable")

    def __init__(self, callback: WaiterCallback, pipelinable: bool = False) -> None:
        self.callback = callback
        self.cancelled = False
        #: The request may be sent to a busy worker to run next (see Pool.try_pipeline).
        self.pipelinable = pipelinable


def fail_waiters(waiters: deque[Waiter], error: BaseException) -> None:
    """Tell every waiter still there that no process is coming (``error``)."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.cancelled:
            waiter.callback(None, error)
