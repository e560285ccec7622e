"""The ``tui-passenger`` command line.

``tui-passenger`` starts the core as a process of its own and opens the dashboard on it
(``--embedded``: both in one process); ``--headless`` runs the core alone, logging to
stderr; ``attach`` shows the dashboard of a running instance;
``status``, ``memory`` and ``ctl`` ask a running instance (see :mod:`.admin.cli`). The
options that say which instance (``-c``, ``--admin-socket``) go before or after a command.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import os
import shlex
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui_passenger import __version__

if TYPE_CHECKING:
    from tui_passenger.config import Config

log = logging.getLogger("tui_passenger")


def fail(problem: object, status: int) -> int:
    """Say what went wrong on stderr, as every command does; returns the exit ``status``."""
    print(f"tui-passenger: {problem}", file=sys.stderr)
    return status


#: The options for running the server, which the other commands do not take.
RUN_OPTIONS = ("port", "address", "spawn_method", "headless", "embedded", "log_level",
               "log_file", "ready_fd")
#: The log file is rotated at this size, keeping this many old ones (.1 … .3).
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3


def build_parser() -> argparse.ArgumentParser:
    """The ``tui-passenger`` command line: running the server, and the commands that ask a
    running one (``attach``, ``status``, ``memory``, ``ctl``)."""
    from tui_passenger.admin.cli import DEFAULT_CONFIG, add_commands, where_options

    where = where_options()
    parser = argparse.ArgumentParser(
        prog="tui-passenger", parents=[where],
        description="Serve Python web apps with direct or smart (preload + fork) spawning. "
                    "Without a command: run the server, with the dashboard on a terminal.")
    parser.add_argument("--port", type=int, help="public port (overrides [server] port)")
    parser.add_argument("--address", help="public address (overrides [server] address)")
    parser.add_argument("--spawn-method", choices=("smart", "direct"),
                        help="spawn method for every app (overrides spawn_method)")
    parser.add_argument("--headless", action="store_true", default=None,
                        help="run without the dashboard, logging to stderr")
    parser.add_argument("--embedded", action="store_true", default=None,
                        help="run the server inside the dashboard's process (by default it "
                             "is a process of its own, which the dashboard can leave running)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        help="default: info")
    parser.add_argument("--log-file", type=Path,
                        help="where the log goes, rotated at 10 MiB, 3 kept (default: "
                             "stderr when headless; with the dashboard, next to the admin "
                             "socket)")
    # The launched server's side of the start handshake (see tui_passenger.launch).
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"tui-passenger {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     title="commands for a running instance")
    attach_help = ("show the dashboard of a running instance; quitting leaves it running "
                   "(one a dashboard started and left: quitting stops it, d leaves it again)")
    commands.add_parser("attach", parents=[where], help=attach_help, description=attach_help)
    actions = add_commands(commands, where)
    parser.epilog = (f"ctl actions: {', '.join(actions)} (see tui-passenger ctl --help). "
                     "-c and --admin-socket go before or after the command; without either, "
                     f"the commands find the instance started with ./{DEFAULT_CONFIG}.")
    return parser


def setup_logging(level: str, file: Path | None = None) -> None:
    """Log lines with a timestamp, to stderr or to a file (rotated: a busy server under
    the dashboard must not fill the disk)."""
    handler: logging.Handler = (
        logging.handlers.RotatingFileHandler(file, maxBytes=LOG_MAX_BYTES,
                                             backupCount=LOG_BACKUPS)
        if file is not None else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def main(argv: Sequence[str] | None = None) -> int:
    """Run tui-passenger; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if hasattr(args, "config") and hasattr(args, "admin_socket"):
        # each level's pair is exclusive in argparse; across levels it is checked here
        parser.error("argument -c/--config: not allowed with argument --admin-socket")
    if args.command is None:
        if hasattr(args, "admin_socket"):
            parser.error("--admin-socket is for attach, status, memory and ctl")
        return serve(args)
    given = [name for name in RUN_OPTIONS if getattr(args, name) is not None]
    if given:
        option = "--" + given[0].replace("_", "-")
        parser.error(f"{option} is for running the server, not for {args.command}")
    if args.command == "attach":
        return attach(args)
    from tui_passenger.admin.cli import run_command

    try:
        status = run_command(args)
        sys.stdout.flush()  # now, so that a reader gone away is noticed here
    except BrokenPipeError:
        # The reader has what it wanted (``status --json | head -1``). Point stdout at
        # /dev/null so that Python's own flush at exit does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


