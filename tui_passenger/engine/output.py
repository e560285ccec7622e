"""Carry a child's stdout/stderr to the manager line by line, labelled with its pid."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: Longest line kept whole; longer ones are split (a child printing without newlines must not
#: make the manager buffer without bound).
MAX_LINE = 16 * 1024


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One line a managed process printed."""

    app: str
    pid: int
    role: str  # "worker" or "preloader"
    stream: str  # "stdout" or "stderr"
    text: str
    time: float


OutputSink = Callable[[OutputLine], None]


def log_line(line: OutputLine) -> None:
    """The default sink: log the line, labelled with its app, role and pid."""
    level = logging.WARNING if line.stream == "stderr" else logging.INFO
    logging.getLogger(f"tui_passenger.app.{line.app}").log(
        level, "%s %d | %s", line.role, line.pid, line.text)


class OutputPump:
    """Reads both pipes of one process until EOF, keeping the last lines for error reports."""

    __slots__ = ("app", "pid", "role", "sink", "recent", "_tasks")

    def __init__(self, app: str, pid: int, role: str, sink: OutputSink | None,
                 keep: int = 200) -> None:
        self.app = app
        self.pid = pid
        self.role = role
        self.sink = sink
        self.recent: deque[str] = deque(maxlen=keep)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, stdout_fd: int, stderr_fd: int) -> None:
        """Take ownership of the read ends and pump them in background tasks."""
        for fd, stream in ((stdout_fd, "stdout"), (stderr_fd, "stderr")):
            self._tasks.append(asyncio.ensure_future(self._pump(fd, stream)))

    async def _pump(self, fd: int, stream: str) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_LINE)
        pipe = os.fdopen(fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as eof:
                    raw = eof.partial
                    if raw:
                        self._emit(stream, raw)
                    return
                except asyncio.LimitOverrunError as over:
                    raw = await reader.readexactly(over.consumed)
                self._emit(stream, raw)
        finally:
            transport.close()

    def _emit(self, stream: str, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        self.recent.append(text)
        if self.sink is not None:
            self.sink(OutputLine(self.app, self.pid, self.role, stream, text, time.time()))

    async def drain(self, timeout: float = 1.0) -> None:
        """Wait (bounded) until both pipes hit EOF, so a report has the last lines."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)

    def cancel(self) -> None:
        """Stop pumping (used when the manager shuts down)."""
        for task in self._tasks:
            task.cancel()
