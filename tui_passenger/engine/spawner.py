"""What both spawn methods share: the worker spec, the child environment, the pipes."""

from __future__ import annotations

import abc
import dataclasses
import itertools
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tui_passenger.engine.channel import ControlChannel
from tui_passenger.engine.identity import Identity, app_identity, socket_dir_for
from tui_passenger.engine.output import OutputPump, OutputSink
from tui_passenger.engine.process import WorkerProcess
from tui_passenger.runtime import protocol
from tui_passenger.runtime.worker import WorkerSpec

if TYPE_CHECKING:
    from tui_passenger.config import AppConfig
    from tui_passenger.engine.preloader import PreloaderHandle


def worker_spec(app: AppConfig, socket_dir: Path, spawn_method: str,
                identity: Identity | None = None) -> WorkerSpec:
    """The spec a worker or preloader of ``app`` is started with."""
    return WorkerSpec(
        app=app.name,
        root=str(app.root),
        entry=app.entry,
        interface=app.interface,
        concurrency=app.concurrency,
        environment=app.environment,
        socket_dir=str(socket_dir),
        spawn_method=spawn_method,
        max_preloader_idle_time=float(app.max_preloader_idle_time),
        gc_freeze=app.gc_freeze,
        scheduling=app.worker_scheduling,
        run_as=identity.as_spec() if identity else None,
        websocket_ping_interval=float(app.websocket_ping_interval),
        websocket_ping_timeout=float(app.websocket_ping_timeout),
        websocket_max_message_size=app.websocket_max_message_size,
        websocket_idle_timeout=float(app.websocket_idle_timeout),
    )


def child_environment(app: AppConfig, identity: Identity | None = None) -> dict[str, str]:
    """Our environment plus the app's ``env`` table, with unbuffered output by default."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PASSENGER_APP_ENV"] = app.environment
    if identity is not None:
        env.update(HOME=identity.home, USER=identity.user, LOGNAME=identity.user)
    env.update(app.env)
    return env


class ChildPipes:
    """A control channel and stdout/stderr pipes for one new child process."""

    __slots__ = ("channel", "child_control", "stdout", "stderr")

    def __init__(self) -> None:
        ours, self.child_control = protocol.channel_pair()
        self.channel = ControlChannel(ours)
        self.stdout = os.pipe()
        self.stderr = os.pipe()

    @property
    def child_fds(self) -> tuple[int, int, int]:
        """The ends the child keeps: control, stdout write end, stderr write end."""
        return self.child_control.fileno(), self.stdout[1], self.stderr[1]

    def close_child_ends(self) -> None:
        """After the child has them (or on failure): drop our copies of its ends."""
        self.child_control.close()
        for fd in (self.stdout[1], self.stderr[1]):
            os.close(fd)

    def close_ours(self) -> None:
        """Spawning failed: drop the manager's ends (the child ends are already closed)."""
        self.channel.close()
        for fd in (self.stdout[0], self.stderr[0]):
            os.close(fd)

    def pump(self, app: str, pid: int, role: str, sink: OutputSink | None) -> OutputPump:
        """Start reading the child's output; the pump owns the read ends from now on."""
        pump = OutputPump(app, pid, role, sink)
        pump.start(self.stdout[0], self.stderr[0])
        return pump


class Spawner(abc.ABC):
    """Starts workers of one app with one spawn method."""

    method: str
    #: The preloader (or mold) new workers are forked from; None when spawning directly.
    preloader: PreloaderHandle | None = None
    #: How many times a worker became the mold of a new generation (smart spawning only).
    reforks = 0

    def __init__(self, app: AppConfig, socket_dir: Path, *,
                 on_output: OutputSink | None = None) -> None:
        self.app = app
        self.on_output = on_output
        self._runtime_dir = socket_dir
        self._identity: Identity | None = None
        self._checked = False
        self.socket_dir = socket_dir
        self.spec = worker_spec(app, socket_dir, self.method)
        self.env: dict[str, str] = {}
        #: Numbers for new workers (1, 2, ...: the ``#N`` of their process titles); a group
        #: hands its counter on to the spawner of a new spawn method.
        self.numbers = itertools.count(1)

    def preflight(self) -> None:
        """Decide (once) which user the app runs as; SpawnError if that is refused."""
        if self._checked:
            return
        self._identity = app_identity(self.app)
        self.socket_dir = socket_dir_for(self._identity, self._runtime_dir, self.app.name)
        self.spec = worker_spec(self.app, self.socket_dir, self.method, self._identity)
        self.env = child_environment(self.app, self._identity)
        self._checked = True

    @property
    def generation(self) -> int:
        """The generation new workers start in (always 0 when spawning directly)."""
        return 0

    def preloaders(self) -> list[PreloaderHandle]:
        """The preloader processes running now: the current one first, then those of
        earlier generations (newest first). Empty when spawning directly."""
        return []

    async def prepare(self) -> None:
        """Load what spawning needs before the first spawn (smart: the preloader, which
        imports the app); raises SpawnError. Direct spawning loads nothing ahead."""
        self.preflight()

    @abc.abstractmethod
    async def spawn(self) -> WorkerProcess:
        """Start one worker and wait until it is ready; raises SpawnError."""

    async def close(self) -> None:  # noqa: B027 - direct spawning has nothing to close
        """Release what the spawner holds (the preloader); workers are left running."""

    def spec_json(self, *, generation: int = 0, number: int = 0) -> str:
        """The spec for one child, with what its process title shows (a preloader's
        generation, a direct worker's number), as the JSON it is started with."""
        return dataclasses.replace(self.spec, generation=generation, number=number).to_json()

    def new_worker(self, pid: int, ppid: int, pipes: ChildPipes, started: float,
                   number: int) -> WorkerProcess:
        """The handle on worker ``#number``, reading its output from now on."""
        output = pipes.pump(self.app.name, pid, "worker", self.on_output)
        worker = WorkerProcess(self.app.name, pid, ppid=ppid, spawn_method=self.method,
                               channel=pipes.channel, output=output, spawn_started=started)
        worker.number = number
        return worker

    def _deadline(self, started: float) -> float:
        return max(0.0, started + float(self.app.start_timeout) - time.monotonic())
