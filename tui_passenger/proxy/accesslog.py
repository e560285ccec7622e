"""The access log: one line per request, buffered and written in batches.

Going through :mod:`logging` cost ~55 µs of CPU per request (a LogRecord, a Formatter, a
handler lock and a write per line). Here a request costs a tuple of its raw fields and a
list append; the lines are formatted all at once (one ``%`` for the whole batch) and go out
with one ``os.write`` when :data:`BUFFER_LINES` are waiting or ``access_log_flush`` seconds
after the first one (nginx's ``buffer=`` and ``flush=``), and on close (a graceful stop
loses nothing). A failing write (disk full) is reported once in the main log and the lines
are dropped: it never reaches a request.

Formats (``access_log_format``)::

    combined: IP - - [01/Dec/2026:16:45:00 +0000] "GET /path HTTP/1.1" 200 1234 \
              "https://example.com/" "curl/8.5.0" app=NAME 0.52ms id=ID
    json:     {"time": "2026-12-01T16:45:00Z", "ip": "IP", "method": "GET", "url": "/path",
               "version": "1.1", "status": 200, "bytes": 1234, "referer": "",
               "user_agent": "curl/8.5.0", "app": "NAME", "ms": 0.52, "id": "ID"}

(each on one line.) Bytes are those of the response body sent to the client (0 for a HEAD
request), as nginx's ``$body_bytes_sent``; a referer or user-agent the request has not is
``-`` (combined) or ``""`` (json). The request keeps its header fields anyway: the two are
picked out of them at flush, not per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from itertools import chain, repeat
from operator import mul
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tui_passenger.config_model import ServerConfig
    from tui_passenger.proxy.request import Request

log = logging.getLogger("tui_passenger.proxy")

#: Lines buffered (about 64 KiB of them) after which they are written at once.
BUFFER_LINES = 512
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
COMBINED = '%s - - [%s] "%s %s HTTP/%s" %d %d "%s" "%s" app=%s %.2fms id=%s\n'
JSON = ('{"time": "%s", "ip": "%s", "method": "%s", "url": "%s", "version": "%s", '
        '"status": %d, "bytes": %d, "referer": "%s", "user_agent": "%s", "app": "%s", '
        '"ms": %.2f, "id": "%s"}\n')
#: One buffered line: time.time(), ip, method, url, version, status, body bytes sent, the
#: request's header fields, app, seconds, id.
Row = tuple[float, str, str, bytes, str, int, int, list[tuple[bytes, bytes]], str, float,
            bytes]


def _escape_combined(text: str) -> str:
    """``"``, ``\\``, unprintable and non-ASCII bytes as ``\\xHH`` (as nginx does)."""
    return "".join(c if c.isprintable() and c.isascii() and c not in '"\\'
                   else f"\\x{ord(c):02X}"
                   for c in text)


def _escape_combined_id(text: str) -> str:
    return _escape_combined(text).replace(" ", "\\x20")


def _escape_json(text: str) -> str:
    return json.dumps(text)[1:-1]


def _plain_combined_url(text: str) -> bool:
    return text.isascii() and text.isprintable() and "\\" not in text


