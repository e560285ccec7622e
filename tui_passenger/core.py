"""What the dashboard talks to: the core embedded in this process, or a running instance
over its admin socket. Both give the same typed snapshot (see :mod:`tui_passenger.snapshot`)
and take the same intents, answered with the typed results of :mod:`tui_passenger.operations`
(:class:`Done`, or :class:`Refused` raised). No UI code here.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

from tui_passenger.operations import Done
from tui_passenger.snapshot import Snapshot


class Core(abc.ABC):
    """The dashboard's view of a tui-passenger instance."""

    #: True when the server runs in this process, on the dashboard's event loop.
    embedded: bool
    #: True when quitting the dashboard shuts the server down (it was started for it).
    owned: bool = False
    #: One line for the header: what the dashboard is showing.
    description: str
    #: Where the server logs, when the dashboard knows (shown in the help screen).
    log_file: Path | None = None
    #: True once the dashboard has left the server running on its own (the detach key).
    detached: bool = False
    #: The pids whose fds the next snapshots must list (None: every process's). The others'
    #: may come empty: the dashboard shows one process's fds, and at 150 workers the fd
    #: lists are most of a snapshot's size.
    fds_of: tuple[int, ...] | None = None
    #: Seconds the server's event loop has spent answering this dashboard's reads, as its
    #: admin API reports with each answer (0 when embedded: that time is this process's
    #: own). A busy server's time answering is time not proxying: the refresh counts it.
    served_seconds: float = 0.0

    @abc.abstractmethod
    async def start(self) -> None:
        """Start serving (embedded) or connect (attached)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Shut down gracefully (an owned server) or just disconnect (attached)."""

    async def detach(self) -> None:
        """Leave the server running without this dashboard (it keeps serving, headless).
        A server embedded in this process cannot be left: ``detachable`` says so."""
        if not self.detachable:
            raise RuntimeError("the server runs inside the dashboard: it cannot be left running")
        self.detached = True
        await self.stop()

    @property
    def detachable(self) -> bool:
        """Whether :meth:`detach` can leave the server running (not when embedded)."""
        return not self.embedded

    @abc.abstractmethod
    async def snapshot(self) -> Snapshot:
        """The current state (its ``to_json()`` is the status schema)."""

    @abc.abstractmethod
    async def events(self, since: int) -> tuple[int, list[dict[str, Any]]]:
        """Log entries after sequence number ``since``: (last seq, entries)."""

    # The intents: each returns what happened (its message is the same words everywhere)
    # or raises Refused with a reason for the operator; see tui_passenger.operations.

    @abc.abstractmethod
    async def scale(self, app: str, count: int) -> Done:
        """Keep ``count`` workers of ``app`` warm (0 to the app's limit)."""

    @abc.abstractmethod
    async def kill(self, pid: int, force: bool = False) -> Done:
        """Stop one worker (the pool replaces it if below the minimum)."""

    @abc.abstractmethod
    async def stack(self, pid: int) -> Done:
        """The Python stack of every thread of a live worker or preloader (reply "stack")."""

    @abc.abstractmethod
    async def restart(self, app: str) -> Done:
        """Rolling restart of ``app``."""

    @abc.abstractmethod
    async def set_spawn_method(self, app: str, method: str) -> Done:
        """Switch ``app`` to ``smart`` or ``direct`` spawning (rolling)."""

    @abc.abstractmethod
    async def refork(self, app: str) -> Done:
        """Promote a warmed worker of ``app`` to preloader and replace the others from it."""

    @abc.abstractmethod
    async def reload(self) -> Done:
        """Read the configuration file again and apply it (Refused: nothing changed)."""

    @abc.abstractmethod
    async def pause_sampling(self, paused: bool) -> Done:
        """Stop or resume reading /proc (memory, fds, CPU)."""
