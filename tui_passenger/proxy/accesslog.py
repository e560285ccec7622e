"""The access log: one line per request, buffered and written in batches.

Going through :mod:`logging` cost ~55 µs of CPU per request (a LogRecord, a Formatter, a
handler lock and a write per line). Here a request costs one ``%`` format and a list
append; the lines go out with one ``os.write`` when the buffer passes :data:`BUFFER_SIZE`
or ``access_log_flush`` seconds after the first line buffered (nginx's ``buffer=`` and
``flush=``), and on close (a graceful stop loses nothing). A failing write (disk full) is
reported once in the main log and the lines are dropped: it never reaches a request.

Formats (``access_log_format``)::

    combined: IP - - [01/Dec/2026:16:45:00 +0000] "GET /path HTTP/1.1" 200 - "-" "-" \
              app=NAME 0.52ms id=ID
    json:     {"time": "2026-12-01T16:45:00Z", "ip": "IP", "method": "GET", "url": "/path",
               "version": "1.1", "status": 200, "app": "NAME", "ms": 0.52, "id": "ID"}

(each on one line.) The bytes, referer and user-agent fields of the combined format are
``-``: the proxy does not count response bytes nor pick those headers out of a request, and
doing it for the log alone would cost every request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tui_passenger.config_model import ServerConfig
    from tui_passenger.proxy.request import Request

log = logging.getLogger("tui_passenger.proxy")

#: Buffered bytes (roughly: characters) after which the lines are written at once.
BUFFER_SIZE = 64 * 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
COMBINED = '%s - - [%s] "%s %s HTTP/%s" %d - "-" "-" app=%s %.2fms id=%s\n'
JSON = ('{"time": "%s", "ip": "%s", "method": "%s", "url": "%s", "version": "%s", '
        '"status": %d, "app": "%s", "ms": %.2f, "id": "%s"}\n')


def _escape_combined(text: str) -> str:
    """``"``, ``\\``, unprintable and non-ASCII bytes as ``\\xHH`` (as nginx does)."""
    return "".join(c if c.isprintable() and c.isascii() and c not in '"\\'
                   else f"\\x{ord(c):02X}"
                   for c in text)


def _escape_json(text: str) -> str:
    return json.dumps(text)[1:-1]


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
    """Formats a line per request into a buffer; writes the buffer in batches."""

    __slots__ = ("fd", "file", "where", "json", "flush_interval", "_lines", "_size", "_timer",
                 "_second", "_stamp", "_failed")

    def __init__(self, fd: int, file: str | None, json_format: bool = False,
                 flush_interval: float = 1.0) -> None:
        self.fd = fd
        #: The configured file; None: the main log's.
        self.file = file
        self.where = file or "the main log"
        self.json = json_format
        self.flush_interval = flush_interval
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""
        self._failed = False

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

    def record(self, ip: str, request: Request, status: int, app: str, elapsed: float,
               request_id: bytes) -> None:
        """Buffer the line of one answered request (called on the event loop)."""
        now = time.time()
        if int(now) != self._second:
            self._new_second(int(now))
        url = request.url.decode("latin-1")
        rid = request_id.decode("latin-1")
        if self.json:
            if not (url.isprintable() and '"' not in url and "\\" not in url):
                url = _escape_json(url)
            if not (rid.isprintable() and '"' not in rid and "\\" not in rid):
                rid = _escape_json(rid)
            line = JSON % (self._stamp, ip, request.method, url, request.version, status,
                           app, elapsed * 1000, rid)
        else:
            if not (url.isascii() and url.isprintable() and '"' not in url
                    and "\\" not in url):
                url = _escape_combined(url)
            if not (rid.isascii() and rid.isprintable() and " " not in rid):
                rid = _escape_combined(rid).replace(" ", "\\x20")
            line = COMBINED % (ip, self._stamp, request.method, url, request.version, status,
                               app, elapsed * 1000, rid)
        self._lines.append(line)
        self._size += len(line)
        if self._size >= BUFFER_SIZE:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval,
                                                                 self.flush)

    def _new_second(self, second: int) -> None:
        self._second = second
        t = time.gmtime(second)
        if self.json:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", t)
        else:
            self._stamp = (f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
                           f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")

    def flush(self) -> None:
        """Write what is buffered now (one ``os.write``, more only if it writes less)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        data = memoryview("".join(self._lines).encode("utf-8", "backslashreplace"))
        self._lines.clear()
        self._size = 0
        if self.fd < 0:
            return  # closed: a request that ended after the stop is not logged
        # On the loop: 64 KiB to a file took ~28 µs of CPU, a thread executor hop ~190 µs.
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError as e:
            if not self._failed:
                self._failed = True
                log.error("access log: cannot write to %s (%s): access lines are dropped "
                          "until it can", self.where, e.strerror or e)
            return
        if self._failed:
            self._failed = False
            log.warning("access log: writing to %s again", self.where)

    def close(self) -> None:
        """Write what is buffered and close the file (a graceful stop, a reload)."""
        self.flush()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
