"""Requests waiting for a process: the queue entries and the errors of a refused request."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from tui_passenger.pool.process import PoolProcess


class QueueFull(Exception):
    """The app's request queue is at ``max_request_queue_size``, or a request waited in it
    longer than ``max_request_queue_time``: overload, answered 503 with ``Retry-After``."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        #: Seconds the client is told to wait before trying again.
        self.retry_after = retry_after


class PoolFull(Exception):
    """No worker of the app can start: max_pool_size is taken by apps at their minimum."""


class PoolClosed(Exception):
    """The pool is shutting down and takes no more requests."""


WaiterCallback = Callable[[PoolProcess | None, BaseException | None], None]


class Waiter:
    """A request waiting in a group's queue; cancelled when its client goes away."""

    __slots__ = ("callback", "cancelled", "pipelinable", "since")

    def __init__(self, callback: WaiterCallback, pipelinable: bool = False,
                 since: float = 0.0) -> None:
        self.callback = callback
        self.cancelled = False
        #: The request may be sent to a busy worker to run next (see Pool.try_pipeline).
        self.pipelinable = pipelinable
        #: When it was queued (monotonic clock): max_request_queue_time counts from here.
        self.since = since


def fail_waiters(waiters: deque[Waiter], error: BaseException) -> None:
    """Tell every waiter still there that no process is coming (``error``)."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.cancelled:
            waiter.callback(None, error)


def expire_waiters(waiters: deque[Waiter], deadline: float, error: QueueFull) -> None:
    """Fail the waiters queued at or before ``deadline`` with ``error``. Waiters leave in
    the order they came, so only the head of the queue needs looking at."""
    while waiters and waiters[0].since <= deadline:
        waiter = waiters.popleft()
        if not waiter.cancelled:
            waiter.callback(None, error)
