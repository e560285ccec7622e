"""The ``tui-passenger`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from tui_passenger import __version__

log = logging.getLogger("tui_passenger")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for running tui-passenger."""
    parser = argparse.ArgumentParser(
        prog="tui-passenger",
        description="Serve Python web apps with direct or smart (preload + fork) spawning.",
        epilog="Also: tui-passenger status [--json] | memory | ctl scale|kill|restart|"
               "spawn-method ... (see tui-passenger ctl --help).")
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
    parser.add_argument("--version", action="version", version=f"tui-passenger {__version__}")
    return parser


def setup_logging(level: str) -> None:
    """Log lines to stderr with a timestamp."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run tui-passenger; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from tui_passenger.admin.cli import COMMANDS

    if argv and argv[0] in COMMANDS:
        from tui_passenger.admin.cli import main as admin_main

        return admin_main(argv)
    from tui_passenger.config import ConfigError, apply_overrides, load_config

    args = build_parser().parse_args(argv)
    try:
        config = apply_overrides(load_config(args.config), port=args.port,
                                 address=args.address, spawn_method=args.spawn_method)
    except ConfigError as exc:
        print(f"tui-passenger: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level)
    from tui_passenger.headless import run_headless

    try:
        return run(run_headless(config))
    except KeyboardInterrupt:
        return 130


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
