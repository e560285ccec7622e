"""Process titles: what ``ps`` and ``top`` show for the manager, preloaders and workers.

Two things are set: the command line (``/proc/PID/cmdline``, the ``ps`` and ``top -c``
column), e.g. ``tui-passenger: worker hello #3 (gen 1)``, and the 15-character process name
(``/proc/PID/comm``, what ``top``, ``pgrep`` and ``ps -o comm`` show), e.g.
``tp-worker hello``. Without them every child reads ``python -m tui_passenger.preloader
--spec {...}``, workers and preloaders alike.

The title is set by the ``setproctitle`` library when the interpreter has it (the manager
always does; an app's own virtualenv may not). Otherwise the standard library does what it
can on Linux: ``ctypes`` writes the title over the original command line in place, within
the room that one took (the spec on a child's command line makes it ample), and names the
process with ``prctl(PR_SET_NAME)``. Both work in a process that switched user (which makes
it non-dumpable and its ``/proc/self`` files root's); ``setproctitle`` alone would name
every process ``tui-passenger: `` (the title's first 15 characters), so the name is set
after it.

This module runs inside the app's processes: standard library only, Python 3.9 and newer.
Every step is best effort: a title is never worth failing a worker for.
"""

from __future__ import annotations

import os
from typing import Any

#: What every title starts with, so that ``pgrep -f tui-passenger:`` finds them all.
PREFIX = "tui-passenger: "
#: The longest process name the kernel keeps (TASK_COMM_LEN less the NUL).
COMM_LEN = 15


def set_title(title: str, name: str) -> str:
    """Show ``PREFIX + title`` as this process's command line and ``name`` (cut to 15
    characters) as its name. Returns how the command line was set: ``"setproctitle"``,
    ``"ctypes"`` (the standard library's way) or ``"none"``."""
    full = PREFIX + title
    short = name.encode("utf-8", "replace")[:COMM_LEN]
    try:
        import setproctitle
    except ImportError:
        return _set_with_ctypes(full, short)
    try:
        return _set_with_library(setproctitle, full, short)
    except Exception:  # a title is never worth a failed start (e.g. a NUL, a lone surrogate)
        return "none"


def _set_with_library(setproctitle: Any, full: str, short: bytes) -> str:
    # Only argv's room for the title: by default setproctitle takes the environment's too,
    # and /proc/PID/environ (what an operator reads to see a worker's settings) is lost.
    # It reads SPT_NOENV once, at its first call; the app never sees the variable.
    ours = "SPT_NOENV" not in os.environ
    if ours:
        os.environ["SPT_NOENV"] = "1"
    try:
        setproctitle.setproctitle(full)
    finally:
        if ours:
            del os.environ["SPT_NOENV"]
    if hasattr(setproctitle, "setthreadtitle"):  # 1.3+; called on the main thread
        setproctitle.setthreadtitle(short.decode("utf-8", "ignore"))
    else:
        _set_with_ctypes(None, short)
    return "setproctitle"


def name_manager(config: str) -> str:
    """The manager serving ``config`` (the path as given on the command line)."""
    return set_title(f"manager {config}", "tp-manager")


def name_preloader(app: str, generation: int) -> str:
    """The preloader (or refork mold) of ``app``'s generation ``generation``."""
    return set_title(f"preloader {app} (gen {generation})", f"tp-preload {app}")


def name_worker(app: str, number: int, generation: int | None) -> str:
    """Worker ``#number`` of ``app``: forked in ``generation``, or spawned directly (None)."""
    origin = "direct" if generation is None else f"gen {generation}"
    return set_title(f"worker {app} #{number} ({origin})", f"tp-worker {app}")


#: prctl() option that names the calling thread (the main one: the process's name).
PR_SET_NAME = 15


def _set_with_ctypes(title: str | None, name: bytes) -> str:
    """Name the process, and write ``title`` over the original command line if given."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
    except (ImportError, OSError, AttributeError):  # no ctypes, or no prctl: not Linux
        return "none"
    if title is None:
        return "none"
    area = _argv_area()
    if area is None:
        return "none"
    start, size = area
    data = title.encode("utf-8", "replace")[:size - 1] + b"\0"
    # Filled to its end, the last byte not a NUL: that tells the kernel the command line
    # was changed, and it shows it only up to the first NUL.
    ctypes.memmove(start, data.ljust(size, b" "), size)
    return "ctypes"


def _argv_area() -> tuple[int, int] | None:
    """Where the original command line is in our memory: (address, size), or None if that
    cannot be told for sure."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        with open("/proc/self/cmdline", "rb") as f:
            shown = f.read()
    except OSError:
        return None
    # Fields after "(comm)": the comm may hold spaces and parentheses, the rest cannot.
    # arg_start and arg_end are fields 48 and 49 (Linux 3.5+); this list starts at field 3.
    fields = stat[stat.rfind(b")") + 2:].split()
    if len(fields) < 47 or not (fields[45].isdigit() and fields[46].isdigit()):
        return None
    start, end = int(fields[45]), int(fields[46])
    if not 0 < end - start < 1 << 20 or not shown:
        return None
    import ctypes

    # Only write where the kernel reads what /proc/self/cmdline shows (the original
    # arguments, or a title set before and read up to its NUL).
    known = min(len(shown), end - start)
    if ctypes.string_at(start, known) != shown[:known]:
        return None
    return start, end - start
