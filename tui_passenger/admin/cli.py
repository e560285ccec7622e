"""``tui-passenger status | memory | ctl ...``: ask a running instance over its admin socket."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tui_passenger.admin.client import AdminClient, AdminUnavailable
from tui_passenger.admin.report import memory_text, reforked_text, status_text

COMMANDS = ("status", "memory", "ctl")


def build_parser() -> argparse.ArgumentParser:
    """The parser for the admin commands."""
    parser = argparse.ArgumentParser(prog="tui-passenger")
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_mutually_exclusive_group()
    group.add_argument("--admin-socket", type=Path, help="the instance's admin socket")
    group.add_argument("-c", "--config", default="passenger.toml",
                       help="find the instance started with this config (default: "
                            "./passenger.toml)")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", parents=[where], help="apps, processes, queues")
    status.add_argument("--json", action="store_true", help="the full snapshot as JSON")
    commands.add_parser("memory", parents=[where], help="memory per process, saving vs direct")
    ctl = commands.add_parser("ctl", parents=[where], help="change a running instance")
    actions = ctl.add_subparsers(dest="action", required=True)
    scale = actions.add_parser("scale", help="keep N workers of APP warm")
    scale.add_argument("app")
    scale.add_argument("count", type=int)
    kill = actions.add_parser("kill", help="stop one worker (the pool replaces it if needed)")
    kill.add_argument("pid", type=int)
    kill.add_argument("--force", action="store_true", help="SIGKILL instead of a drain")
    restart = actions.add_parser("restart", help="rolling restart of APP's workers")
    restart.add_argument("app")
    method = actions.add_parser("spawn-method", help="switch APP to smart or direct spawning")
    method.add_argument("app")
    method.add_argument("method", choices=("smart", "direct"))
    refork = actions.add_parser("refork", help="promote a warmed worker of APP to preloader "
                                               "and replace the others from it (smart only)")
    refork.add_argument("app")
    return parser


def _socket(args: argparse.Namespace) -> Path:
    if args.admin_socket:
        return args.admin_socket
    from tui_passenger.admin.paths import admin_socket_path
    from tui_passenger.config import load_config

    return admin_socket_path(load_config(args.config))


def main(argv: Sequence[str]) -> int:
    """Run one admin command; returns the exit status."""
    from tui_passenger.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        # Rolling operations take as long as they take (one worker at a time): no timeout.
        slow = args.command == "ctl" and args.action in ("restart", "spawn-method", "refork")
        client = AdminClient(_socket(args), timeout=None if slow else 120.0)
        if args.command == "status":
            state = client.json("GET", "/status?fresh=1")
            print(json.dumps(state, indent=2) if args.json else status_text(state), end="")
            if args.json:
                print()
        elif args.command == "memory":
            print(memory_text(client.json("GET", "/status?fresh=1")), end="")
        else:
            print(_ctl(client, args))
    except ConfigError as exc:
        print(f"tui-passenger: {exc}", file=sys.stderr)
        return 2
    except AdminUnavailable as exc:
        print(f"tui-passenger: {exc}", file=sys.stderr)
        return 3
    except RuntimeError as exc:
        print(f"tui-passenger: {args.command} failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _ctl(client: AdminClient, args: argparse.Namespace) -> str:
    if args.action == "scale":
        reply = client.json("POST", f"/apps/{args.app}/scale", {"count": args.count})
        return f"{reply['app']}: keeping {reply['min_instances']} worker(s) warm"
    if args.action == "kill":
        reply = client.json("POST", f"/processes/{args.pid}/kill", {"force": args.force})
        return f"{reply['app']}: worker {reply['pid']} stopped ({reply['exit']})"
    if args.action == "restart":
        reply = client.json("POST", f"/apps/{args.app}/restart")
        return f"{reply['app']}: {reply['replaced']} worker(s) replaced, one at a time"
    if args.action == "refork":
        reply = client.json("POST", f"/apps/{args.app}/refork")
        return reforked_text(reply["app"], reply["generation"], reply["mold"], reply["replaced"])
    reply = client.json("POST", f"/apps/{args.app}/spawn-method", {"method": args.method})
    return (f"{reply['app']}: now {reply['spawn_method']} spawning, "
            f"{reply['replaced']} worker(s) replaced")
