"""The manager's view of one worker process: identity, readiness, output, exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

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
                 control: socket.socket, output: OutputPump, spawn_started: float) -> None:
        self.app = app
        self.pid = pid
        self.ppid = ppid
        self.spawn_method = spawn_method
        self.forked = spawn_method == "smart"
        self.control = control
        self.output = output
        self.spawn_started = spawn_started
        self.spawn_duration: float | None = None
        self.started_at = time.time()
        self.socket_path: str | None = None
        self.interface = "wsgi"
        self.concurrency = 1
        self.lost_threads: tuple[str, ...] = ()
        self.reconnected: tuple[str, ...] = ()
        self.own_fds: frozenset[int] = frozenset((0, 1, 2))
        #: Which preloader forked it (0 for the first, +1 for each later one or mold).
        self.generation = 0
        #: False once a preloader handle took over the control channel (refork).
        self._owns_control = True
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[ExitStatus] = loop.create_future()
        self._reported: ExitStatus | None = None
        self._pidfd: int | None = None
        self._receiving = False
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
            # Until it is ready, wait_ready() owns the channel (an error report may still
            # be unread in it).
            if self.spawn_duration is not None and not self._receiving and self._owns_control:
                self.control.close()

    def hand_over_control(self) -> socket.socket:
        """Give the control channel to a new owner (the preloader handle of a mold)."""
        self._owns_control = False
        return self.control

    # -- readiness -----------------------------------------------------------------------

    async def wait_ready(self, timeout: float) -> None:
        """Wait for the worker's ``ready`` message; on failure kill it and raise SpawnError."""
        loop = asyncio.get_running_loop()
        receive = asyncio.ensure_future(loop.sock_recv(self.control, protocol.MAX_MESSAGE))
        self._receiving = True
        try:
            done, _ = await asyncio.wait({receive, self.exited}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self._stop_receiving(receive)
            await self.kill()
            raise
        await self._stop_receiving(receive)
        if receive not in done:
            if self.exited.done():
                await self.output.drain()
                raise self._error("exited", f"exited ({self.exited.result().describe()}) "
                                            "before it was ready")
            await self.kill()
            raise self._error("timeout", f"not ready within start_timeout ({timeout:g} s); "
                                         "killed it")
        try:
            data = receive.result()
        except OSError:
            data = b""
        message = protocol.decode(data) if data else {"event": "eof"}
        if message.get("event") == "ready":
            self._on_ready(message)
            return
        await self._wait_exit_after_error()
        if message.get("event") == "error":
            raise self._error(message.get("category", "startup"), message.get("message", ""),
                              message.get("traceback", ""))
        raise self._error("exited", f"exited ({self.exited.result().describe()}) "
                                    "before it was ready")

    async def _stop_receiving(self, receive: asyncio.Future[bytes]) -> None:
        # The pending sock_recv must be gone before the socket may be closed.
        receive.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await receive
        self._receiving = False
        if self.exited.done():
            self.control.close()

    def _on_ready(self, message: dict[str, Any]) -> None:
        self.spawn_duration = time.monotonic() - self.spawn_started
        self.socket_path = message["socket"]
        self.interface = message.get("interface", "wsgi")
        self.concurrency = int(message.get("concurrency", 1))
        self.ppid = int(message.get("ppid", self.ppid))
        self.lost_threads = tuple(message.get("lost_threads", ()))
        self.reconnected = tuple(message.get("reconnected", ()))
        self.own_fds = frozenset(message.get("own_fds", (0, 1, 2)))

    async def _wait_exit_after_error(self) -> None:
        # A child that reported an error exits by itself; make sure of it.
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), 5.0)
        except asyncio.TimeoutError:
            await self.kill()
        await self.output.drain()

    def _error(self, category: str, message: str, traceback: str = "") -> SpawnError:
        self.control.close()  # the spawn failed: nothing more will come over it
        return SpawnError(self.app, category, message, traceback=traceback,
                          output=list(self.output.recent), pid=self.pid)

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

    async def stop(self, timeout: float = 30.0) -> ExitStatus:
        """SIGTERM (finish the request in flight, run stop hooks), then SIGKILL after timeout."""
        if not self.send_signal(signal.SIGTERM):
            return await asyncio.shield(self.exited)  # already gone
        try:
            return await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        except asyncio.TimeoutError:
            return await self.kill()
