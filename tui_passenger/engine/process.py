"""The manager's view of one worker process: identity, readiness, output, exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable
from dataclasses import dataclass

from tui_passenger.engine.channel import ControlChannel, NotReady
from tui_passenger.engine.errors import SpawnError
from tui_passenger.engine.output import OutputPump
from tui_passenger.runtime import protocol

#: How long to wait for the preloader's report of a forked worker's exit status.
STATUS_REPORT_GRACE = 2.0


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a process ended; ``code`` and ``signal`` are None when nobody could tell."""

    code: int | None = None
    signal: int | None = None

    @classmethod
    def from_wait(cls, returncode: int) -> ExitStatus:
        """From a ``returncode`` as subprocess reports it (negative = killed by a signal)."""
        return cls(signal=-returncode) if returncode < 0 else cls(code=returncode)

    @classmethod
    def from_waitstatus(cls, status: int) -> ExitStatus:
        """From a raw ``waitpid`` status."""
        if os.WIFSIGNALED(status):
            return cls(signal=os.WTERMSIG(status))
        return cls(code=os.waitstatus_to_exitcode(status))

    def describe(self) -> str:
        """``exit code 3``, ``killed by SIGKILL`` or ``unknown exit status``."""
        if self.signal is not None:
            try:
                return f"killed by {signal.Signals(self.signal).name}"
            except ValueError:
                return f"killed by signal {self.signal}"
        if self.code is not None:
            return f"exit code {self.code}"
        return "unknown exit status"


def try_reap(pid: int) -> ExitStatus | None:
    """Reap ``pid`` if it is our child and has exited; None if it is not ours to reap."""
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return ExitStatus.from_waitstatus(status) if reaped else None


class WorkerProcess:
    """One worker, spawned directly or forked by a preloader."""

    def __init__(self, app: str, pid: int, *, ppid: int, spawn_method: str,
                 channel: ControlChannel, output: OutputPump, spawn_started: float) -> None:
        self.app = app
        self.pid = pid
        self.ppid = ppid
        self.spawn_method = spawn_method
        #: Closed once the exit is known; a mold's handle sends and receives over it too.
        self.channel = channel
        self.output = output
        self.spawn_started = spawn_started
        self.spawn_duration: float | None = None
        self.started_at = time.time()
        self.socket_path: str | None = None
        self.interface = "wsgi"
        self.concurrency = 1
        self.lost_threads: tuple[str, ...] = ()
        self.own_fds: frozenset[int] = frozenset((0, 1, 2))
        #: Which preloader forked it (0 for the first, +1 for each later one or mold).
        self.generation = 0
        #: Its number within the app (``#N`` in its process title); 0 until given one.
        self.number = 0
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[ExitStatus] = loop.create_future()
        self._reported: ExitStatus | None = None
        self._pidfd: int | None = None
        #: The last signal the manager sent (SIGTERM to stop, SIGKILL to kill).
        self.signal_sent: int | None = None

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.app} pid={self.pid} {self.spawn_method}>"

    @property
    def alive(self) -> bool:
        """True until the process is known to have exited."""
        return not self.exited.done()

    # -- exit tracking -------------------------------------------------------------------

    def watch_exit(self, waiter: Awaitable[int] | None = None) -> None:
        """Learn of the exit from ``waiter`` (our own child) or from a pidfd (a forked one)."""
        if waiter is not None:
            async def wait_child() -> None:
                self._set_exited(ExitStatus.from_wait(await waiter))

            asyncio.ensure_future(wait_child())
            return
        if self.exited.done():
            return  # the preloader already reported it (it died at once)
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self._on_gone()
            return
        asyncio.get_running_loop().add_reader(self._pidfd, self._on_gone)

    def _on_gone(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        # Our child once its preloader has gone (we are the subreaper); else the preloader's.
        status = try_reap(self.pid) or self._reported
        if status is not None:
            self._set_exited(status)
        else:
            asyncio.get_running_loop().call_later(STATUS_REPORT_GRACE, self.preloader_gone)

    def report_status(self, status: ExitStatus) -> None:
        """The preloader reaped this worker and says how it ended."""
        self._reported = status
        if self._pidfd is None:
            self._set_exited(status)

    def preloader_gone(self) -> None:
        """Nobody else will report the status: reap it ourselves if it is now ours."""
        if self._pidfd is None:
            self._set_exited(try_reap(self.pid) or self._reported or ExitStatus())

    def _set_exited(self, status: ExitStatus) -> None:
        if not self.exited.done():
            self.exited.set_result(status)
            # What it sent before exiting stays readable (the handshake may want it).
            self.channel.close()

    # -- readiness -----------------------------------------------------------------------

    async def wait_ready(self, timeout: float) -> None:
        """Wait for the worker's ``WorkerReady``; on failure it is gone and SpawnError says why."""
        try:
            ready = await self.channel.handshake(
                protocol.WorkerReady, exited=self.exited, kill=self._send_kill,
                timeout=timeout, who="worker", task="start")
        except NotReady as failure:
            await self.output.drain()
            raise SpawnError(self.app, failure.category, failure.message,
                             traceback=failure.traceback, output=list(self.output.recent),
                             pid=self.pid) from None
        self.spawn_duration = time.monotonic() - self.spawn_started
        self.socket_path = ready.socket
        self.interface = ready.interface
        self.concurrency = ready.concurrency
        self.ppid = ready.ppid
        self.lost_threads = ready.lost_threads
        self.own_fds = frozenset(ready.own_fds)

    def _send_kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    # -- stopping ------------------------------------------------------------------------

    def send_signal(self, sig: int) -> bool:
        """Signal the worker unless it has exited; False if it was already gone."""
        if self.exited.done():
            return False
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        self.signal_sent = sig
        return True

    @property
    def exit_was_requested(self) -> bool:
        """Whether the worker ended because the manager stopped it (not a crash)."""
        if not self.exited.done() or self.signal_sent is None:
            return False
        status = self.exited.result()
        # Killed by another signal than ours (e.g. SIGKILL from outside while we asked
        # for SIGTERM) is a crash even during a stop.
        return status.signal is None or status.signal == self.signal_sent

    async def kill(self) -> ExitStatus:
        """SIGKILL and wait for the exit."""
        self.send_signal(signal.SIGKILL)
        return await asyncio.shield(self.exited)

    async def stop(self, timeout: float = 30.0, *, websocket_code: int = 0) -> ExitStatus:
        """SIGTERM (finish the request in flight, run stop hooks), then SIGKILL after timeout.

        With ``websocket_code``, the worker is first told to let its open WebSockets go on
        for most of ``timeout`` and then close them with that code (the last tenth, at least
        a second, is for the close handshake and the stop hooks).
        """
        if websocket_code and not self.exited.done():
            grace = max(0.0, min(timeout - 1.0, timeout * 0.9))
            with contextlib.suppress(OSError):
                await self.channel.send(protocol.RetireWebSockets(websocket_code, grace))
        if not self.send_signal(signal.SIGTERM):
            return await asyncio.shield(self.exited)  # already gone
        try:
            return await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        except asyncio.TimeoutError:
            return await self.kill()
