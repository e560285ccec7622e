"""Process titles: what ``ps`` and ``top`` show for the manager, preloaders and workers.

Two things are set: the command line (``/proc/PID/cmdline``, the ``ps`` and ``top -c``
column), e.g. ``tui-passenger: worker hello #3 (gen 1)``, and the 15-character process name
(``/proc/PID/comm``, what ``top``, ``pgrep`` and ``ps -o comm`` show), e.g.
``tp-worker hello``. Without them every child reads ``python -m tui_passenger.preloader
--spec {...}``, workers and preloaders alike.

The command line is rewritten by the ``setproctitle`` library when the interpreter has it
(the manager always does; an app's own virtualenv may not). Otherwise the standard library
does what it can on Linux: the command line is overwritten in place, through
``/proc/self/mem``, within the room the original one took (which the spec on a child's
command line makes ample). The name is always written to ``/proc/self/comm`` (setproctitle
would set it to the title's first 15 characters, the same ``tui-passenger: `` for all).

This module runs inside the app's processes: standard library only, Python 3.9 and newer.
Every step is best effort: a title is never worth failing a worker for.
"""

from __future__ import annotations

#: What every title starts with, so that ``pgrep -f tui-passenger:`` finds them all.
PREFIX = "tui-passenger: "
#: The longest process name the kernel keeps (TASK_COMM_LEN less the NUL).
COMM_LEN = 15


def set_title(title: str, name: str) -> str:
    """Show ``PREFIX + title`` as this process's command line and ``name`` (cut to 15
    characters) as its name. Returns how the command line was set: ``"setproctitle"``,
    ``"proc"`` (the standard library's way) or ``"none"``."""
    full = PREFIX + title
    how = "none"
    try:
        from setproctitle import setproctitle
    except ImportError:
        if _overwrite_cmdline(full):
            how = "proc"
    else:
        setproctitle(full)
        how = "setproctitle"
    _set_comm(name)
    return how


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


def _set_comm(name: str) -> None:
    # /proc/self/comm names the main thread, whichever thread writes it (the manager has
    # several); prctl(PR_SET_NAME) would name the calling thread only and needs ctypes.
    data = name.encode("utf-8", "replace")[:COMM_LEN]
    try:
        with open("/proc/self/comm", "wb", buffering=0) as comm:
            comm.write(data)
    except OSError:
        pass


def _argv_area() -> tuple[int, int] | None:
    """Where the kernel reads our command line from: (start, end) addresses, or None."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Fields after "(comm)": the comm may hold spaces and parentheses, the rest cannot.
    # arg_start and arg_end are fields 48 and 49 (Linux 3.5+); this list starts at field 3.
    fields = stat[stat.rindex(b")") + 2:].split()
    if len(fields) < 47:
        return None
    start, end = int(fields[45]), int(fields[46])
    return (start, end) if end > start else None


def _overwrite_cmdline(title: str) -> bool:
    """Write ``title`` over the original command line; True if it worked.

    Python keeps its own copy of the arguments (``sys.argv``), so the original strings are
    free to overwrite. The area is filled to its end: the title, a NUL, then spaces. A last
    byte that is not NUL tells the kernel the title was changed, and it shows only up to the
    first NUL (a title that fills the area is cut to fit and ends with the NUL).
    """
    area = _argv_area()
    if area is None:
        return False
    start, end = area
    size = end - start
    data = (title.encode("utf-8", "replace")[:size - 1] + b"\0").ljust(size, b" ")
    try:
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(data)
    except (OSError, ValueError, OverflowError):
        return False
    return True
