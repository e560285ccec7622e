"""systemd integration, standard library only: ``sd_notify`` messages (``Type=notify``) and
the listening sockets of socket activation.

Without ``NOTIFY_SOCKET`` the :class:`Notifier` does nothing; without ``LISTEN_FDS`` (or
with a ``LISTEN_PID`` that is not ours) :func:`inherited_sockets` finds none. Both take
their variables out of ``os.environ`` so that the apps' processes, which inherit our
environment, neither notify systemd nor look for sockets meant for us.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, MutableMapping

log = logging.getLogger("tui_passenger.systemd")

#: The first inherited file descriptor (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3
#: Seconds between two STATUS= summaries.
STATUS_INTERVAL = 5.0


class Notifier:
    """Sends state changes to the service manager: ready(), reloading(), stopping(),
    status(text), watchdog(). Every method is a no-op when there is no NOTIFY_SOCKET."""

    __slots__ = ("address", "watchdog_interval", "_sock")

    def __init__(self, address: str | None, watchdog_usec: int = 0) -> None:
        #: Where the datagrams go ('@' = the abstract namespace), or None: notify nobody.
        self.address = address
        #: Seconds between two WATCHDOG=1 pings (half of WatchdogSec), or 0: no watchdog.
        self.watchdog_interval = watchdog_usec / 2e6 if address else 0.0
        self._sock: socket.socket | None = None

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID),
        taking those variables out of the environment."""
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", None) or None
        usec, pid = env.pop("WATCHDOG_USEC", ""), env.pop("WATCHDOG_PID", "")
        watchdog = int(usec) if usec.isdigit() and pid in ("", str(os.getpid())) else 0
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        """True when messages go somewhere."""
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False when it could not be sent."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            # The service manager going away must not take the server with it.
            log.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        """READY=1: startup (or a reload) finished."""
        self.send("READY=1", *(() if status is None else (_status(status),)))

    def reloading(self) -> None:
        """RELOADING=1 (with the monotonic time systemd's notify-reload wants)."""
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        """STOPPING=1: the shutdown began."""
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        """STATUS=: one line shown by ``systemctl status``."""
        self.send(_status(text))

    def watchdog(self) -> None:
        """WATCHDOG=1: the event loop is alive."""
        self.send("WATCHDOG=1")

    def close(self) -> None:
        """Close the datagram socket (a later message opens it again)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.split())


class Heartbeat:
    """STATUS= every few seconds and WATCHDOG=1 at half the watchdog interval, both sent
    from the event loop, so that a stuck loop stops the pings and systemd notices."""

    __slots__ = ("notifier", "summary", "_tasks")

    def __init__(self, notifier: Notifier, summary: Callable[[], str]) -> None:
        self.notifier = notifier
        self.summary = summary
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Begin sending (nothing is scheduled without a NOTIFY_SOCKET)."""
        if not self.notifier.enabled:
            return
        self._tasks.append(asyncio.ensure_future(
            self._every(STATUS_INTERVAL, lambda: self.notifier.status(self.summary()))))
        if self.notifier.watchdog_interval:
            self._tasks.append(asyncio.ensure_future(
                self._every(self.notifier.watchdog_interval, self.notifier.watchdog)))

    def stop(self) -> None:
        """Stop sending."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    @staticmethod
    async def _every(interval: float, send: Callable[[], None]) -> None:
        while True:
            send()
            await asyncio.sleep(interval)


def inherited_sockets(environ: MutableMapping[str, str] | None = None,
                      ) -> list[tuple[socket.socket, str]]:
    """The listening sockets systemd passed (fd 3 on), each with its name (LISTEN_FDNAMES,
    else ``fd N``); none unless LISTEN_PID is our pid. The variables are taken out of the
    environment, and the sockets are not inherited by our children."""
    env = os.environ if environ is None else environ
    pid, count = env.pop("LISTEN_PID", ""), env.pop("LISTEN_FDS", "")
    names = env.pop("LISTEN_FDNAMES", "").split(":")
    if pid != str(os.getpid()) or not count.isdigit():
        return []
    found = []
    for index in range(int(count)):
        fd = LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        name = names[index] if index < len(names) and names[index] else f"fd {fd}"
        found.append((socket.socket(fileno=fd), name))
    return found