def _plain_combined_id(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _plain_json(text: str) -> bool:
    return text.isprintable() and "\\" not in text


#: Per format, for the url and the id: the separator no value kept as it is contains, what
#: else such a value must be, and the escape of the others (see _decode_all).
_FIELD_RULES: dict[bool, tuple[tuple[str, Callable[[str], bool], Callable[[str], str]], ...]] = {
    False: (('"', _plain_combined_url, _escape_combined),
            (" ", _plain_combined_id, _escape_combined_id)),
    True: (('"', _plain_json, _escape_json), ('"', _plain_json, _escape_json)),
}


def _decode_all(values: Sequence[bytes], sep: str, plain: Callable[[str], bool],
                escape: Callable[[str], str]) -> list[str]:
    """The ``values`` decoded (latin-1), each escaped unless ``plain`` and free of ``sep``.

    Checked for the whole batch at once, joined by ``sep``, in the common case where no
    value needs escaping; one by one otherwise.
    """
    text = sep.encode("latin-1").join(values).decode("latin-1")
    if plain(text) and text.count(sep) == len(values) - 1:
        return text.split(sep)
    return [value if plain(value) and sep not in value else escape(value)
            for value in (raw.decode("latin-1") for raw in values)]


def _referers_and_agents(fields: Sequence[list[tuple[bytes, bytes]]], missing: bytes
                         ) -> tuple[list[bytes], list[bytes]]:
    """The Referer and User-Agent of each request (its last one), ``missing`` where it has
    none."""
    referers, agents = [], []
    for pairs in fields:
        referer = agent = missing
        for name, value in pairs:
            size = len(name)  # the lengths of the two names: most fields are skipped here
            if size == 7 or size == 10:
                lower = name.lower()
                if lower == b"referer":
                    referer = value
                elif lower == b"user-agent":
                    agent = value
        referers.append(referer)
        agents.append(agent)
    return referers, agents


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
    """Keeps the fields of a line per request in a buffer; formats and writes in batches."""

    __slots__ = ("fd", "file", "where", "json", "flush_interval", "_rows", "_timer",
                 "_failed")

    def __init__(self, fd: int, file: str | None, json_format: bool = False,
                 flush_interval: float = 1.0) -> None:
        self.fd = fd
        #: The configured file; None: the main log's.
        self.file = file
        self.where = file or "the main log"
        self.json = json_format
        self.flush_interval = flush_interval
        self._rows: list[Row] = []
        self._timer: asyncio.TimerHandle | None = None
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

    def record(self, ip: str, request: Request, status: int, sent: int, app: str,
               elapsed: float, request_id: bytes) -> None:
        """Buffer the fields of one answered request's line (``sent``: the body bytes sent;
        called on the event loop; the line is formatted with the others at flush)."""
        rows = self._rows
        rows.append((time.time(), ip, request.method, request.url, request.version, status,
                     sent, request.headers, app, elapsed, request_id))
        if len(rows) >= BUFFER_LINES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval,
                                                                 self.flush)

    def format(self, rows: Sequence[Row]) -> str:
        """The lines of ``rows``, in order (one ``%`` for them all)."""
        (times, ips, methods, urls, versions, statuses, sent, fields, apps, elapsed,
         ids) = zip(*rows, strict=True)
        seconds = list(map(int, times))
        stamp = self._stamp
        stamps = map({second: stamp(second) for second in set(seconds)}.__getitem__, seconds)
        url_rule, id_rule = _FIELD_RULES[self.json]
        texts = _decode_all(urls, *url_rule)
        referers, agents = _referers_and_agents(fields, b"" if self.json else b"-")
        referer_texts = _decode_all(referers, *url_rule)
        agent_texts = _decode_all(agents, *url_rule)
        id_texts = _decode_all(ids, *id_rule)
        ms = map(mul, elapsed, repeat(1000))
        first, then = (stamps, ips) if self.json else (ips, stamps)
        values = zip(first, then, methods, texts, versions, statuses, sent, referer_texts,
                     agent_texts, apps, ms, id_texts, strict=True)
        line = JSON if self.json else COMBINED
        return (line * len(rows)) % tuple(chain.from_iterable(values))

    def _stamp(self, second: int) -> str:
        t = time.gmtime(second)
        if self.json:
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", t)
        return (f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")

    def flush(self) -> None:
        """Format and write what is buffered now (one ``os.write``, more only if it writes
        less)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rows = self._rows
        if not rows:
            return
        self._rows = []
        if self.fd < 0:
            return  # closed: a request that ended after the stop is not logged
        data = memoryview(self.format(rows).encode("utf-8", "backslashreplace"))
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
