"""Stack dumps on a signal: a preloader or worker writes the Python stack of every thread to
its own file when the manager sends :data:`STACK_SIGNAL`, without stopping.

The dump is the standard library's :mod:`faulthandler`: it runs in the signal handler itself
(C code, no GIL needed), so it works while the app is stuck in a loop, in a blocking call or
holding the GIL in a C extension. Then, as soon as the main thread runs Python again (at
once, unless it is stuck in C code), :data:`END` is appended so the reader knows the dump is
whole, after the stacks of the asyncio tasks if a loop runs (where an ASGI app's requests
wait). The file (``<socket_dir>/<pid>.stack``, 0600) is opened in append mode: the manager
empties it before each signal, and the next dump starts at its beginning.

Standard library only (runs in the app's interpreter).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
from types import FrameType
from typing import Any

__all__ = ["END", "STACK_SIGNAL", "disable", "enable", "stack_fd", "stack_path"]

#: Not used by the runtime otherwise; an app that registers its own handler for it takes
#: the stack dumps away (the manager then says the process did not answer).
STACK_SIGNAL = signal.SIGUSR2
#: The line after a complete dump.
END = "-- end of stacks --\n"

#: This process's stack file: [fd] once enabled (a list: changed in place, no global).
_FD: list[int] = []


def stack_path(socket_dir: str, pid: int) -> str:
    """Where process ``pid`` writes its stacks."""
    return os.path.join(socket_dir, f"{pid}.stack")


def stack_fd() -> tuple[int, ...]:
    """The descriptor of this process's stack file, if enabled (for ``own_fds``)."""
    return tuple(_FD)


def _end(signum: int, frame: FrameType | None) -> None:
    """Runs in the main thread after the dump: the asyncio tasks' stacks, then END."""
    if _FD:
        with contextlib.suppress(OSError):
            os.write(_FD[0], (_tasks() + END).encode("utf-8", "replace"))


def _tasks() -> str:
    """The await chain of every task of the running asyncio loop (an ASGI app's requests
    wait there, on no thread's stack), most recent call first; "" without a loop."""
    asyncio = sys.modules.get("asyncio")  # never imported just for this
    if asyncio is None:
        return ""
    try:
        tasks = asyncio.all_tasks(asyncio.get_running_loop())
    except RuntimeError:  # no loop running in this thread
        return ""
    blocks = []
    for task in tasks:
        lines = []
        awaiting: Any = task.get_coro()
        while awaiting is not None:
            frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "gi_frame", None)
            if frame is not None:
                lines.append(f'  File "{frame.f_code.co_filename}", line {frame.f_lineno} '
                             f"in {frame.f_code.co_name}\n")
            awaiting = getattr(awaiting, "cr_await", None) or getattr(awaiting, "gi_yieldfrom",
                                                                      None)
        blocks.append(f"\nasyncio task {task.get_name()} (most recent call first):\n"
                      + "".join(reversed(lines)))
    return "".join(blocks)


def enable(socket_dir: str) -> None:
    """Dump the stacks of this process to its stack file on STACK_SIGNAL (main thread only).

    Called again in a forked child: the child gets a file of its own, and the preloader's
    descriptor it inherited is closed.
    """
    path = stack_path(socket_dir, os.getpid())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                 0o600)
    if _FD:  # registered already (in the preloader we were forked from): start afresh,
        faulthandler.unregister(STACK_SIGNAL)  # or signal.signal() would replace it
    # The Python-level handler first: faulthandler chains to it after its dump.
    signal.signal(STACK_SIGNAL, _end)
    faulthandler.register(STACK_SIGNAL, file=fd, all_threads=True, chain=True)
    old, _FD[:] = _FD[:], [fd]
    for inherited in old:
        with contextlib.suppress(OSError):
            os.close(inherited)


def disable(socket_dir: str) -> None:
    """Stop answering STACK_SIGNAL and remove the stack file (the process is leaving)."""
    if not _FD:
        return
    faulthandler.unregister(STACK_SIGNAL)
    signal.signal(STACK_SIGNAL, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.close(_FD.pop())
    with contextlib.suppress(OSError):
        os.unlink(stack_path(socket_dir, os.getpid()))
