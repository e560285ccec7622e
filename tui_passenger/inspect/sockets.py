"""Socket inodes resolved to endpoints through /proc/net/{tcp,tcp6,udp,udp6,unix}."""

from __future__ import annotations

import socket
import sys
from collections.abc import Collection, Iterator

from .memory import read_proc_file

__all__ = ["SocketTable", "format_inet"]

TCP_STATES = {
    "01": "established", "02": "syn-sent", "03": "syn-recv", "04": "fin-wait-1",
    "05": "fin-wait-2", "06": "time-wait", "07": "close", "08": "close-wait",
    "09": "last-ack", "0A": "listen", "0B": "closing",
}
UNIX_ACCEPTCON = 0x10000  # __SO_ACCEPTCON in the Flags column: a listening socket


def _ip(hexaddr: str) -> str:
    """Decode an address as /proc/net prints it: 32-bit words in host byte order."""
    words = b"".join(int(hexaddr[i:i + 8], 16).to_bytes(4, sys.byteorder)
                     for i in range(0, len(hexaddr), 8))
    if len(words) == 4:
        return socket.inet_ntop(socket.AF_INET, words)
    return "[" + socket.inet_ntop(socket.AF_INET6, words) + "]"


def format_inet(hexaddr: str) -> str:
    """``0100007F:0BB8`` -> ``127.0.0.1:3000``; IPv6 as ``[::1]:3000``."""
    addr, _, port = hexaddr.partition(":")
    return f"{_ip(addr)}:{int(port, 16)}"


def _inet_target(local: str, remote: str, state: str) -> str:
    name = TCP_STATES.get(state, state)
    if name == "listen":
        return "listening " + format_inet(local)
    if remote.endswith(":0000") and int(remote[:-5], 16) == 0:
        return "bound " + format_inet(local)  # unconnected (UDP, or TCP not yet connected)
    target = f"{format_inet(local)} → {format_inet(remote)}"
    return target if name in ("established", "close") else f"{target} ({name})"


def _unix_target(flags: str, path: str | None) -> str:
    if not path:
        name = "(unnamed)"
    elif path.startswith("@"):
        name = "(abstract) " + path[1:]
    else:
        name = path
    return "listening " + name if int(flags, 16) & UNIX_ACCEPTCON else name


def _parse_inet(data: str, missing: set[int] | None) -> Iterator[tuple[int, str]]:
    """(inode, target) for the lines of a tcp/udp table (only inodes in ``missing``)."""
    for line in data.splitlines()[1:]:
        parts = line.split(None, 10)
        if len(parts) < 10:
            continue
        inode = int(parts[9])
        if inode == 0 or (missing is not None and inode not in missing):
            continue
        if missing is not None:
            missing.discard(inode)
        yield inode, _inet_target(parts[1], parts[2], parts[3])


def _parse_unix(data: str, missing: set[int] | None) -> Iterator[tuple[int, str]]:
    """(inode, target) for the lines of /proc/net/unix (only inodes in ``missing``)."""
    for line in data.splitlines()[1:]:
        parts = line.split(None, 7)
        if len(parts) < 7:
            continue
        inode = int(parts[6])
        if missing is not None:
            if inode not in missing:
                continue
            missing.discard(inode)
        yield inode, _unix_target(parts[3], parts[7] if len(parts) > 7 else None)


class SocketTable:
    """Socket inode -> (kind, target), from one read of the /proc/net tables.

    kind is "tcp", "tcp6", "udp", "udp6" or "unix"; target is "local → remote" for a connected
    inet socket, "listening <addr>" for a listener, "bound <addr>" for an unconnected one, and
    for unix sockets the path, "(unnamed)" or "(abstract) name". Build one per sample.
    """

    INET = ("tcp", "tcp6", "udp", "udp6")

    def __init__(self, entries: dict[int, tuple[str, str]] | None = None) -> None:
        self._entries: dict[int, tuple[str, str]] = entries or {}

    @classmethod
    def read(cls, inodes: Collection[int] | None = None, *,
             net_dir: str = "/proc/net") -> SocketTable:
        """Parse the tables; with ``inodes``, decode only those sockets and stop reading tables
        once all are found. ``net_dir`` may be ``/proc/PID/net`` for another net namespace.

        The kernel walks its whole hash table for each tcp file (~1.5 ms even when empty), so
        the cheap unix table is read first and the others only while inodes are missing.
        """
        entries: dict[int, tuple[str, str]] = {}
        missing = set(inodes) if inodes is not None else None
        for kind in ("unix", *cls.INET):
            if missing is not None and not missing:
                break
            try:
                data = read_proc_file(f"{net_dir}/{kind}").decode("utf-8", "replace")
            except (ProcessLookupError, PermissionError):
                continue  # no IPv6 in this kernel, or hidden
            parse = _parse_unix if kind == "unix" else _parse_inet
            for inode, target in parse(data, missing):
                entries[inode] = (kind, target)
        return cls(entries)

    def describe(self, inode: int) -> tuple[str, str] | None:
        """(kind, target) of the socket with this inode, or None if not in the tables."""
        return self._entries.get(inode)

    def __len__(self) -> int:
        return len(self._entries)