def serve(args: argparse.Namespace) -> int:
    """Run the server: with the dashboard on a terminal, else headless."""
    from tui_passenger.admin.cli import DEFAULT_CONFIG
    from tui_passenger.config import ConfigError, apply_overrides, load_config
    from tui_passenger.launch import report_start
    from tui_passenger.runtime.proctitle import name_manager, set_title

    config_path = getattr(args, "config", DEFAULT_CONFIG)
    ready_fd: int | None = args.ready_fd

    def load() -> Config:  # at start, and again on each reload (the same overrides)
        return apply_overrides(load_config(config_path), port=args.port,
                               address=args.address, spawn_method=args.spawn_method)

    def refuse(problem: object, status: int) -> int:  # the dashboard waiting hears it too
        report_start(ready_fd, str(problem))
        return fail(problem, status)

    try:
        config = load()
    except ConfigError as exc:
        return refuse(exc, 2)
    problem = already_running(config)
    if problem is not None:  # before any log file or directory of ours is made
        return refuse(problem, 1)
    level = args.log_level or "info"
    headless = bool(args.headless)
    if not headless and not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("tui-passenger: no terminal for the dashboard; running headless "
              "(use --headless to say so)", file=sys.stderr)
        headless = True
    # Now, before any thread starts: setproctitle moves the environment on its first call.
    if headless or args.embedded:
        name_manager(os.fspath(config_path))
    else:
        set_title(f"dashboard {config_path}", "tp-dashboard")
    if headless:
        setup_logging(level, args.log_file)
        from tui_passenger.headless import run_headless

        started = None if ready_fd is None else lambda problem: report_start(ready_fd, problem)
        try:
            log_file = None if args.log_file is None else os.path.abspath(args.log_file)
            return run(run_headless(config, load, started, log_file))
        except KeyboardInterrupt:
            return 130
    from tui_passenger.admin.paths import admin_socket_path, private_directory

    log_file = args.log_file or admin_socket_path(config).with_suffix(".log")
    try:
        if args.log_file is None:
            private_directory(log_file)
        if log_file.is_symlink():
            raise OSError(f"refusing to log to {log_file}: it is a symbolic link")
    except OSError as exc:
        return fail(exc, 1)
    if args.embedded:
        from tui_passenger.cores import EmbeddedCore

        setup_logging(level, log_file)
        core = EmbeddedCore(config, reload_config=load)
        core.log_file, core.server.log_file = log_file, os.fspath(log_file)
        return run(dashboard(core, config.keys))
    return launch(args, os.fspath(config_path), admin_socket_path(config), log_file,
                  dict(config.keys))


def launch(args: argparse.Namespace, config: str, socket: Path, log_file: Path,
           keys: dict[str, str]) -> int:
    """Start the server as a process of its own, then run the dashboard attached to it;
    after a detach, say how to see it again and how to stop it."""
    from tui_passenger.cores import SpawnedCore
    from tui_passenger.launch import detached_message, start_core

    try:
        process, problem = start_core(args, config, log_file)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        return fail(exc, 1)
    if problem is not None:
        return fail(problem, process.returncode or 1)
    logging.getLogger().addHandler(logging.NullHandler())
    core = SpawnedCore(socket, process, log_file)
    status = run(dashboard(core, keys))
    if core.detached:
        print(detached_message(f"-c {shlex.quote(config)}", process.pid, log_file))
    return status


def already_running(config: Config) -> str | None:
    """Why this config cannot start: an instance already answers on its admin socket (who,
    and what to do instead); None when none does."""
    from tui_passenger.admin.instance import running_instance
    from tui_passenger.admin.paths import admin_socket_path

    running = running_instance(admin_socket_path(config))
    return None if running is None else str(running.refusal())


def attach(args: argparse.Namespace) -> int:
    """Run the dashboard over a running instance's admin socket."""
    from tui_passenger.admin.cli import DEFAULT_CONFIG
    from tui_passenger.admin.paths import admin_socket_path
    from tui_passenger.config import ConfigError, load_config
    from tui_passenger.cores import AttachedCore

    keys: dict[str, str] = {}
    try:
        if hasattr(args, "admin_socket"):
            path: Path = args.admin_socket
            where = f"--admin-socket {shlex.quote(os.fspath(path))}"
        else:  # the instance's config also gives the dashboard its key bindings
            config_path = getattr(args, "config", DEFAULT_CONFIG)
            config = load_config(config_path)
            path, keys = admin_socket_path(config), dict(config.keys)
            where = f"-c {shlex.quote(os.fspath(config_path))}"
    except ConfigError as exc:
        return fail(exc, 2)
    if not path.exists():
        return fail(f"no tui-passenger instance answers on {path}; is it running with this "
                    "config?", 3)
    logging.getLogger().addHandler(logging.NullHandler())
    core = AttachedCore(path)
    status = run(dashboard(core, keys))
    if core.detached and core.owned:  # a dashboard's server, left running again
        from tui_passenger.launch import detached_message

        print(detached_message(where, core.pid, core.log_file))
    return status


async def dashboard(core: Any, keys: dict[str, str] | Any) -> int:
    """Run the dashboard over ``core``; SIGTERM quits it like the quit key does, SIGHUP
    reloads the embedded server's configuration, and detaches from any other."""
    from tui_passenger.tui.session import run_dashboard

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if core.embedded:  # SIGHUP to the instance reloads its configuration
        from tui_passenger.headless import reload_on_sighup

        reload_on_sighup(core.server)
        # ``ctl stop`` (the stop operation) quits the dashboard like the quit key.
        relay = loop.create_task(core.server.stop_requested.wait())
        relay.add_done_callback(lambda _: stop.set())
    detach = asyncio.Event()
    if core.detachable:  # the terminal hung up: leave the server running, as tmux does

        def hang_up() -> None:
            # At once: the dashboard may end (its terminal gone) before the detach key's
            # action runs, and then the server must not be stopped.
            core.detached = True
            detach.set()

        loop.add_signal_handler(signal.SIGHUP, hang_up)
    try:
        await run_dashboard(core, keymap=dict(keys), stop=stop, detach=detach)
    except ConnectionError as exc:
        return fail(exc, 3)
    except OSError as exc:
        return fail(exc, 1)
    return 0


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when it is installed (about twice the proxy throughput)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(main)
