"""The Python stacks of a live preloader or worker, read without stopping it.

The process dumps them itself on a signal (the runtime's faulthandler, see
:mod:`tui_passenger.runtime.stacks`) into its stack file, which this module empties, signals
and reads back. When the process does not answer and ``py-spy`` is installed, ``py-spy
dump`` reads the stacks from outside instead (it needs ptrace rights over the process).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass

from tui_passenger.runtime.stacks import END, STACK_SIGNAL, stack_path

__all__ = ["Stacks", "read_stacks"]

#: How often the stack file is looked at while waiting for a dump (seconds).
POLL = 0.01
#: A dump without its end line (the main thread does not run Python code: stuck in C) is
#: taken as whole once it has not grown for this long.
SETTLE = 0.2


@dataclass(frozen=True, slots=True)
class Stacks:
    """A process's stacks: the text (every thread, most recent call first) and who read it
    (``faulthandler``, the process itself; ``py-spy``, from outside)."""

    text: str
    source: str
    #: False when the process's main thread did not get to finish the dump's end line.
    whole: bool = True


async def read_stacks(pid: int, socket_dir: str, timeout: float = 2.0) -> Stacks | None:
    """Signal ``pid`` and return its stacks; None if it did not answer within ``timeout``
    seconds (nor could py-spy read them). ProcessLookupError if it is gone."""
    path = stack_path(socket_dir, pid)
    text = ""
    try:
        os.truncate(path, 0)
    except OSError:
        pass  # no stack file: it could not create one, or it is leaving
    else:
        os.kill(pid, STACK_SIGNAL)
        text = await _wait_for_dump(path, timeout)
        if text.endswith(END):
            return Stacks(text[:-len(END)].rstrip("\n") + "\n", "faulthandler")
        if text:
            return Stacks(text, "faulthandler", whole=False)
    os.kill(pid, 0)  # ProcessLookupError: it is gone (the caller says so)
    return await _py_spy(pid)


async def _wait_for_dump(path: str, timeout: float) -> str:
    """The stack file's text once it ends with END, or has stopped growing, or at timeout."""
    deadline = time.monotonic() + timeout
    text, grown_at = "", 0.0
    while True:
        await asyncio.sleep(POLL)
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                now = file.read()
        except FileNotFoundError:  # the process exited meanwhile
            return text
        moment = time.monotonic()
        if now != text:
            text, grown_at = now, moment
        if text.endswith(END) or moment >= deadline \
                or (text and moment - grown_at >= SETTLE):
            return text


async def _py_spy(pid: int) -> Stacks | None:
    """``py-spy dump --pid PID`` when py-spy is installed and allowed to; else None."""
    program = shutil.which("py-spy")
    if program is None:
        return None
    process = await asyncio.create_subprocess_exec(
        program, "dump", "--pid", str(pid), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 10)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        return None
    if process.returncode != 0 or not out:
        return None
    return Stacks(out.decode("utf-8", "replace"), "py-spy")
