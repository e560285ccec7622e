"""The worker runtime: load (or inherit) the app, run the hooks, serve it on a Unix socket.

A worker is either a fresh interpreter (``python -m tui_passenger.worker``, direct spawning)
or a child the preloader forked (smart spawning). Both end up in :func:`run_worker`, which
talks to the manager over the control channel: ``WorkerReady`` once the socket accepts
requests, or ``Failed`` with a category and the traceback if anything before that fails.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from tui_passenger.hooks import run_hooks
from tui_passenger.runtime import proctitle, protocol, stacks
from tui_passenger.runtime.loader import detect_interface, enter_root, load_app
from tui_passenger.runtime.protocol import ExitCode

#: What :func:`run_worker` returns (instead of an exit code) when the manager told this
#: forked worker to become the next preloader (refork).
BECOME_MOLD = -1


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to know about its app; travels as JSON on the command line."""

    app: str
    root: str
    entry: str | None
    interface: str = "auto"
    concurrency: int = 0
    environment: str = "production"
    socket_dir: str = "."
    spawn_method: str = "direct"
    max_preloader_idle_time: float = 300.0
    gc_freeze: bool = True
    #: The worker's scheduling policy: "batch" or "normal" (see set_scheduling).
    scheduling: str = "normal"
    #: [uid, gid, [groups]] to switch to before loading the app (started as root).
    run_as: list[Any] | None = None
    #: For the process title: a preloader's generation, a direct worker's number.
    generation: int = 0
    number: int = 0
    #: ASGI WebSockets: seconds between our pings, seconds to answer one, largest message.
    websocket_ping_interval: float = 20.0
    websocket_ping_timeout: float = 20.0
    websocket_max_message_size: int = 16 * 1024 * 1024
    #: Seconds an open WebSocket may pass without a message either way (0 = no limit).
    websocket_idle_timeout: float = 0.0

    def to_json(self) -> str:
        """The spec as a compact JSON string."""
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        """Parse a spec written by :meth:`to_json`."""
        return cls(**json.loads(text))

    @property
    def development(self) -> bool:
        """Whether error pages may show tracebacks."""
        return self.environment == "development"


@dataclass(frozen=True)
class ForkInfo:
    """What a forked worker lost in the fork: the preloader's other threads."""

    lost_threads: tuple[str, ...] = ()


