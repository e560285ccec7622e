"""The preloader: import the app once, then fork a worker for every spawn request.

It never serves requests. It waits on its control channel for ``SpawnRequest`` messages,
each carrying three descriptors (the new worker's control channel, stdout and stderr),
forks, and answers ``Forked`` (or ``SpawnRefused``). It reaps its children and reports
each exit (``ChildExited``). It leaves when the channel closes (the manager is gone) or after
``max_preloader_idle_time`` seconds without a spawn request (0 = never).

Refork: a worker forked from here may later be told to become a preloader itself (the
"mold"). It stops serving, runs its ``starting_mold`` hooks and enters the same loop, over
its own control channel, with the app as requests left it: its children start from warm
caches instead of cold imports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tui_passenger.runtime import forkprep, proctitle, protocol, stacks
from tui_passenger.runtime.loader import detect_interface, load_app
from tui_passenger.runtime.protocol import ExitCode
from tui_passenger.runtime.worker import (
    BECOME_MOLD,
    ForkInfo,
    WorkerSpec,
    enter_child,
    run_worker,
    server_module,
    warn_without_websockets,
)


@dataclass
class ForkedChild:
    """Returned in the child after fork: what the worker needs to start serving."""

    control: socket.socket
    fork: ForkInfo
    #: The request it was forked for (its number and generation name the process).
    request: protocol.SpawnRequest


class ForkServer:
    """The preloader process's side: the loaded app and the loop that forks workers."""

    def __init__(self, spec: WorkerSpec, control: socket.socket) -> None:
        self.spec = spec
        self.control = control
        self.app: Callable[..., Any] | None = None
        self.connections = forkprep.SharedConnections()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def load(self) -> int | None:
        """Import the app with the collector off; report ready or error. None means ready."""
        gc.disable()
        started = time.monotonic()
        try:
            self.app = load_app(self.spec.root, self.spec.entry)
            interface = detect_interface(self.app, self.spec.interface)
            # Import the server now, so forked children share it instead of importing it.
            server_module(interface)
            warn_without_websockets(interface)
        except BaseException as exc:  # noqa: BLE001 - any import failure is a spawn error
            import traceback

            traceback.print_exc()
            protocol.send(self.control, protocol.Failed.from_exception("import", exc))
            return ExitCode.APP_LOAD_ERROR
        self.connections.scan()
        self._announce(time.monotonic() - started)
        return None

    def promote(self, control: socket.socket) -> ForkServer:
        """In a worker told to become the mold: a preloader over the worker's channel."""
        started = time.monotonic()
        # A mold's warm state cannot be rebuilt by a new preloader: it does not idle out.
        mold = ForkServer(dataclasses.replace(self.spec, max_preloader_idle_time=0.0), control)
        mold.app = self.app
        control.setblocking(True)
        # The app ran requests here: find connection pools it created since loading, then
        # collect (and freeze) once, so the first fork does not pay for it.
        mold.connections.scan()
        forkprep.before_fork(freeze=self.spec.gc_freeze)
        gc.disable()
        mold._announce(time.monotonic() - started)
        return mold

    def _announce(self, seconds: float) -> None:
        protocol.send(self.control, protocol.PreloaderReady(
            load_seconds=seconds,
            threads=tuple(forkprep.live_thread_names()),
            own_fds=(0, 1, 2, self.control.fileno(), self._wake_r, self._wake_w,
                     *stacks.stack_fd()),
        ))

    def serve(self) -> ForkedChild | int:
        """Handle spawn requests until told to leave; in a forked child, return its info."""
        # SIGCHLD only wakes the loop (through the wakeup fd); reaping happens in the loop.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        idle = self.spec.max_preloader_idle_time or None
        deadline = time.monotonic() + idle if idle else None
        while True:
            self._reap()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            control = self.control.fileno()
            readable, _, _ = select.select([control, self._wake_r], [], [], timeout)
            if not readable:
                protocol.send(self.control, protocol.IdleExit())
                return ExitCode.OK
            if self._wake_r in readable:
                self._drain_wakeups()
            if control not in readable:
                continue
            try:
                message, fds = protocol.receive(self.control, max_fds=protocol.SPAWN_FDS)
            except protocol.ProtocolError as exc:
                print(f"ignored on the control channel: {exc}", file=sys.stderr)
                continue
            if message is None:
                return ExitCode.OK
            if not isinstance(message, protocol.SpawnRequest) or len(fds) != protocol.SPAWN_FDS:
                protocol.close_fds(fds)
                self._refuse(message, f"{len(fds)} descriptors")
                continue
            child = self._fork(message, fds)
            if child is not None:
                return child
            if idle is not None:
                deadline = time.monotonic() + idle

    def _fork(self, request: protocol.SpawnRequest, fds: list[int]) -> ForkedChild | None:
        worker_control, stdout_w, stderr_w = fds
        threads = tuple(forkprep.live_thread_names())
        protocol.flush_stdio()
        forkprep.before_fork(freeze=self.spec.gc_freeze)
        try:
            pid = os.fork()
        except OSError as exc:
            protocol.close_fds(fds)
            protocol.send(self.control, protocol.SpawnRefused(request.id, f"fork: {exc}"))
            return None
        if pid == 0:
            os.dup2(stdout_w, 1)
            os.dup2(stderr_w, 2)
            # detach(): the socket object must not close this fd number again later, when
            # it may belong to something else.
            forkprep.after_fork_in_child(
                [stdout_w, stderr_w, self.control.detach(), self._wake_r, self._wake_w])
            self.connections.reconnect_in_child()
            control = socket.socket(fileno=worker_control)
            return ForkedChild(control, ForkInfo(threads), request)
        protocol.close_fds(fds)
        protocol.send(self.control, protocol.Forked(request.id, pid))
        return None

    def _refuse(self, message: protocol.Message, detail: str) -> None:
        print(f"ignored on the control channel: {message!r} ({detail})", file=sys.stderr)
        if isinstance(message, protocol.SpawnRequest):
            protocol.send(self.control, protocol.SpawnRefused(
                message.id, f"a spawn request needs {protocol.SPAWN_FDS} descriptors, "
                            f"got {detail}"))

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if os.WIFSIGNALED(status):
                report = protocol.ChildExited(pid, code=None, signal=os.WTERMSIG(status))
            else:
                report = protocol.ChildExited(pid, os.waitstatus_to_exitcode(status), None)
            with contextlib.suppress(OSError):
                protocol.send(self.control, report)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tui_passenger.preloader``."""
    spec, control = enter_child(argv, "tui_passenger.preloader")
    proctitle.name_preloader(spec.app, spec.generation)
    preloader = ForkServer(spec, control)
    failed = preloader.load()
    if failed is not None:
        return failed
    while True:
        result = preloader.serve()
        if isinstance(result, int):
            return result
        # In a forked child from here on: become a worker. Returning to the interpreter (not
        # os._exit) lets the app's atexit handlers run when the worker stops.
        proctitle.name_worker(spec.app, result.request.number, result.request.generation)
        code = run_worker(spec, result.control, app=preloader.app, fork=result.fork)
        if code != BECOME_MOLD:
            protocol.flush_stdio()
            return code
        preloader = preloader.promote(result.control)


if __name__ == "__main__":
    sys.exit(main())
