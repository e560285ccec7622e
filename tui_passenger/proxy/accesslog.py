"""The access log: one line per request, buffered, formatted and written off the loop.

Going through :mod:`logging` cost ~55 µs of CPU per request (a LogRecord, a Formatter, a
handler lock and a write per line). Here a request costs a tuple of its raw fields and a
list append. When :data:`BUFFER_LINES` are waiting, or ``access_log_flush`` seconds after
the first one (nginx's ``buffer=`` and ``flush=``), and on close (a graceful stop loses
nothing), the batch goes whole (:mod:`marshal`, one pipe write) to the access log writer
process (:mod:`tui_passenger.logwriter`), which formats the lines
(:mod:`tui_passenger.logformat`: the formats are described there) and writes them; the
proxy's loop never formats a line. If the writer cannot be started or goes away, the
batches are formatted and written here instead (said once in the main log). A failing
write (disk full) is reported once in the main log and the lines are dropped: it never
reaches a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tui_passenger.logformat import Row, referer_and_agent
from tui_passenger.logwriter import Sink, frame, unframe
from tui_passenger.proxy.request import Request

if TYPE_CHECKING:
    from tui_passenger.config_model import ServerConfig

log = logging.getLogger("tui_passenger.proxy")

#: Lines buffered (about 64 KiB of them) after which they are written at once.
BUFFER_LINES = 512
#: Batches not yet taken by a writer that is behind, in bytes, beyond which new ones are
#: dropped (reported once): a stuck disk must not grow the manager without bound.
MAX_BACKLOG = 16 << 20
#: The pipe to the writer holds this much (Linux's default maximum for a user).
PIPE_SIZE = 1 << 20
#: Seconds a stop or a reload waits for the writer to write what it has.
WRITER_EXIT_TIMEOUT = 10.0
#: The directory that holds the package (the writer imports it from there, whatever the
#: manager's working directory or how it was started).
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


def _say(level: str, text: str) -> None:
    log.log(logging.ERROR if level == "error" else logging.WARNING, "%s", text)


def _default_fd() -> int | None:
    """A duplicate of where the main log goes (stderr headless, the log file under the
    dashboard), or None when the main log would drop access lines (``--log-level
    warning``), as the ``tui_passenger.access`` logger did."""
    if not logging.getLogger("tui_passenger.access").isEnabledFor(logging.INFO):
        return None
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        try:
            fd = stream.fileno() if stream is not None else -1
        except (OSError, ValueError):  # a StringIO (pytest's capture) has no descriptor
            continue
        if fd >= 0:
            return os.dup(fd)
    return os.dup(sys.stderr.fileno())


class AccessLog:
    """Keeps the fields of a line per request in a buffer; sends them in batches to the
    writer process (or formats and writes them here, without one)."""

    __slots__ = ("fd", "file", "where", "json", "flush_interval", "_rows", "_timer",
                 "_sink", "_writer", "_pipe", "_backlog", "_dropped", "_said", "_heard")

    def __init__(self, fd: int, file: str | None, json_format: bool = False,
                 flush_interval: float = 1.0, writer: bool = True) -> None:
        self.fd = fd
        #: The configured file; None: the main log's.
        self.file = file
        self.where = file or "the main log"
        self.json = json_format
        self.flush_interval = flush_interval
        self._rows: list[Row] = []
        self._timer: asyncio.TimerHandle | None = None
        #: Writes here, on the loop, while there is no writer process.
        self._sink = Sink(fd, self.where, _say)
        self._writer: subprocess.Popen[bytes] | None = None
        self._pipe = -1
        #: Frames the pipe has not taken yet (the writer is behind).
        self._backlog = bytearray()
        self._dropped = 0
        #: The writer's stderr (read into the main log), and a line of it not ended yet.
        self._said = -1
        self._heard = b""
        if writer:
            self._start_writer()

    @classmethod
    def open(cls, server: ServerConfig) -> AccessLog | None:
        """The access log ``server`` asks for, or None (off, or its file cannot be opened:
        reported in the main log)."""
        if not server.access_log:
            return None
        path = server.access_log_file
        if path is None:
            fd = _default_fd()
            if fd is None:
                return None
        else:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            except OSError as e:
                log.error("access log off: cannot open %s: %s", path, e.strerror or e)
                return None
        return cls(fd, path, server.access_log_format == "json", server.access_log_flush)

    def same(self, server: ServerConfig) -> bool:
        """``server`` asks for this very log (a configuration reload keeps it)."""
        return (server.access_log and server.access_log_file == self.file
                and (server.access_log_format == "json") == self.json
                and server.access_log_flush == self.flush_interval)

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid while there is one."""
        return self._writer.pid if self._writer is not None else None

    def record(self, ip: str, request: Request, status: int, sent: int, app: str,
               elapsed: float, request_id: bytes) -> None:
        """Buffer the fields of one answered request's line (``sent``: the body bytes sent;
        called on the event loop; the line is formatted with the others, elsewhere)."""
        rows = self._rows
        rows.append((time.time(), ip, request.method, request.url, request.version, status,
                     sent, request.referer, request.agent, app, elapsed, request_id))
        if len(rows) >= BUFFER_LINES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval,
                                                                self.flush)

    def record_refusal(self, ip: str, request: Request | None, status: int, sent: int,
                       elapsed: float) -> None:
        """Buffer the line of a request the client connection refused itself (malformed,
        too large, too slow, too many connections): its request line if it was read whole,
        else none (written "-"); app and id "-"."""
        if request is None or not request.line_known:
            unread = Request()
            unread.method, unread.version = "", ""  # (url b""): the line is "-"
            if request is not None:
                unread.headers = request.headers
            request = unread
        # The head may have been refused before (or while) they were picked out.
        request.referer, request.agent = referer_and_agent(request.headers)
        self.record(ip, request, status, sent, "-", elapsed, b"-")

    def flush(self) -> None:
        """Send what is buffered now to the writer (or write it here, without one)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rows = self._rows
        if not rows:
            return
        self._rows = []
        if self.fd < 0:
            return  # closed: a request that ended after the stop is not logged
        if self._pipe >= 0:
            self._send(frame(rows), len(rows))
        else:
            # On the loop: 64 KiB to a file took ~28 µs of CPU, a thread executor hop ~190 µs.
            self._sink.write_rows(rows, self.json)

    def close(self) -> None:
        """Write what is buffered and close the file (a graceful stop, a reload): the
        writer is given the rest, and waited for while it writes it."""
        self.flush()
        if self._pipe >= 0:
            self._stop_writer()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- the writer process --------------------------------------------------------------

    def _start_writer(self) -> None:
        read, write = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # a smaller pipe only means more backlog
            fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-m", "tui_passenger.logwriter", str(self.fd), self.where]
        said, says = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            self._writer = subprocess.Popen(
                [*argv, "--json"] if self.json else argv, stdin=read, pass_fds=(self.fd,),
                env=env, stdout=subprocess.DEVNULL, stderr=says)
        except OSError as e:
            log.warning("access log: no writer process (%s): lines are formatted on the "
                        "proxy's loop", e.strerror or e)
            os.close(write)
            os.close(said)
            return
        finally:
            os.close(read)
            os.close(says)
        os.set_blocking(write, False)
        self._pipe = write
        self._said = said
        with contextlib.suppress(RuntimeError):  # no loop yet: heard when it stops
            asyncio.get_running_loop().add_reader(said, self._hear)

    def _hear(self, last: bool = False) -> bool:
        """What the writer says on stderr goes to the main log ("error: ...", "warning:
        ...", or anything else, such as a traceback, as an error). ``last``: it has exited,
        nothing more will come. False once there is nothing more to read for now."""
        try:
            data = os.read(self._said, 65536)
        except BlockingIOError:
            if not last:
                return False
            data = b""
        except OSError:
            data = b""
        lines = (self._heard + data).split(b"\n")
        self._heard = lines.pop() if data else b""
        for raw in lines + ([self._heard] if not data and self._heard else []):
            line = raw.decode("utf-8", "replace").rstrip()
            level, _, text = line.partition(": ")
            if level == "warning":
                log.warning("%s", text)
            elif line:
                log.error("%s", text if level == "error" else f"access log writer: {line}")
        if not data:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._said)
            os.close(self._said)
            self._said = -1
        return bool(data)

    def _send(self, frame: bytes, lines: int) -> None:
        """Hand ``frame`` to the writer: now if the pipe takes it, else when it can."""
        if self._backlog:
            if len(self._backlog) + len(frame) > MAX_BACKLOG:
                self._drop(lines)
                return
            self._backlog += frame
            return
        try:
            written = os.write(self._pipe, frame)
        except BlockingIOError:
            written = 0
        except OSError:  # the writer is gone: write here from now on
            self._writer_lost(frame)
            return
        if written < len(frame):
            self._backlog += frame[written:]
            asyncio.get_running_loop().add_writer(self._pipe, self._drain)

    def _drain(self) -> None:
        """The pipe can take more of the backlog."""
        try:
            written = os.write(self._pipe, self._backlog)
        except BlockingIOError:
            return
        except OSError:
            asyncio.get_running_loop().remove_writer(self._pipe)
            self._writer_lost(bytes(self._backlog))
            return
        del self._backlog[:written]
        if not self._backlog:
            asyncio.get_running_loop().remove_writer(self._pipe)
            if self._dropped:
                log.warning("access log: the writer caught up (%d lines were dropped)",
                            self._dropped)
                self._dropped = 0

    def _drop(self, lines: int) -> None:
        if not self._dropped:
            log.error("access log: the writer is %d MiB behind (%s too slow?): access "
                      "lines are dropped until it catches up", MAX_BACKLOG >> 20, self.where)
        self._dropped += lines

    def _writer_lost(self, unsent: bytes) -> None:
        """The writer died: what it had not taken is formatted here, as is all that
        follows."""
        log.error("access log: the writer process exited (%s): lines are formatted on "
                  "the proxy's loop from now on", self._reap(0))
        os.close(self._pipe)
        self._pipe = -1
        self._backlog.clear()
        for rows in unframe(unsent):
            self._sink.write_rows(rows, self.json)

    def _stop_writer(self) -> None:
        """Give the writer the backlog, end its pipe, and wait for it to exit."""
        pipe, self._pipe = self._pipe, -1
        if self._backlog:
            with contextlib.suppress(ValueError, RuntimeError):  # no loop (any more)
                asyncio.get_running_loop().remove_writer(pipe)
            os.set_blocking(pipe, True)
            with contextlib.suppress(OSError):
                os.write(pipe, self._backlog)
            self._backlog.clear()
        os.close(pipe)
        self._reap(WRITER_EXIT_TIMEOUT)

    def _reap(self, timeout: float) -> str:
        """Wait up to ``timeout`` s for the writer to exit (killed after that); how it
        ended."""
        writer, self._writer = self._writer, None
        if writer is None:
            return "no writer"
        try:
            code = writer.wait(timeout)
        except subprocess.TimeoutExpired:
            writer.kill()
            code = writer.wait()
            log.error("access log: the writer did not finish within %.0f s: killed",
                      timeout)
        while self._said >= 0 and self._hear(last=True):  # all it said, up to its end
            pass
        return f"exit code {code}"
