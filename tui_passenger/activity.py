"""What a worker is doing and how memory went, as typed snapshot data: the requests in
flight on a worker, and short memory histories (a worker's shared vs private memory, an
app's saving vs direct spawning). Part of :mod:`tui_passenger.snapshot` (plain data, no
server or UI imports); the JSON keys are documented in :mod:`tui_passenger.status`.

A history is kept by :class:`MemoryRing` (bounded: it halves its resolution instead of
dropping its oldest points, so it always spans the whole life of what it follows) and
travels as at most :data:`HISTORY_POINTS` points, in MiB with one decimal, to keep the
status JSON small with many workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["HISTORY_POINTS", "MemoryHistory", "MemoryRing", "RequestStatus"]

#: The most points a history keeps (and the status JSON carries) per worker or app.
HISTORY_POINTS = 32
_MIB = float(1 << 20)


@dataclass(frozen=True, slots=True)
class RequestStatus:
    """A request in flight on a worker (sent to it, response not yet complete)."""

    #: The request's X-Request-Id (the one the proxy sends to the worker and the client).
    id: str
    method: str
    #: The path with its query string, as the client sent it.
    path: str
    #: Seconds since the proxy received it (time spent waiting for a worker included).
    age: float

    def to_json(self) -> dict[str, Any]:
        """The schema's request object."""
        return {"id": self.id, "method": self.method, "path": self.path, "age": self.age}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RequestStatus:
        """Rebuild from the schema's request object."""
        return cls(id=data["id"], method=data["method"], path=data["path"], age=data["age"])


@dataclass(frozen=True, slots=True)
class MemoryHistory:
    """Two series over time, oldest first, in MiB: a worker's ``shared`` and ``private``
    (private dirty) memory, or an app's ``pss`` and ``saving`` vs direct spawning
    (:attr:`first`, :attr:`second`). ``span``: the seconds from the first point to the last.
    """

    first: tuple[float, ...] = ()
    second: tuple[float, ...] = ()
    span: float = 0.0

    def to_json(self, first: str, second: str) -> dict[str, Any]:
        """The schema's history object, the two series named ``first`` and ``second``."""
        return {first: list(self.first), second: list(self.second), "span": self.span}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, first: str,
                  second: str) -> MemoryHistory:
        """Rebuild from the schema's history object (absent in older instances: empty)."""
        if not data:
            return cls()
        return cls(tuple(data[first]), tuple(data[second]), data["span"])


class MemoryRing:
    """A bounded history of two byte values over time, for one worker or one app.

    Fed with each new memory sample (:meth:`add`, on the manager's event loop); when full,
    neighbouring points are merged (averaged) and from then on every point averages twice
    as many samples: the history covers the whole life at a falling resolution, in
    ``HISTORY_POINTS`` points at most, and costs the same however long it runs.
    """

    __slots__ = ("_first", "_second", "_stride", "_pending", "_sum", "_history", "started",
                 "last_at")

    def __init__(self) -> None:
        self._first: list[float] = []
        self._second: list[float] = []
        #: Samples per point; doubles each time the ring is full.
        self._stride = 1
        self._pending = 0
        self._sum = [0.0, 0.0]
        #: What history() returned, until the next sample (every status would build it).
        self._history: MemoryHistory | None = None
        #: time.time() of the first and of the latest sample (0: none yet).
        self.started = 0.0
        self.last_at = 0.0

    def add(self, at: float, first: int, second: int) -> None:
        """One sample taken at ``at`` (epoch seconds); a sample not newer than the last
        one is ignored (the same sample read twice)."""
        if at <= self.last_at:
            return
        if not self.started:
            self.started = at
        self.last_at = at
        self._history = None
        total = self._sum
        total[0] += first
        total[1] += second
        self._pending += 1
        if self._pending < self._stride:
            return
        self._first.append(total[0] / self._pending / _MIB)
        self._second.append(total[1] / self._pending / _MIB)
        self._pending, total[0], total[1] = 0, 0.0, 0.0
        if len(self._first) >= HISTORY_POINTS:
            self._first = _halve(self._first)
            self._second = _halve(self._second)
            self._stride *= 2

    def history(self) -> MemoryHistory:
        """The points so far, rounded to 0.1 MiB."""
        if self._history is None:
            self._history = MemoryHistory(tuple(round(v, 1) for v in self._first),
                                          tuple(round(v, 1) for v in self._second),
                                          round(self.last_at - self.started, 1))
        return self._history


def _halve(values: list[float]) -> list[float]:
    """Neighbours averaged: half as many points over the same span."""
    return [(values[i] + values[i + 1]) / 2 for i in range(0, len(values) - 1, 2)]
