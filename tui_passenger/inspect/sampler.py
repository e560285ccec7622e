"""Periodic sampling of our processes in a background thread (never on the event loop)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .fds import FdEntry, ProcessInfo, inventory
from .memory import CpuMeter, MemoryUsage, StatusSample, read_smaps_rollup, read_status

__all__ = ["ProcessSample", "Sampler"]

log = logging.getLogger(__name__)

_GONE = (ProcessLookupError, FileNotFoundError)
_SKIP = (ProcessLookupError, FileNotFoundError, PermissionError)


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """What is known about one process after a tick.

    ``memory`` is the last smaps_rollup read (``memory_at``, a ``time.time()``, says when: it
    may be a few seconds older than ``sampled_at``); ``fds`` the last inventory.
    """

    pid: int
    status: StatusSample | None
    cpu: float
    memory: MemoryUsage | None
    fds: tuple[FdEntry, ...]
    sampled_at: float
    memory_at: float | None = None


class Sampler:
    """Samples a changing set of pids in a background thread; never blocks the event loop.

    Every ``interval`` seconds it reads status and CPU of each pid ``targets()`` returns; every
    ``smaps_interval`` seconds (and at once for a new pid) also smaps_rollup, and then it takes
    a new fd inventory (also when the set of pids changes). ``targets`` and ``on_sample`` are
    called from the sampler thread: ``targets`` must return a fresh mapping, and ``on_sample``
    should hand the dict over to the event loop (``loop.call_soon_threadsafe``).
    """

    def __init__(self, targets: Callable[[], Mapping[int, ProcessInfo]], *,
                 interval: float = 1.0, smaps_interval: float = 5.0,
                 on_sample: Callable[[dict[int, ProcessSample]], None] | None = None) -> None:
        self._targets = targets
        self.interval = interval
        self.smaps_interval = smaps_interval
        self._on_sample = on_sample
        self.latest: dict[int, ProcessSample] = {}
        self._cpu = CpuMeter()
        self._memory: dict[int, tuple[MemoryUsage, float]] = {}  # pid -> (usage, time.time())
        self._fds: dict[int, tuple[FdEntry, ...]] = {}
        self._fds_pids: frozenset[int] = frozenset()
        self._last_full = 0.0  # monotonic time of the last smaps + fd pass
        self._lock = threading.Lock()  # one sample at a time (thread vs sample_now)
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the sampling thread (a daemon); a no-op if it runs already."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tp-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread and wait for it (at most ``timeout`` seconds)."""
        self._stop.set()
        self._running.set()  # wake a paused thread so it sees the stop
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def pause(self) -> None:
        """Stop sampling until ``resume`` (e.g. while nobody looks at the numbers)."""
        self._running.clear()

    def resume(self) -> None:
        """Resume sampling after ``pause``."""
        self._running.set()

    @property
    def paused(self) -> bool:
        """Whether sampling is paused."""
        return not self._running.is_set()

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def sample_now(self) -> dict[int, ProcessSample]:
        """Take a full sample (smaps and fds included) synchronously; also sets ``latest``.

        Blocking (milliseconds per process): call it from a thread, not the event loop.
        ``on_sample`` is not called.
        """
        with self._lock:
            result = self._sample(full=True)
        self.latest = result
        return result

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self._running.wait()
            if self._stop.is_set():
                break
            try:
                with self._lock:
                    full = time.monotonic() - self._last_full >= self.smaps_interval
                    result = self._sample(full=full)
                self.latest = result
                if self._on_sample is not None:
                    self._on_sample(result)
            except Exception:  # a bug must not silently end the sampling
                log.exception("process sampling failed")
            next_tick = max(next_tick + self.interval, time.monotonic())
            self._stop.wait(max(0.0, next_tick - time.monotonic()))

    def _sample(self, *, full: bool) -> dict[int, ProcessSample]:
        """One tick: status and CPU always, smaps and fds if ``full`` or for new pids."""
        targets = dict(self._targets())
        pids = frozenset(targets)
        for gone in self._cpu.known() - pids:
            self._cpu.forget(gone)
        for gone in set(self._memory) - pids:
            del self._memory[gone]
        if full:
            self._last_full = time.monotonic()
        now = time.time()
        alive: dict[int, tuple[StatusSample | None, float]] = {}
        for pid in targets:
            try:
                status: StatusSample | None = read_status(pid)
            except _GONE:
                self._cpu.forget(pid)
                continue
            except PermissionError:
                status = None
            try:
                cpu = self._cpu.sample(pid)
            except _SKIP:
                cpu = 0.0
            alive[pid] = (status, cpu)
            if full or pid not in self._memory:
                try:
                    self._memory[pid] = (read_smaps_rollup(pid), time.time())
                except _SKIP:
                    self._memory.pop(pid, None)
        live = frozenset(alive)
        if full or live != self._fds_pids:
            found = inventory({pid: targets[pid] for pid in alive})
            self._fds = {pid: tuple(entries) for pid, entries in found.items()}
            self._fds_pids = live
        result = {}
        for pid, (status, cpu) in alive.items():
            memory, memory_at = self._memory.get(pid, (None, None))
            result[pid] = ProcessSample(pid=pid, status=status, cpu=cpu, memory=memory,
                                        fds=self._fds.get(pid, ()), sampled_at=now,
                                        memory_at=memory_at)
        return result
