"""Periodic sampling of our processes in a background thread (never on the event loop)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .fds import FdEntry, ProcessInfo, inventory
from .memory import CpuMeter, MemoryUsage, StatusSample, read_smaps_rollup, read_stat

__all__ = ["ProcessSample", "Sampler"]

log = logging.getLogger(__name__)

_GONE = (ProcessLookupError, FileNotFoundError)
_SKIP = (ProcessLookupError, FileNotFoundError, PermissionError)
#: Seconds without a read of the samples after which sampling slows down...
WATCH_WINDOW = 10.0
#: ...to a tick every this many seconds.
IDLE_INTERVAL = 5.0
#: How old smaps and fds may grow while nobody looks (RSS moving still gets smaps read).
IDLE_AGE = 60.0
#: How old the fd inventory may grow while someone looks: a new process (where fork
#: hands descriptors on) gets one at once; the rest seldom change, and it is the costliest.
FDS_AGE = 30.0
#: The smallest RSS change (bytes) that gets a process's smaps read again (or 1/64 of it).
RSS_MOVED = 256 * 1024


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

    It reads what someone looks at. While the samples are being read (``latest``: the
    status, ``/metrics``, a dashboard) it ticks every ``interval`` seconds and keeps smaps
    at most ``smaps_interval`` old and the fd inventory ``fds_age``; left alone (nobody
    read them for ``watch_window`` seconds) it ticks every ``idle_interval`` and lets both
    age up to ``idle_age``. Every tick reads ``/proc/PID/stat`` of each pid (state, threads, RSS,
    CPU: one read); smaps_rollup (milliseconds each) only for a new pid, one whose RSS moved
    since its last read, and, spread over the ticks, those grown old; the fd inventory when
    the set of pids changes, or when it has grown old. ``targets`` and ``on_sample`` are
    called from the sampler thread: ``targets`` must return a fresh mapping, and
    ``on_sample`` should hand the dict over to the event loop (``loop.call_soon_threadsafe``).
    """

    def __init__(self, targets: Callable[[], Mapping[int, ProcessInfo]], *,
                 interval: float = 1.0, smaps_interval: float = 5.0,
                 fds_age: float = FDS_AGE, idle_interval: float = IDLE_INTERVAL,
                 idle_age: float = IDLE_AGE, watch_window: float = WATCH_WINDOW,
                 on_sample: Callable[[dict[int, ProcessSample]], None] | None = None) -> None:
        self._targets = targets
        self.interval = interval
        self.smaps_interval = smaps_interval
        self.fds_age = max(fds_age, smaps_interval)
        self.idle_interval = max(interval, min(idle_interval, smaps_interval))
        self.idle_age = max(idle_age, self.fds_age)
        self.watch_window = watch_window
        self._on_sample = on_sample
        self._latest: dict[int, ProcessSample] = {}
        self._looked_at = -math.inf  # monotonic time ``latest`` was last read
        self._cpu = CpuMeter()
        # pid -> (usage, time.time() read, RSS from stat when read)
        self._memory: dict[int, tuple[MemoryUsage, float, int]] = {}
        self._fds: dict[int, tuple[FdEntry, ...]] = {}
        self._fds_pids: frozenset[int] = frozenset()
        self._fds_at = -math.inf  # monotonic time of the last fd inventory
        self._lock = threading.Lock()  # one sample at a time (thread vs sample_now)
        self._stop = threading.Event()
        self._wake = threading.Event()  # someone looks again: tick now, at the fast pace
        self._running = threading.Event()
        self._running.set()
        self._thread: threading.Thread | None = None

    @property
    def latest(self) -> dict[int, ProcessSample]:
        """The last tick's samples. Reading them is looking: sampling keeps the fast pace
        for ``watch_window`` seconds (see :attr:`current` to read without looking)."""
        was_watched = self.watched
        self._looked_at = time.monotonic()
        if not was_watched:
            self._wake.set()
        return self._latest

    @property
    def current(self) -> dict[int, ProcessSample]:
        """The last tick's samples, read by the server itself (not someone looking)."""
        return self._latest

    @property
    def watched(self) -> bool:
        """Whether the samples were read within the last ``watch_window`` seconds."""
        return time.monotonic() - self._looked_at < self.watch_window

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
        self._wake.set()
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
        self._latest = result
        return result

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self._running.wait()
            if self._stop.is_set():
                break
            try:
                with self._lock:
                    result = self._sample(full=False)
                self._latest = result
                if self._on_sample is not None:
                    self._on_sample(result)
            except Exception:  # a bug must not silently end the sampling
                log.exception("process sampling failed")
            self._wake.clear()  # before the pace is chosen: a look from now on wakes it
            next_tick = max(next_tick + self._pace(), time.monotonic())
            self._wake.wait(max(0.0, next_tick - time.monotonic()))
            if self._wake.is_set():  # looked at again after a while: from now on
                next_tick = time.monotonic()

    def _pace(self) -> float:
        """Seconds between two ticks: fast while someone looks."""
        return self.interval if self.watched else self.idle_interval

    def _sample(self, *, full: bool) -> dict[int, ProcessSample]:
        """One tick: stat of every pid; smaps and fds as the class says, or all if ``full``."""
        targets = dict(self._targets())
        pids = frozenset(targets)
        for gone in self._cpu.known() - pids:
            self._cpu.forget(gone)
        for gone in set(self._memory) - pids:
            del self._memory[gone]
        now, clock = time.time(), time.monotonic()
        watched = self.watched
        max_age = self.smaps_interval if watched else self.idle_age
        alive: dict[int, tuple[StatusSample | None, float]] = {}
        aged: list[tuple[float, int]] = []  # (read at, pid): smaps grown old
        for pid in targets:
            try:
                status: StatusSample | None
                status, ticks, started = read_stat(pid)
                cpu = self._cpu.update(pid, ticks, started)
            except _GONE:
                self._cpu.forget(pid)
                continue
            except PermissionError:
                status, cpu = None, 0.0
            alive[pid] = (status, cpu)
            known = self._memory.get(pid)
            if full or known is None or status is None or _moved(known[2], status.rss):
                self._read_smaps(pid, status)
            elif now - known[1] >= max_age:
                aged.append((known[1], pid))
        # The old ones, oldest first, spread: about one tick's share of them each tick.
        share = math.ceil(len(alive) * self._pace() / max_age) if aged else 0
        for _, pid in sorted(aged)[:share]:
            self._read_smaps(pid, alive[pid][0])
        live = frozenset(alive)
        fds_age = self.fds_age if watched else self.idle_age
        if full or live != self._fds_pids or clock - self._fds_at >= fds_age:
            found = inventory({pid: targets[pid] for pid in alive})
            self._fds = {pid: tuple(entries) for pid, entries in found.items()}
            self._fds_pids, self._fds_at = live, clock
        result = {}
        for pid, (status, cpu) in alive.items():
            memory, memory_at, _ = self._memory.get(pid, (None, None, 0))
            result[pid] = ProcessSample(pid=pid, status=status, cpu=cpu, memory=memory,
                                        fds=self._fds.get(pid, ()), sampled_at=now,
                                        memory_at=memory_at)
        return result

    def _read_smaps(self, pid: int, status: StatusSample | None) -> None:
        try:
            usage = read_smaps_rollup(pid)
        except _SKIP:
            self._memory.pop(pid, None)
            return
        self._memory[pid] = (usage, time.time(), status.rss if status is not None else 0)


def _moved(before: int, now: int) -> bool:
    """Whether RSS changed enough since the last smaps read for that to be worth another
    (an idle worker's RSS does not move; a growing one's does, for memory_limit)."""
    return abs(now - before) >= max(RSS_MOVED, before >> 6)
