"""The access log writer: a small process that formats and writes the manager's access log.

The manager's event loop only buffers each request's raw fields; every batch goes to this
process through a pipe as one frame (a 4-byte length, then the rows in :mod:`marshal`
form), and the formatting (:func:`~tui_passenger.logformat.format_rows`) and the writes
happen here, on another core, off the proxy's loop (nginx's ``buffer=`` writes from its
worker; here not even the formatting stays on the request path).

    python -m tui_passenger.logwriter FD WHERE [--json]

FD is the log's file descriptor (inherited), WHERE names it in error messages. It exits
when the pipe ends (the manager closed it: a graceful stop, a reload, or the manager gone),
having written everything it got. Signals meant for the manager's process group (Ctrl-C
in a terminal, systemd's SIGTERM to the whole unit) are ignored: the manager writes its
last lines and closes the pipe, and this writes them too before it exits. A write that
fails (disk full) is reported once on stderr (the main log) and the lines are dropped until
writing works again. Standard library only (plus the package's stdlib-only modules).
"""

from __future__ import annotations

import marshal
import os
import select
import signal
import stat
import sys
from collections.abc import Callable, Sequence

from tui_passenger.logformat import Row, format_rows

#: The frame header: the length of the marshalled batch that follows, big-endian.
HEADER = 4


def frame(rows: list[Row]) -> bytes:
    """A batch of rows as it goes down the pipe."""
    payload = marshal.dumps(rows)
    return len(payload).to_bytes(HEADER, "big") + payload


def unframe(data: bytes) -> list[list[Row]]:
    """The batches in ``data`` (frames back to back; one cut short is left out)."""
    batches = []
    while len(data) >= HEADER:
        end = HEADER + int.from_bytes(data[:HEADER], "big")
        if len(data) < end:
            break
        batches.append(marshal.loads(data[HEADER:end]))
        data = data[end:]
    return batches


def _read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd``, or fewer only at the end of the pipe."""
    parts: list[bytes] = []
    while size:
        data = os.read(fd, min(size, 1 << 20))
        if not data:
            break
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


class Sink:
    """Writes formatted lines to the log's descriptor: here in the writer, and on the
    proxy's loop when there is no writer. A failing write (disk full) is reported once
    through ``say(level, text)`` ("error" or "warning") and the lines are dropped until
    writing works again."""

    def __init__(self, fd: int, where: str, say: Callable[[str, str], None]) -> None:
        self.fd = fd
        self.where = where
        self.say = say
        self.failed = False
        # A pipe or a socket (stderr under a terminal multiplexer, journald, `| tee`) is
        # shared with the manager's own log lines: only writes of up to PIPE_BUF bytes are
        # never cut by another process's, so lines go in such pieces there.
        mode = os.fstat(fd).st_mode
        self.piece = select.PIPE_BUF if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else 0

    def write_rows(self, rows: list[Row], json_format: bool) -> None:
        """The lines of ``rows``, formatted."""
        self.write(format_rows(rows, json_format).encode("utf-8", "backslashreplace"))

    def write(self, data: bytes) -> None:
        """All of ``data`` (more than one write only if one writes less, or in whole lines
        of at most PIPE_BUF bytes to a pipe or a socket)."""
        try:
            for piece in self._pieces(data):
                view = memoryview(piece)
                while view:
                    view = view[os.write(self.fd, view):]
        except OSError as e:
            if not self.failed:
                self.failed = True
                self.say("error", f"access log: cannot write to {self.where} "
                                  f"({e.strerror or e}): access lines are dropped until it can")
            return
        if self.failed:
            self.failed = False
            self.say("warning", f"access log: writing to {self.where} again")

    def _pieces(self, data: bytes) -> list[bytes]:
        """``data`` cut after a newline into pieces of at most ``piece`` bytes (a longer
        line alone), or whole."""
        size = self.piece
        if not size or len(data) <= size:
            return [data]
        pieces, start = [], 0
        while start < len(data):
            end = data.rfind(b"\n", start, start + size) + 1
            if end <= start:  # one line longer than a piece
                end = data.find(b"\n", start + size) + 1 or len(data)
            pieces.append(data[start:end])
            start = end
        return pieces


def _say(level: str, text: str) -> None:
    """To stderr, which the manager reads into its main log at ``level``."""
    print(f"{level}: {text}", file=sys.stderr, flush=True)


def run(pipe: int, sink: Sink, json_format: bool) -> int:
    """Write the batches read from ``pipe`` until it ends; 0."""
    while True:
        header = _read_exactly(pipe, HEADER)
        if len(header) < HEADER:
            return 0
        sink.write_rows(marshal.loads(_read_exactly(pipe, int.from_bytes(header, "big"))),
                        json_format)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the writer process (see the module's docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    json_format = "--json" in args
    fd, where = (arg for arg in args if arg != "--json")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        from tui_passenger.runtime.proctitle import set_title

        set_title(f"access log writer ({where})", "tp-accesslog")
    except Exception:  # noqa: BLE001 - a name is a nicety; the log is not
        pass
    return run(sys.stdin.fileno(), Sink(int(fd), where, _say), json_format)


if __name__ == "__main__":
    sys.exit(main())
