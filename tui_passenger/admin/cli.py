"""``tui-passenger status | memory | ctl ...``: ask a running instance over its admin socket.

:func:`add_commands` puts these commands on the ``tui-passenger`` parser (see
:mod:`tui_passenger.cli`); :func:`run_command` runs one. ``ctl`` is a thin adapter: an
action's arguments become an admin API request, its reply the operations layer's
:class:`~tui_passenger.operations.Done`, whose message is what the dashboard says too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tui_passenger.admin.client import AdminClient, AdminUnavailable
from tui_passenger.admin.report import memory_text, status_text
from tui_passenger.cli import fail
from tui_passenger.operations import SPAWN_METHODS, Action, Refused

#: ``ctl`` actions that take as long as they take (one worker at a time): no timeout.
ROLLING = (Action.RESTART, Action.SPAWN_METHOD, Action.REFORK)
DEFAULT_CONFIG = "passenger.toml"


def where_options() -> argparse.ArgumentParser:
    """``-c/--config`` and ``--admin-socket``, as a parent parser for every level of the
    command line, so that they are accepted before and after a subcommand.

    Their defaults are SUPPRESS: a level where they are not given leaves what an earlier
    level set (argparse would otherwise overwrite it with the default).
    """
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_mutually_exclusive_group()
    group.add_argument("--admin-socket", type=Path, default=argparse.SUPPRESS,
                       help="the instance's admin socket")
    group.add_argument("-c", "--config", default=argparse.SUPPRESS,
                       help=f"configuration file (default: ./{DEFAULT_CONFIG}); the admin "
                            "commands find the instance started with it")
    return where


def add_ctl_actions(ctl: argparse.ArgumentParser, where: argparse.ArgumentParser) -> None:
    """The ``ctl`` actions; each names the request body fields it sends (``fields``)."""
    actions = ctl.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: Action, help: str, *fields: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name.value, parents=[where], help=help, description=help)
        parser.set_defaults(fields=fields)
        return parser

    scale = action(Action.SCALE, "keep COUNT workers of APP warm", "count")
    scale.add_argument("app", metavar="APP")
    scale.add_argument("count", metavar="COUNT", type=int)
    kill = action(Action.KILL, "stop worker PID (the pool replaces it if needed)", "force")
    kill.add_argument("pid", metavar="PID", type=int)
    kill.add_argument("--force", action="store_true", help="SIGKILL instead of a drain")
    action(Action.RESTART, "rolling restart of APP's workers").add_argument("app", metavar="APP")
    method = action(Action.SPAWN_METHOD, "switch APP to smart or direct spawning", "method")
    method.add_argument("app", metavar="APP")
    method.add_argument("method", metavar="METHOD", choices=SPAWN_METHODS,
                        help=" or ".join(SPAWN_METHODS))
    action(Action.REFORK, "promote a warmed worker of APP to preloader and replace the "
                          "others from it (smart only)").add_argument("app", metavar="APP")
    action(Action.STACK, "show the Python stack of every thread of worker (or preloader) PID, "
                         "without stopping it").add_argument("pid", metavar="PID", type=int)
    action(Action.RELOAD, "read the configuration file again: new apps start, removed ones "
                          "stop, changed ones restart (rolling) or update in place")
    action(Action.REOPEN_LOGS, "open the log files again by their names, after logrotate "
                               "moved them (SIGUSR1 does the same)")
    action(Action.STOP, "shut the instance down gracefully, as SIGTERM does")


def add_commands(commands: Any, where: argparse.ArgumentParser) -> list[str]:
    """Add ``status``, ``memory`` and ``ctl`` to ``commands`` (a subparsers action);
    returns the ``ctl`` action names."""
    status = commands.add_parser("status", parents=[where], help="apps, processes, queues")
    status.add_argument("--json", action="store_true", help="the full snapshot as JSON")
    commands.add_parser("memory", parents=[where], help="memory per process, saving vs direct")
    names = [a.value for a in Action if a is not Action.SAMPLING]
    ctl = commands.add_parser("ctl", parents=[where], help=f"change a running instance: "
                              f"{', '.join(names)}", description="Change a running instance.")
    add_ctl_actions(ctl, where)
    return names


def admin_socket(args: argparse.Namespace) -> Path:
    """The admin socket the command line names: ``--admin-socket``, else the one of the
    instance started with ``-c`` (ConfigError if that config does not load)."""
    path: Path | None = getattr(args, "admin_socket", None)
    if path is not None:
        return path
    from tui_passenger.admin.paths import admin_socket_path
    from tui_passenger.config import load_config

    return admin_socket_path(load_config(getattr(args, "config", DEFAULT_CONFIG)))


def run_command(args: argparse.Namespace) -> int:
    """Run one admin command; returns the exit status."""
    from tui_passenger.config import ConfigError

    try:
        slow = args.command == "ctl" and Action(args.action) in ROLLING
        client = AdminClient(admin_socket(args), timeout=None if slow else 120.0)
        if args.command == "status":
            state = client.json("GET", "/status?fresh=1")
            print(json.dumps(state, indent=2) if args.json else status_text(state), end="")
            if args.json:
                print()
        elif args.command == "memory":
            print(memory_text(client.json("GET", "/status?fresh=1")), end="")
        else:
            print(ctl(client, args))
    except ConfigError as exc:
        return fail(exc, 2)
    except AdminUnavailable as exc:
        return fail(exc, 3)
    except (Refused, RuntimeError) as exc:
        return fail(f"{args.command} failed: {exc}", 1)
    return 0


def ctl(client: AdminClient, args: argparse.Namespace) -> str:
    """Perform one ``ctl`` action; the message for the operator. Refused if refused."""
    action = Action(args.action)
    target = args.pid if action in (Action.KILL, Action.STACK) else getattr(args, "app", None)
    body = {field: getattr(args, field) for field in args.fields} or None
    return client.act(action, target, body).message
