"""The manager's handles on preloader processes: one started to load the app, or a worker
promoted to preloader (the mold of a refork). Both fork workers over the same protocol."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import weakref
from typing import TYPE_CHECKING

from tui_passenger.engine.channel import ControlChannel, NotReady
from tui_passenger.engine.direct import start_child
from tui_passenger.engine.errors import SpawnError
from tui_passenger.engine.output import OutputPump
from tui_passenger.engine.process import ExitStatus, WorkerProcess
from tui_passenger.engine.spawner import ChildPipes
from tui_passenger.runtime import protocol
from tui_passenger.runtime.protocol import ProtocolError

if TYPE_CHECKING:
    from tui_passenger.engine.smart import SmartSpawner

log = logging.getLogger(__name__)


class PreloaderLost(Exception):
    """The preloader went away while a spawn request was pending."""

    def __init__(self, idle: bool, status: str) -> None:
        super().__init__(f"preloader exited ({'idle timeout' if idle else status})")
        self.idle = idle


class PreloaderHandle:
    """The manager's handle on one preloader process."""

    role = "preloader"
    #: The worker this preloader used to be (see :class:`MoldHandle`).
    mold: WorkerProcess | None = None

    def __init__(self, spawner: SmartSpawner, generation: int) -> None:
        self.spawner = spawner
        self.app = spawner.app.name
        self.generation = generation
        self.pid: int | None = None
        self.state = "starting"  # starting -> ready -> gone
        self.started_at = time.time()
        self.load_seconds: float | None = None
        self.threads: tuple[str, ...] = ()
        self.own_fds: frozenset[int] = frozenset((0, 1, 2))
        self.idle_exited = False
        self.output: OutputPump | None = None
        self.channel: ControlChannel | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._next_id = 0
        self._workers: weakref.WeakValueDictionary[int, WorkerProcess] = (
            weakref.WeakValueDictionary())
        self._reader: asyncio.Task[None] | None = None
        # Exit reports that arrived before fork_worker() registered the worker (a child
        # that died at once); consumed on registration.
        self._early_exits: dict[int, ExitStatus] = {}
        self.exited: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.app} pid={self.pid} {self.state}>"

    @property
    def live(self) -> bool:
        """Started and not known to be gone."""
        return self.pid is not None and self.state != "gone"

    async def start(self, timeout: float) -> None:
        """Start the preloader and wait until it has imported the app."""
        app = self.spawner.app
        pipes = ChildPipes()
        try:
            self._proc = await start_child(app.python, "tui_passenger.preloader",
                                           self.spawner.spec_json(generation=self.generation),
                                           pipes,
                                           self.spawner.env,
                                           switches_user=self.spawner.spec.run_as is not None)
        except OSError as exc:
            pipes.close_ours()
            self.state = "gone"
            raise SpawnError(self.app, "interpreter", f"cannot start {app.python}: {exc}") from exc
        self.pid = self._proc.pid
        self.channel = pipes.channel
        self.output = pipes.pump(self.app, self.pid, "preloader", self.spawner.on_output)
        asyncio.ensure_future(self._watch_exit())
        await self._await_ready(self.channel, timeout, "load the app")

    async def _await_ready(self, channel: ControlChannel, timeout: float, task: str) -> None:
        try:
            ready = await channel.handshake(protocol.PreloaderReady, exited=self.exited,
                                            kill=self._kill, timeout=timeout, who=self.role,
                                            task=task)
        except NotReady as failure:
            raise await self._failure(failure.category, failure.message,
                                      failure.traceback) from None
        self.load_seconds = ready.load_seconds
        self.threads = ready.threads
        self.own_fds = frozenset(ready.own_fds)
        self.state = "ready"
        self._reader = asyncio.ensure_future(self._read_reports(channel))

    async def _failure(self, category: str, message: str, traceback: str = "") -> SpawnError:
        self.state = "gone"
        if self.channel is not None:
            self.channel.close()
        if self.output is not None:
            await self.output.drain()
        output = list(self.output.recent) if self.output else []
        return SpawnError(self.app, category, message, traceback=traceback, output=output,
                          pid=self.pid)

    async def _exit_status(self) -> ExitStatus:
        assert self._proc is not None
        return ExitStatus.from_wait(await self._proc.wait())

    async def _watch_exit(self) -> None:
        status = await self._exit_status()
        self.state = "gone"
        if not self.exited.done():
            self.exited.set_result(status)
        if self.channel is not None:
            self.channel.close()  # what it reported before exiting stays readable
        self._fail_pending(PreloaderLost(self.idle_exited, status.describe()))
        # Its children are ours now (we are their subreaper): reap those that have exited.
        for worker in list(self._workers.values()):
            worker.preloader_gone()

    async def _read_reports(self, channel: ControlChannel) -> None:
        """Route what the preloader reports until its channel closes."""
        while True:
            try:
                message = await channel.receive()
            except ProtocolError as exc:
                log.error("%s %s: %s", self.role, self.pid, exc)
                continue
            if message is None:
                break
            self._route_report(message)
        self.state = "gone"
        self._fail_pending(PreloaderLost(self.idle_exited, "control channel closed"))

    def _route_report(self, message: protocol.Message) -> None:
        """Hand one report to whom it concerns: an exit to its worker, an answer to the
        spawn request waiting for it."""
        if isinstance(message, protocol.ChildExited):
            status = ExitStatus(message.code, message.signal)
            worker = self._workers.get(message.pid)
            if worker is not None:
                worker.report_status(status)
            else:
                self._early_exits[message.pid] = status
        elif isinstance(message, protocol.IdleExit):
            self.idle_exited = True
            self.state = "gone"
        elif isinstance(message, (protocol.Forked, protocol.SpawnRefused)):
            future = self._pending.pop(message.id, None)
            if future is None or future.done():
                return
            if isinstance(message, protocol.Forked):
                future.set_result(message.pid)
            else:
                future.set_exception(SpawnError(self.app, "preloader", message.reason))
        else:
            log.error("%s %s sent %r out of turn; ignored", self.role, self.pid, message)

    def _fail_pending(self, exc: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    async def fork_worker(self, started: float, timeout: float) -> WorkerProcess:
        """Ask the preloader for one worker; raises PreloaderLost or SpawnError."""
        channel = self.channel
        if self.state != "ready" or channel is None:
            raise PreloaderLost(self.idle_exited, "not running")
        pipes = ChildPipes()
        self._next_id += 1
        request_id = self._next_id
        number = next(self.spawner.numbers)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await channel.send(protocol.SpawnRequest(request_id, number, self.generation),
                               pipes.child_fds)
        except OSError as exc:
            self._pending.pop(request_id, None)
            pipes.close_child_ends()
            pipes.close_ours()
            self.state = "gone"  # its channel is broken: the next spawn needs another one
            raise PreloaderLost(self.idle_exited, f"send failed: {exc}") from exc
        pipes.close_child_ends()
        try:
            pid = await asyncio.wait_for(future, timeout)
        except BaseException:
            pipes.close_ours()
            raise
        worker = self.spawner.new_worker(pid, self.pid or 0, pipes, started, number)
        worker.generation = self.generation
        self._workers[pid] = worker
        early = self._early_exits.pop(pid, None)
        if early is not None:
            worker.report_status(early)
        worker.watch_exit()
        await worker.wait_ready(max(0.0, started + timeout - time.monotonic()))
        return worker

    async def stop(self, *, kill: bool = False, timeout: float = 5.0) -> None:
        """Close the channel (the preloader exits by itself); kill after ``timeout``."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.channel is not None:
            self.channel.close()
        if self.pid is None:
            return  # never started
        if kill:
            self._kill()
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        except asyncio.TimeoutError:
            self._kill()
            await asyncio.shield(self.exited)

    def _kill(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()


class MoldHandle(PreloaderHandle):
    """The handle on a worker promoted to preloader (refork): same protocol, over the
    worker's own control channel; the worker's pidfd reports its exit."""

    role = "mold"

    def __init__(self, spawner: SmartSpawner, generation: int, worker: WorkerProcess) -> None:
        super().__init__(spawner, generation)
        self.mold = self._worker = worker

    async def adopt(self, timeout: float) -> None:
        """Tell the worker (idle, out of the pool) to become this preloader."""
        worker = self._worker
        self.pid = worker.pid
        self.output = worker.output
        self.channel = worker.channel
        asyncio.ensure_future(self._watch_exit())
        try:
            await self.channel.send(protocol.BecomeMold(self.generation))
        except OSError as exc:
            raise await self._failure("exited", f"worker {self.pid} is gone: {exc}") from exc
        await self._await_ready(self.channel, timeout, "become the mold")

    async def _exit_status(self) -> ExitStatus:
        return await asyncio.shield(self._worker.exited)

    def _kill(self) -> None:
        self._worker.send_signal(signal.SIGKILL)
