"""Recent log entries (worker output, pool events) and per-second traffic figures, kept in
memory for the dashboard and the admin API."""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Any


class EventLog:
    """The last ``size`` entries, each with a sequence number to ask for what is new."""

    def __init__(self, size: int = 2000) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)
        self._seq = itertools.count(1)
        self.last = 0

    def add(self, kind: str, text: str, *, level: str = "info", app: str | None = None,
            pid: int | None = None, role: str | None = None, stream: str | None = None) -> None:
        """Append one entry (kind: "output" for a line a process printed, "reload" for the
        outcome of a configuration reload, else "event")."""
        self.last = next(self._seq)
        self._entries.append({"seq": self.last, "time": time.time(), "kind": kind,
                              "level": level, "app": app, "pid": pid, "role": role,
                              "stream": stream, "text": text})

    def since(self, seq: int) -> tuple[int, list[dict[str, Any]]]:
        """Entries newer than ``seq`` (oldest first) and the newest sequence number."""
        if seq >= self.last:
            return self.last, []
        return self.last, [e for e in self._entries if e["seq"] > seq]


class Traffic:
    """Requests per second and latency percentiles over the last ``seconds`` seconds."""

    #: Latencies kept per second for the percentiles (beyond this, the rest are not sampled).
    RESERVOIR = 8192

    def __init__(self, seconds: int = 120) -> None:
        self.rps: deque[int] = deque(maxlen=seconds)
        self.p50_ms: deque[float] = deque(maxlen=seconds)
        self.p99_ms: deque[float] = deque(maxlen=seconds)
        self._count = 0
        self._latencies: list[float] = []

    def record(self, app: str, status: int, elapsed: float) -> None:
        """One request finished (called by the proxy, on the hot path: keep it tiny)."""
        self._count += 1
        if len(self._latencies) < self.RESERVOIR:
            self._latencies.append(elapsed)

    def roll(self) -> None:
        """Close the current second (called once a second)."""
        latencies = sorted(self._latencies)
        self.rps.append(self._count)
        if latencies:
            self.p50_ms.append(round(latencies[len(latencies) // 2] * 1000, 3))
            self.p99_ms.append(round(latencies[int(len(latencies) * 0.99)] * 1000, 3))
        else:
            self.p50_ms.append(0.0)
            self.p99_ms.append(0.0)
        self._count = 0
        self._latencies = []
