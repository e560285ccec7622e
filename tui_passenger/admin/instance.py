"""The instance already running on an admin socket, if any: asked before a start touches
anything, so that a second start with the same config says who is there and leaves it be."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from tui_passenger.listeners import StartError

#: Seconds the running instance has to answer /status (it is alive: it accepted).
ASK_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class RunningInstance:
    """Who answers on an admin socket: its pid and the addresses it serves."""

    path: Path
    pid: int
    addresses: tuple[str, ...] = ()

    def refusal(self) -> StartError:
        """The error a second start gives: who runs, and what to do instead."""
        where = f", serving {', '.join(self.addresses)}" if self.addresses else ""
        return StartError(
            f"tui-passenger is already running with this config (pid {self.pid}{where}; "
            f"admin socket {self.path}): see it with `tui-passenger attach` or "
            "`tui-passenger status` (with the same -c), stop it with `kill "
            f"{self.pid}`; a second instance needs its own config (or [server] admin_socket) "
            "and another address (--port)")


def running_instance(path: Path) -> RunningInstance | None:
    """The instance accepting connections on ``path``, or None (no socket, or a stale one)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(ASK_TIMEOUT)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    with sock:
        # The pid of the process that listens, from the kernel: no answer needed.
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0]
        return RunningInstance(path, pid, _addresses(sock))


def _addresses(sock: socket.socket) -> tuple[str, ...]:
    """The addresses from the instance's /status (best effort: none if it does not say)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        sock.sendall(b"GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        body = b"".join(chunks).partition(b"\r\n\r\n")[2]
        server = json.loads(body)["server"]
        return tuple(server.get("addresses") or [server["url"]])
    return ()