def bind_listener(socket_dir: str) -> socket.socket:
    """Listen on ``<socket_dir>/w<pid>.sock``, readable by our user only."""
    path = os.path.join(socket_dir, f"w{os.getpid()}.sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(1024)
    return listener


def server_module(interface: str) -> ModuleType:
    """The module with the server for ``interface`` (imported on first use: workers of one
    kind never pay for the other)."""
    name = "asgi_server" if interface == "asgi" else "wsgi_server"
    return importlib.import_module(f"tui_passenger.runtime.{name}")


def warn_without_websockets(interface: str) -> None:
    """Say at startup that an ASGI app's WebSocket upgrades will be refused (no wsproto):
    once per interpreter, by the preloader for the workers it forks."""
    if interface == "asgi":
        from tui_passenger.runtime.asgi_websocket import MISSING

        if MISSING:
            print(f"warning: {MISSING}", file=sys.stderr)


def _make_server(app: Callable[..., Any], interface: str, listener: socket.socket,
                 spec: WorkerSpec) -> Any:
    module = server_module(interface)
    if interface == "asgi":
        return module.ASGIServer(app, listener, concurrency=spec.concurrency or 100,
                                 development=spec.development,
                                 websocket_ping_interval=spec.websocket_ping_interval,
                                 websocket_ping_timeout=spec.websocket_ping_timeout,
                                 websocket_max_message_size=spec.websocket_max_message_size,
                                 websocket_idle_timeout=spec.websocket_idle_timeout)
    return module.WSGIServer(app, listener, development=spec.development)


def _fail(control: socket.socket, category: str, exc: BaseException, code: ExitCode) -> int:
    import traceback

    traceback.print_exception(type(exc), exc, exc.__traceback__)
    with contextlib.suppress(OSError):
        protocol.send(control, protocol.Failed.from_exception(category, exc))
    return code


def run_worker(spec: WorkerSpec, control: socket.socket, *, app: Callable[..., Any] | None = None,
               fork: ForkInfo | None = None) -> int:
    """Serve the app until told to stop; returns the process exit code."""
    try:
        if app is None:
            app = load_app(spec.root, spec.entry)
        interface = detect_interface(app, spec.interface)
    except BaseException as exc:  # noqa: BLE001 - any import failure is a spawn error
        return _fail(control, "import", exc, ExitCode.APP_LOAD_ERROR)
    if fork is not None:  # a stack file of its own, not the preloader's
        enable_stacks(spec.socket_dir)
    else:  # (a forked worker's preloader has said it)
        warn_without_websockets(interface)
    try:
        run_hooks("starting_worker_process", forked=fork is not None)
    except BaseException as exc:  # noqa: BLE001
        return _fail(control, "hook", exc, ExitCode.HOOK_ERROR)
    try:
        listener = bind_listener(spec.socket_dir)
        server = _make_server(app, interface, listener, spec)
        server.start()
    except BaseException as exc:  # noqa: BLE001
        return _fail(control, "startup", exc, ExitCode.STARTUP_ERROR)

    mold: int | None = None  # the generation this worker is told to be the preloader of

    def on_control() -> None:
        nonlocal mold
        try:
            message, _ = protocol.receive(control)
        except protocol.ProtocolError as exc:
            print(f"ignored on the control channel: {exc}", file=sys.stderr)
            return
        except OSError:
            message = None
        if message is None:  # the manager is gone
            server.request_stop()
        elif isinstance(message, protocol.RetireWebSockets) and interface == "asgi":
            server.retire_websockets(message.code, message.grace)
        elif isinstance(message, protocol.BecomeMold) and fork is not None:
            mold = message.generation
            if interface == "asgi":  # the worker is replaced by the ones it will fork
                server.retire_websockets(1012, 0.0)
            server.request_stop()

    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    server.watch_fd(control.fileno(), on_control)
    # Before the ready message, so that a ready worker already has its policy.
    set_scheduling(spec.scheduling)
    protocol.send(control, protocol.WorkerReady(
        socket=listener.getsockname(),
        ppid=os.getppid(),
        interface=interface,
        concurrency=server.concurrency,
        lost_threads=still_lost(fork.lost_threads) if fork else (),
        own_fds=(0, 1, 2, control.fileno(), listener.fileno(), *stacks.stack_fd()),
    ))
    try:
        server.serve_forever()
    finally:
        path = listener.getsockname()
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        if mold is None:
            stacks.disable(spec.socket_dir)
    if mold is not None:
        set_scheduling("normal")  # a preloader now, like the first one
        proctitle.name_preloader(spec.app, mold)
        return _become_mold(control)
    try:
        run_hooks("stopping_worker_process")
    except Exception:  # noqa: BLE001 - the worker is leaving anyway; show why
        import traceback

        traceback.print_exc()
    return ExitCode.OK


def still_lost(lost: tuple[str, ...]) -> tuple[str, ...]:
    """The threads lost in the fork that the starting_worker_process hooks have not started
    again (a thread of the same name is running now)."""
    running = {thread.name for thread in threading.enumerate()}
    return tuple(name for name in lost if name not in running)


def enable_stacks(socket_dir: str) -> None:
    """Answer the manager's stack signal (see runtime/stacks.py); a process that cannot
    create its stack file still runs (the manager then says it did not answer)."""
    try:
        stacks.enable(socket_dir)
    except OSError as exc:
        print(f"stack dumps unavailable: {exc}", file=sys.stderr)


def set_scheduling(policy: str) -> None:
    """Run this process under SCHED_BATCH ("batch") or SCHED_OTHER ("normal").

    The proxy is the one process every request goes through. A worker woken by a request
    it sends would, under SCHED_OTHER, often preempt the proxy on its CPU and so delay every
    other request; under SCHED_BATCH it waits for the next scheduling point instead (it
    still runs at once on an idle CPU, and gets the same CPU share). No privilege needed;
    where the policy does not exist (not Linux) nothing changes.
    """
    chosen = getattr(os, "SCHED_BATCH" if policy == "batch" else "SCHED_OTHER", None)
    if chosen is None or not hasattr(os, "sched_setscheduler"):
        return
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, chosen, os.sched_param(0))


def _become_mold(control: socket.socket) -> int:
    """Run the ``starting_mold`` hooks; a failing hook ends the worker with an error."""
    try:
        run_hooks("starting_mold")
    except BaseException as exc:  # noqa: BLE001 - reported to the manager, which falls back
        return _fail(control, "hook", exc, ExitCode.HOOK_ERROR)
    return BECOME_MOLD


def become(run_as: list[Any] | None) -> None:
    """Switch to [uid, gid, groups] (groups first, uid last) before the app is loaded."""
    if run_as:
        uid, gid, groups = run_as
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)


def close_inherited_fds(keep: int) -> None:
    """Close every descriptor but stdio and ``keep`` (the control channel).

    Whatever started us may have leaked descriptors of the manager (uvloop's subprocess
    support does not close them all); a preloader would hand them on to every worker.
    """
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))


def enter_child(argv: Sequence[str] | None, prog: str) -> tuple[WorkerSpec, socket.socket]:
    """What both entry points do first: read the arguments, close what we should not have
    inherited, switch user, take the control channel and enter the app root."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--spec", required=True, help="worker spec as JSON")
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    close_inherited_fds(args.control_fd)
    spec = WorkerSpec.from_json(args.spec)
    become(spec.run_as)
    enable_stacks(spec.socket_dir)
    control = socket.socket(fileno=args.control_fd)
    os.set_inheritable(control.fileno(), False)
    enter_root(spec.root)
    return spec, control


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a directly spawned worker."""
    spec, control = enter_child(argv, "tui_passenger.worker")
    proctitle.name_worker(spec.app, spec.number, None)
    code = run_worker(spec, control)
    protocol.flush_stdio()
    return code


if __name__ == "__main__":
    sys.exit(main())
