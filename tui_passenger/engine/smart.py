"""Smart spawning: a preloader imports the app once and forks every worker from it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
import weakref
from typing import Any

from tui_passenger.engine.direct import start_child
from tui_passenger.engine.errors import SpawnError
from tui_passenger.engine.output import OutputPump
from tui_passenger.engine.process import ExitStatus, WorkerProcess
from tui_passenger.engine.spawner import ChildPipes, Spawner
from tui_passenger.runtime import protocol

#: How many times in a row a preloader may vanish at the moment it was asked to fork
#: because its idle timer fired; each such race just starts a new preloader.
IDLE_RACE_RETRIES = 3


class PreloaderLost(Exception):
    """The preloader went away while a spawn request was pending."""

    def __init__(self, idle: bool, status: str) -> None:
        super().__init__(f"preloader exited ({'idle timeout' if idle else status})")
        self.idle = idle


async def send_with_fds(sock: socket.socket, message: dict[str, Any], fds: tuple[int, ...]) -> None:
    """Send one message with descriptors on a non-blocking socket from the event loop."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            protocol.send(sock, message, fds)
            return
        except BlockingIOError:
            writable = loop.create_future()
            loop.add_writer(sock, writable.set_result, None)
            try:
                await writable
            finally:
                loop.remove_writer(sock)


