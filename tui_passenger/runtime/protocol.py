"""The messages the manager exchanges with preloaders and workers.

Every control channel is an ``AF_UNIX`` ``SOCK_SEQPACKET`` socket pair: one JSON object per
packet, so message boundaries survive and file descriptors can ride along with a message
(``SCM_RIGHTS``). The child watches its end for EOF: when the manager goes away, the child
exits instead of running unsupervised.

This module is imported by the worker runtime, so it uses nothing but the standard library.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from enum import IntEnum
from typing import Any

#: Largest message either side sends; long tracebacks are cut to fit.
MAX_MESSAGE = 128 * 1024
#: File descriptors that travel with one spawn request: worker control, stdout, stderr.
SPAWN_FDS = 3


class ExitCode(IntEnum):
    """Exit statuses with a meaning, so the manager can tell why a child stopped."""

    OK = 0
    #: The application could not be imported (a spawn error, not worth retrying at once).
    APP_LOAD_ERROR = 4
    #: A ``starting_worker_process`` hook raised.
    HOOK_ERROR = 5
    #: The server could not start (socket bind, ASGI lifespan startup failure).
    STARTUP_ERROR = 6


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """A new control channel; both ends are close-on-exec until passed on deliberately."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def encode(message: dict[str, Any]) -> bytes:
    """Serialise one message, shortening its longest text fields to fit in a packet."""
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) <= MAX_MESSAGE:
        return data
    trimmed = dict(message)
    for key in ("traceback", "message", "output"):
        value = trimmed.get(key)
        if isinstance(value, str) and len(value) > 1024:
            excess = len(data) - MAX_MESSAGE + 64
            trimmed[key] = "…" + value[min(len(value) - 512, excess):]
            data = json.dumps(trimmed, separators=(",", ":")).encode()
            if len(data) <= MAX_MESSAGE:
                return data
    raise ValueError(f"message too large for the control channel ({len(data)} bytes)")


def decode(data: bytes) -> dict[str, Any]:
    """Parse one message; anything but a JSON object is a protocol error."""
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError(f"control message is not an object: {data[:80]!r}")
    return message


def send(sock: socket.socket, message: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
    """Send one message (blocking), with file descriptors attached if given."""
    data = encode(message)
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def recv(sock: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """Receive one message (blocking); ``(None, [])`` means the peer closed the channel."""
    if max_fds:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, max_fds)
    else:
        data, fds = sock.recv(MAX_MESSAGE), []
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return decode(data), list(fds)


def error_message(category: str, exc: BaseException, *, summary: str | None = None) -> dict:
    """The ``error`` event a child sends when loading or starting fails."""
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        "event": "error",
        "category": category,
        "message": summary or f"{type(exc).__name__}: {exc}",
        "traceback": text,
    }


def flush_stdio() -> None:
    """Flush Python's buffered stdout/stderr (before fork, before exit)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
