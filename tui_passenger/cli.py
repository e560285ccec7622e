"""The ``tui-passenger`` command line.

``tui-passenger`` starts the dashboard with the core embedded; ``--headless`` runs the core
alone, logging to stderr; ``attach`` shows the dashboard of a running instance;
``status``, ``memory`` and ``ctl`` ask a running instance (see :mod:`.admin.cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from tui_passenger import __version__

log = logging.getLogger("tui_passenger")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for running tui-passenger."""
    parser = argparse.ArgumentParser(
        prog="tui-passenger",
        description="Serve Python web apps with direct or smart (preload + fork) spawning.",
        epilog="Also: tui-passenger attach | status [--json] | memory | ctl scale|kill|restart"
               "|spawn-method ... (see tui-passenger ctl --help).")
    parser.add_argument("-c", "--config", default="passenger.toml",
                        help="configuration file (default: ./passenger.toml)")
    parser.add_argument("--port", type=int, help="public port (overrides [server] port)")
    parser.add_argument("--address", help="public address (overrides [server] address)")
    parser.add_argument("--spawn-method", choices=("smart", "direct"),
                        help="spawn method for every app (overrides spawn_method)")
    parser.add_argument("--headless", action="store_true",
                        help="run without the dashboard, logging to stderr")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"))
    parser.add_argument("--log-file", type=Path,
                        help="with the dashboard: where the log goes (default: next to the "
                             "admin socket)")
    parser.add_argument("--version", action="version", version=f"tui-passenger {__version__}")
    return parser


def attach_parser() -> argparse.ArgumentParser:
    """``tui-passenger attach``: the dashboard over a running instance."""
    parser = argparse.ArgumentParser(prog="tui-passenger attach",
                                     description="Show the dashboard of a running instance; "
                                                 "quitting leaves it running.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--admin-socket", type=Path, help="the instance's admin socket")
    where.add_argument("-c", "--config", default="passenger.toml",
                       help="find the instance started with this config")
    return parser


def setup_logging(level: str, file: Path | None = None) -> None:
    """Log lines with a timestamp, to stderr or (under the dashboard) to a file."""
    handler: logging.Handler = (logging.FileHandler(file) if file is not None
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def main(argv: Sequence[str] | None = None) -> int:
    """Run tui-passenger; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from tui_passenger.admin.cli import COMMANDS

    if argv and argv[0] in COMMANDS:
        from tui_passenger.admin.cli import main as admin_main

        return admin_main(argv)
    if argv and argv[0] == "attach":
        return attach(argv[1:])
    from tui_passenger.config import ConfigError, apply_overrides, load_config

    args = build_parser().parse_args(argv)
    try:
        config = apply_overrides(load_config(args.config), port=args.port,
                                 address=args.address, spawn_method=args.spawn_method)
    except ConfigError as exc:
        print(f"tui-passenger: {exc}", file=sys.stderr)
        return 2
    if not args.headless and not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("tui-passenger: no terminal for the dashboard; running headless "
              "(use --headless to say so)", file=sys.stderr)
        args.headless = True
    if args.headless:
        setup_logging(args.log_level)
        from tui_passenger.headless import run_headless

        try:
            return run(run_headless(config))
        except KeyboardInterrupt:
            return 130
    from tui_passenger.admin.paths import admin_socket_path, private_directory
    from tui_passenger.cores import EmbeddedCore

    log_file = args.log_file or admin_socket_path(config).with_suffix(".log")
    try:
        if args.log_file is None:
            private_directory(log_file)
        if log_file.is_symlink():
            raise OSError(f"refusing to log to {log_file}: it is a symbolic link")
    except OSError as exc:
        print(f"tui-passenger: {exc}", file=sys.stderr)
        return 1
    setup_logging(args.log_level, log_file)
    return run(dashboard(EmbeddedCore(config), config.keys))


def attach(argv: Sequence[str]) -> int:
    """Run the dashboard over a running instance's admin socket."""
    from tui_passenger.admin.paths import admin_socket_path
    from tui_passenger.config import ConfigError, load_config
    from tui_passenger.cores import AttachedCore

    args = attach_parser().parse_args(argv)
    keys: dict[str, str] = {}
    try:
        if args.admin_socket:
            path = args.admin_socket
        else:
            config = load_config(args.config)
            path, keys = admin_socket_path(config), dict(config.keys)
    except ConfigError as exc:
        print(f"tui-passenger: {exc}", file=sys.stderr)
        return 2
    if not path.exists():
        print(f"tui-passenger: no tui-passenger instance answers on {path}; is it running "
              "with this config?", file=sys.stderr)
        return 3
    logging.getLogger().addHandler(logging.NullHandler())
    return run(dashboard(AttachedCore(path), keys))


async def dashboard(core: Any, keys: dict[str, str] | Any) -> int:
    """Run the dashboard over ``core``; SIGTERM quits it like the quit key does."""
    from tui_passenger.tui.app import run_dashboard

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await run_dashboard(core, keymap=dict(keys), stop=stop)
    except ConnectionError as exc:
        print(f"tui-passenger: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:
        print(f"tui-passenger: {exc}", file=sys.stderr)
        return 1
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
