"""Memory and CPU of one process, read straight from /proc (Linux only).

Costs, measured on a small VM: ``/proc/PID/status`` and ``/proc/PID/stat`` take ~10-20 µs,
``/proc/PID/smaps_rollup`` takes milliseconds (the kernel walks every mapping), so the sampler
reads the first two every tick and the rollup only every few seconds, always off the event loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "CpuMeter",
    "MemoryUsage",
    "StatusSample",
    "direct_estimate",
    "read_proc_file",
    "read_smaps_rollup",
    "read_stat",
    "read_status",
    "smart_total",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def read_proc_file(path: str) -> bytes:
    """Read a whole /proc file with raw syscalls (several times faster than ``open()``).

    A vanished process raises ``ProcessLookupError`` (``FileNotFoundError`` is mapped to it).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ProcessLookupError(exc.errno, f"no such process: {path}") from None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class MemoryUsage:
    """Memory of one process in bytes, from ``/proc/PID/smaps_rollup``.

    ``uss`` (unique set size) = Private_Clean + Private_Dirty: what freeing the process returns.
    ``shared`` = rss - uss. ``private_dirty`` is what Passenger calls "Private".
    """

    rss: int
    pss: int
    uss: int
    shared: int
    private_dirty: int
    swap: int


_ROLLUP_FIELDS = {
    b"Rss:": "rss",
    b"Pss:": "pss",
    b"Private_Clean:": "private_clean",
    b"Private_Dirty:": "private_dirty",
    b"Swap:": "swap",
}


def parse_smaps_rollup(data: bytes) -> MemoryUsage:
    """Parse the text of a ``smaps_rollup`` file (values in kB) into a MemoryUsage."""
    values = dict.fromkeys(_ROLLUP_FIELDS.values(), 0)
    for line in data.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            name = _ROLLUP_FIELDS.get(parts[0])
            if name is not None:
                values[name] = int(parts[1]) * 1024
    uss = values["private_clean"] + values["private_dirty"]
    rss = values["rss"]
    return MemoryUsage(rss=rss, pss=values["pss"], uss=uss, shared=rss - uss,
                       private_dirty=values["private_dirty"], swap=values["swap"])


def read_smaps_rollup(pid: int) -> MemoryUsage:
    """Memory of ``pid`` from ``/proc/PID/smaps_rollup`` (milliseconds: keep off the event loop).

    Raises ``ProcessLookupError`` if the process is gone (zombies included),
    ``PermissionError`` for another user's process.
    """
    data = read_proc_file(f"/proc/{pid}/smaps_rollup")
    if not data:  # a kernel thread, or a process that has just released its memory
        raise ProcessLookupError(3, f"process {pid} has no memory map")
    return parse_smaps_rollup(data)


@dataclass(frozen=True, slots=True)
class StatusSample:
    """The cheap per-tick numbers from ``/proc/PID/status``.

    ``rss`` is in bytes (0 for a zombie); ``state`` is the one-letter code ps shows
    (R running, S sleeping, D disk sleep, T stopped, Z zombie, ...).
    """

    rss: int
    threads: int
    state: str


def read_status(pid: int) -> StatusSample:
    """Read VmRSS, Threads and State from ``/proc/PID/status`` (~20 µs)."""
    data = read_proc_file(f"/proc/{pid}/status")
    rss = threads = 0
    state = "?"
    for line in data.splitlines():
        if line.startswith(b"State:"):
            fields = line.split()
            if len(fields) > 1:
                state = fields[1].decode("ascii", "replace")
        elif line.startswith(b"VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith(b"Threads:"):
            threads = int(line.split()[1])
            break  # Threads comes after State and VmRSS
    return StatusSample(rss=rss, threads=threads, state=state)


_PAGE = os.sysconf("SC_PAGE_SIZE")


def read_stat(pid: int) -> tuple[StatusSample, int, int]:
    """What the sampler reads every tick, from ``/proc/PID/stat`` alone (one read instead
    of status and stat): the StatusSample, CPU ticks (utime + stime) and start time."""
    data = read_proc_file(f"/proc/{pid}/stat")
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    # rest[0] is field 3 (state): utime is field 14, stime 15, num_threads 20, starttime 22,
    # rss (pages) 24.
    rest = data[data.rindex(b")") + 2:].split()
    status = StatusSample(rss=int(rest[21]) * _PAGE, threads=int(rest[17]),
                          state=rest[0].decode("ascii", "replace"))
    return status, int(rest[11]) + int(rest[12]), int(rest[19])


class CpuMeter:
    """CPU use per pid, in percent of one core, from utime+stime deltas over wall time.

    Not thread-safe: use one meter from one thread (the sampler does).
    """

    def __init__(self) -> None:
        self._last: dict[int, tuple[int, int, float]] = {}  # pid -> (start, ticks, monotonic)

    def sample(self, pid: int) -> float:
        """Percent of one core used since the previous call for ``pid`` (0.0 on the first).

        Raises ``ProcessLookupError`` if the process is gone. A reused pid (a different
        start time) counts as a new process.
        """
        _, ticks, start = read_stat(pid)
        return self.update(pid, ticks, start)

    def update(self, pid: int, ticks: int, start: int) -> float:
        """As :meth:`sample`, from CPU ticks and start time the caller has read."""
        now = time.monotonic()
        previous = self._last.get(pid)
        self._last[pid] = (start, ticks, now)
        if previous is None or previous[0] != start:
            return 0.0
        elapsed = now - previous[2]
        if elapsed <= 0:
            return 0.0
        return max(0.0, (ticks - previous[1]) / _CLK_TCK / elapsed * 100.0)

    def forget(self, pid: int) -> None:
        """Drop what is remembered about ``pid`` (call when it exits)."""
        self._last.pop(pid, None)

    def known(self) -> frozenset[int]:
        """The pids the meter remembers."""
        return frozenset(self._last)


def direct_estimate(processes: Iterable[MemoryUsage], preloader: MemoryUsage | None) -> int:
    """Estimated total PSS in bytes had the same workers been spawned directly (no preloader).

    A forked worker shares the pages it inherited from the preloader (copy-on-write) with the
    preloader and its siblings; a directly spawned worker loads the app itself and holds those
    pages privately. So each worker would account for its whole RSS, and there would be no
    preloader: the estimate is ``sum(worker.rss)`` and ``preloader`` is deliberately not added
    (it is a parameter so callers pass the same arguments as to ``smart_total``).

    It over-estimates slightly: even directly spawned workers share the read-only text pages of
    the python binary, libc and other shared libraries (the page cache maps them once), which
    the RSS of each worker counts in full.
    """
    del preloader  # a direct spawn has none
    return sum(p.rss for p in processes)


def smart_total(processes: Iterable[MemoryUsage], preloader: MemoryUsage | None) -> int:
    """Actual total PSS in bytes of forked workers plus their preloader (compare with
    ``direct_estimate`` to show what smart spawning saves)."""
    total = sum(p.pss for p in processes)
    return total + (preloader.pss if preloader is not None else 0)