class Preloader:
    """The manager's handle on one preloader process."""

    role = "preloader"
    #: The worker this preloader used to be (see :class:`Mold`).
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
        self._control: socket.socket | None = None
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

    async def start(self, timeout: float) -> None:
        """Start the preloader and wait until it has imported the app."""
        app = self.spawner.app
        pipes = ChildPipes()
        try:
            self._proc = await start_child(app.python, "tui_passenger.preloader",
                                           self.spawner.spec.to_json(), pipes,
                                           self.spawner.env,
                                           switches_user=self.spawner.spec.run_as is not None)
        except OSError as exc:
            pipes.close_ours()
            self.state = "gone"
            raise SpawnError(self.app, "interpreter", f"cannot start {app.python}: {exc}") from exc
        self.pid = self._proc.pid
        self._control = pipes.control
        self.output = pipes.pump(self.app, self.pid, "preloader", self.spawner.on_output)
        asyncio.ensure_future(self._watch_exit())
        await self._wait_ready(timeout, "load the app")

    async def _wait_ready(self, timeout: float, task: str) -> None:
        loop = asyncio.get_running_loop()
        assert self._control is not None
        receive = asyncio.ensure_future(loop.sock_recv(self._control, protocol.MAX_MESSAGE))
        done, _ = await asyncio.wait({receive, self.exited}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if receive not in done:
            receive.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await receive
            if self.exited.done():
                raise await self._failure("exited", f"{self.role} exited "
                                          f"({self.exited.result().describe()}) before it "
                                          "was ready")
            await self.stop(kill=True)
            raise await self._failure("timeout", f"{self.role} did not {task} within "
                                      f"start_timeout ({timeout:g} s); killed it")
        try:
            data = receive.result()
        except OSError:
            data = b""
        message = protocol.decode(data) if data else {"event": "eof"}
        if message.get("event") != "ready":
            await self.stop()
            raise await self._failure(message.get("category", "exited"),
                                      message.get("message", f"{self.role} closed its channel"),
                                      message.get("traceback", ""))
        self.load_seconds = message.get("load_seconds")
        self.threads = tuple(message.get("threads", ()))
        self.own_fds = frozenset(message.get("own_fds", (0, 1, 2)))
        self.state = "ready"
        self._reader = asyncio.ensure_future(self._read_loop())

    async def _failure(self, category: str, message: str, traceback: str = "") -> SpawnError:
        self.state = "gone"
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
        self._fail_pending(PreloaderLost(self.idle_exited, status.describe()))
        # Its children are ours now (we are their subreaper): reap those that have exited.
        for worker in list(self._workers.values()):
            worker.preloader_gone()

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._control is not None
        while True:
            try:
                data = await loop.sock_recv(self._control, protocol.MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                self.state = "gone"
                self._fail_pending(PreloaderLost(self.idle_exited, "control channel closed"))
                return
            self._dispatch(protocol.decode(data))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("event") == "exit":
            status = ExitStatus(message.get("code"), message.get("signal"))
            worker = self._workers.get(message["pid"])
            if worker is not None:
                worker.report_status(status)
            else:
                self._early_exits[message["pid"]] = status
        elif message.get("event") == "idle-exit":
            self.idle_exited = True
            self.state = "gone"
        elif "id" in message:
            future = self._pending.pop(message["id"], None)
            if future is None or future.done():
                return
            if "pid" in message:
                future.set_result(int(message["pid"]))
            else:
                future.set_exception(SpawnError(self.app, "preloader", str(message.get("error"))))

    def _fail_pending(self, exc: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    async def fork_worker(self, started: float, timeout: float) -> WorkerProcess:
        """Ask the preloader for one worker; raises PreloaderLost or SpawnError."""
        if self.state != "ready" or self._control is None:
            raise PreloaderLost(self.idle_exited, "not running")
        pipes = ChildPipes()
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await send_with_fds(self._control, {"command": "spawn", "id": request_id},
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
        worker = self.spawner._new_worker(pid, self.pid or 0, pipes, started)
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
        if self._control is not None:
            self._control.close()
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


class Mold(Preloader):
    """The handle on a worker promoted to preloader (refork): same protocol, but the
    process is the worker, whose exit the worker's pidfd reports."""

    role = "mold"

    def __init__(self, spawner: SmartSpawner, generation: int, worker: WorkerProcess) -> None:
        super().__init__(spawner, generation)
        self.mold = worker

    async def adopt(self, timeout: float) -> None:
        """Tell the worker ``mold`` (idle, out of the pool) to become this preloader."""
        worker = self.mold
        self.pid = worker.pid
        self.output = worker.output
        self._control = worker.hand_over_control()
        asyncio.ensure_future(self._watch_exit())
        try:
            await send_with_fds(self._control, {"command": "mold"}, ())
        except OSError as exc:
            raise await self._failure("exited", f"worker {self.pid} is gone: {exc}") from exc
        await self._wait_ready(timeout, "become the mold")

    async def _exit_status(self) -> ExitStatus:
        return await asyncio.shield(self.mold.exited)

    def _kill(self) -> None:
        self.mold.send_signal(signal.SIGKILL)

    async def _failure(self, category: str, message: str, traceback: str = "") -> SpawnError:
        if self._control is not None:
            self._control.close()  # taken from the worker, which no longer closes it
        return await super()._failure(category, message, traceback)


class SmartSpawner(Spawner):
    """Forks workers from a preloader, starting (or restarting) the preloader as needed."""

    method = "smart"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.preloader: Preloader | None = None
        #: Preloaders of earlier generations, kept until their workers are replaced.
        self.previous: list[Preloader] = []
        self.preloader_starts = 0
        self.generations = 0
        self.reforks = 0
        self._lock = asyncio.Lock()
        self._reforking: asyncio.Future[None] | None = None

    @property
    def generation(self) -> int:
        """The generation new workers are forked in (the current preloader's)."""
        return self.preloader.generation if self.preloader is not None else self.generations

    def _next_generation(self) -> int:
        self.generations += 1
        return self.generations - 1

    async def _ensure_preloader(self, started: float) -> Preloader:
        while self._reforking is not None:
            await asyncio.shield(self._reforking)
        async with self._lock:
            if self.preloader is not None and self.preloader.state == "ready":
                return self.preloader
            # The current one is gone (a mold that died, say): fall back to the newest
            # earlier generation still running, else start a fresh preloader.
            self._discard(self.preloader)
            while self.previous:
                earlier = self.previous.pop()
                if earlier.state == "ready":
                    self.preloader = earlier
                    return earlier
                self._discard(earlier)
            preloader = Preloader(self, self._next_generation())
            self.preloader = preloader
            self.preloader_starts += 1
            await preloader.start(self._deadline(started))
            return preloader

    @staticmethod
    def _discard(preloader: Preloader | None) -> None:
        """Release the channel of a preloader that has gone (it exited, nothing waits)."""
        if preloader is not None:
            asyncio.ensure_future(preloader.stop())

    def begin_refork(self) -> None:
        """Hold new spawns until :meth:`refork` is done (call it right before)."""
        if self._reforking is None:
            self._reforking = asyncio.get_running_loop().create_future()

    async def refork(self, worker: WorkerProcess) -> Preloader:
        """Turn ``worker`` (idle, taken out of the pool) into the preloader of a new
        generation; the previous preloader stays until :meth:`retire_previous`.

        Raises SpawnError if the worker cannot become the mold; spawning then goes on
        from the preloader there was.
        """
        try:
            async with self._lock:
                mold = Mold(self, self._next_generation(), worker)
                await mold.adopt(self._deadline(time.monotonic()))
                if self.preloader is not None:
                    self.previous.append(self.preloader)
                self.preloader = mold
                self.reforks += 1
                return mold
        finally:
            self.end_refork()

    def end_refork(self) -> None:
        """Let held spawns go on (done by :meth:`refork`; call it if refork is not called)."""
        pending, self._reforking = self._reforking, None
        if pending is not None and not pending.done():
            pending.set_result(None)

    async def retire_previous(self) -> None:
        """Stop the preloaders of earlier generations (their workers keep running)."""
        previous, self.previous = self.previous, []
        await asyncio.gather(*(p.stop() for p in previous))

    async def spawn(self) -> WorkerProcess:
        self.preflight()
        started = time.monotonic()
        crashes = idle_races = 0
        while True:
            preloader = await self._ensure_preloader(started)
            try:
                return await preloader.fork_worker(started, self._deadline(started))
            except asyncio.TimeoutError:
                raise SpawnError(self.app.name, "timeout", "preloader did not fork a worker "
                                 f"within start_timeout ({self.app.start_timeout:g} s)") from None
            except PreloaderLost as lost:
                if lost.idle and idle_races < IDLE_RACE_RETRIES:
                    idle_races += 1
                    continue
                crashes += 1
                if crashes >= 2:
                    raise SpawnError(self.app.name, "preloader",
                                     f"preloader failed twice in a row: {lost}") from lost

    async def close(self) -> None:
        """Stop the preloaders; forked workers keep running (we are their subreaper)."""
        await self.retire_previous()
        if self.preloader is not None:
            await self.preloader.stop()
            self.preloader = None
