"""What an operator may ask of a running server, checked and carried out in one place.

Every front end goes through this module: the admin API (and through it ``tui-passenger
ctl`` and an attached dashboard) and the embedded dashboard. An operation either happens and
returns a :class:`Done` — the reply data exactly as the admin API sends it, and one sentence
for a person made from that data — or raises :class:`Refused` with a reason a person can act
on and a :class:`RefusalKind` that is also the HTTP status the admin API answers with.

The sentence is made from the reply data alone (:func:`message`), so a front end that only
has the admin API's JSON (the attach client, the CLI) says exactly what the embedded
dashboard says.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tui_passenger.config_model import ConfigError
from tui_passenger.inspect.stacks import read_stacks
from tui_passenger.reload import ReloadError

if TYPE_CHECKING:
    from tui_passenger.pool.group import Group
    from tui_passenger.server import Server

#: The reply data of an operation: JSON-serialisable, as the admin API sends it.
Reply = Mapping[str, Any]

SPAWN_METHODS = ("smart", "direct")

log = logging.getLogger("tui_passenger")


class Action(enum.Enum):
    """The operations, named as in ``tui-passenger ctl`` (and the admin API paths)."""

    SCALE = "scale"
    KILL = "kill"
    RESTART = "restart"
    SPAWN_METHOD = "spawn-method"
    REFORK = "refork"
    SAMPLING = "sampling"
    RELOAD = "reload"
    REOPEN_LOGS = "reopen-logs"
    STACK = "stack"
    STOP = "stop"


class RefusalKind(enum.IntEnum):
    """Why an operation was refused; the value is the admin API's HTTP status."""

    INVALID = 400  #: the request itself is wrong (a count below 0, an unknown method)
    FORBIDDEN = 403  #: the caller may not ask (another user on the admin socket)
    NOT_FOUND = 404  #: no such app or worker
    CONFLICT = 409  #: not possible in the instance's present state
    TIMEOUT = 504  #: a process did not answer in time


class Refused(Exception):
    """An operation that did not happen, with a reason a person can act on."""

    def __init__(self, kind: RefusalKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def reply_error(status: int, reply: object) -> Exception:
    """The error for an admin API answer with a 4xx/5xx ``status`` and JSON body ``reply``:
    :class:`Refused` for a refusal, RuntimeError for anything else (a server fault)."""
    error = reply.get("error") if isinstance(reply, dict) else None
    reason = error if isinstance(error, str) else f"HTTP {status}"
    try:
        return Refused(RefusalKind(status), reason)
    except ValueError:  # not a status the operations answer with
        return RuntimeError(reason)


def _scaled(reply: Reply) -> str:
    return f"{reply['app']}: keeping {reply['min_instances']} worker(s) warm"


def _killed(reply: Reply) -> str:
    return f"{reply['app']}: worker {reply['pid']} stopped ({reply['exit']})"


def _restarted(reply: Reply) -> str:
    return f"{reply['app']}: {reply['replaced']} worker(s) replaced, one at a time"


def _switched(reply: Reply) -> str:
    return (f"{reply['app']}: now {reply['spawn_method']} spawning, "
            f"{reply['replaced']} worker(s) replaced")


def _reforked(reply: Reply) -> str:
    return (f"{reply['app']}: worker {reply['mold']} is the mold of generation "
            f"{reply['generation']}; {reply['replaced']} worker(s) replaced from it")


def _sampling(reply: Reply) -> str:
    return "sampling paused" if reply["paused"] else "sampling resumed"


def _with_keys(changes: Mapping[str, list[str]]) -> str:
    return ", ".join(f"{app} ({', '.join(keys)})" for app, keys in changes.items())


def _reloaded(reply: Reply) -> str:
    parts = [f"{what} {', '.join(apps)}" for what, apps in (
        ("added", reply["added"]), ("removing", reply["removed"])) if apps]
    parts += [f"{what} {_with_keys(changes)}" for what, changes in (
        ("restarting", reply["restarted"]), ("updated", reply["updated"])) if changes]
    if reply["server"]:
        parts.append(f"[server] {', '.join(reply['server'])} applied")
    if reply["keys"] is not None:
        parts.append("[keys] applied")
    if reply["restart_needed"]:
        parts.append(f"[server] {', '.join(reply['restart_needed'])}: needs a restart of "
                     "tui-passenger to take effect")
    return f"reloaded {reply['config']}: {'; '.join(parts) or 'nothing changed'}"


def _reopened(reply: Reply) -> str:
    files = [f"{what} {where}" for what, where in (
        ("the log", reply["log_file"]), ("the access log", reply["access_log"])) if where]
    return f"reopened {' and '.join(files)}" if files else "no log file to reopen"


def _stacks(reply: Reply) -> str:
    note = "" if reply["whole"] else (" (the main thread did not finish the dump: it may be "
                                      "stuck in C code)")
    return (f"{reply['role']} {reply['pid']} of {reply['app']}: every thread, most recent "
            f"call first ({reply['source']}){note}\n{reply['stack']}")


def _stopping(reply: Reply) -> str:
    return (f"instance {reply['pid']} stopping: in-flight requests get up to "
            f"{reply['shutdown_timeout']:g} s")


_MESSAGES: dict[Action, Callable[[Reply], str]] = {
    Action.SCALE: _scaled, Action.KILL: _killed, Action.RESTART: _restarted,
    Action.SPAWN_METHOD: _switched, Action.REFORK: _reforked, Action.SAMPLING: _sampling,
    Action.RELOAD: _reloaded, Action.REOPEN_LOGS: _reopened, Action.STACK: _stacks,
    Action.STOP: _stopping,
}


def message(action: Action, reply: Reply) -> str:
    """What ``action`` did, for a person, from its reply data (the one place it is worded)."""
    return _MESSAGES[action](reply)


@dataclass(frozen=True, slots=True)
class Done:
    """An operation that happened: its reply data, as the admin API sends it."""

    action: Action
    reply: Reply

    @property
    def message(self) -> str:
        """What happened, in one sentence for a person."""
        return message(self.action, self.reply)


class Operations:
    """The operator operations on one :class:`~tui_passenger.server.Server`."""

    __slots__ = ("server",)

    def __init__(self, server: Server) -> None:
        self.server = server

    def group(self, app: str) -> Group:
        """The group serving ``app``; Refused (not found) naming the known apps."""
        groups = self.server.pool.groups
        group = groups.get(app)
        if group is None:
            known = ", ".join(sorted(groups))
            raise Refused(RefusalKind.NOT_FOUND, f"no app named {app!r} (apps: {known})")
        return group

    async def scale(self, app: str, count: object) -> Done:
        """Keep ``count`` workers of ``app`` warm: a whole number from 0 to the app's
        max_instances (else the pool's max_pool_size)."""
        group = self.group(app)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise Refused(RefusalKind.INVALID,
                          f"count must be a whole number ≥ 0, got {count!r}")
        limit = group.app.max_instances or self.server.pool.max_pool_size
        if count > limit:
            raise Refused(RefusalKind.INVALID, f"count {count} is above the limit of {limit} "
                                               "(max_instances / max_pool_size)")
        self._check_room(group, count)
        self.server.pool.scale(group, count)
        return Done(Action.SCALE, {"app": group.name, "min_instances": count})

    def _check_room(self, group: Group, count: int) -> None:
        """Refused (conflict) when the pool cannot hold ``count`` workers of ``group``:
        scaling down is always allowed; up, the new workers need free places or idle
        workers of other apps above their minimum (those the pool stops to make room)."""
        pool = self.server.pool
        wanted = count - group.live_count()
        room = pool.room_for(group)
        if wanted <= room:
            return
        used = ", ".join(f"{g.name} {g.footprint()}" for g in pool.groups.values()
                         if g.footprint())
        most = group.live_count() + room
        raise Refused(RefusalKind.CONFLICT,
                      f"{group.name}: cannot keep {count} worker(s) warm (at most {most} now): "
                      f"pool full: {pool.total()} of max_pool_size {pool.max_pool_size} "
                      f"in use ({used or 'nothing'}); lower another app or raise "
                      "max_pool_size")

    async def kill(self, pid: int, force: bool = False) -> Done:
        """Stop worker ``pid`` (drained first; at once with ``force``) and wait until it has
        exited. The pool replaces it if its app falls below the minimum."""
        pool = self.server.pool
        process = pool.find(pid)
        if process is None:
            raise Refused(RefusalKind.NOT_FOUND, f"pid {pid} is not a worker of this instance")
        pool.kill(process, force=force)
        status = await process.worker.exited
        return Done(Action.KILL, {"pid": pid, "app": process.group.name,
                                  "exit": status.describe()})

    async def stack(self, pid: int) -> Done:
        """The Python stack of every thread of worker (or preloader) ``pid``, read while it
        runs: Refused not found (no such process), invalid (a process that is not one of
        our workers or preloaders), timeout (it did not answer: stuck in C code, or its app
        took the stack signal)."""
        role, app, socket_dir = self._stack_target(pid)
        try:
            stacks = await read_stacks(pid, socket_dir)
        except ProcessLookupError:
            raise Refused(RefusalKind.NOT_FOUND, f"{role} {pid} has exited") from None
        if stacks is None:
            raise Refused(RefusalKind.TIMEOUT,
                          f"{role} {pid} did not answer the stack signal within 2 s (stuck "
                          "in C code, or its app handles SIGUSR2 itself); py-spy dump --pid "
                          f"{pid} can read it from outside")
        return Done(Action.STACK, {"pid": pid, "app": app, "role": role,
                                   "source": stacks.source, "whole": stacks.whole,
                                   "stack": stacks.text})

    def _stack_target(self, pid: int) -> tuple[str, str, str]:
        """(role, app, socket directory) of a worker or preloader; Refused otherwise."""
        pool = self.server.pool
        process = pool.find(pid)
        if process is not None and process.worker.socket_path:
            return ("worker", process.group.name,
                    os.path.dirname(process.worker.socket_path))
        for group in pool.groups.values():
            for preloader in group.spawner.preloaders():
                if preloader.pid == pid:
                    return preloader.role, group.name, str(group.spawner.socket_dir)
        if pid == os.getpid():
            raise Refused(RefusalKind.INVALID, f"pid {pid} is the manager, not a worker "
                                               "(its stacks: py-spy dump --pid)")
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise Refused(RefusalKind.NOT_FOUND, f"no process {pid}") from None
        except PermissionError:
            pass  # it exists: another user's
        raise Refused(RefusalKind.INVALID,
                      f"pid {pid} is not a worker or preloader of this instance")

    async def restart(self, app: str) -> Done:
        """Load ``app`` afresh (new code) and replace every worker from it, one at a time;
        done when all are replaced. Refused (conflict) with the spawn error if the new code
        cannot be loaded: the running workers keep serving."""
        group = self.group(app)
        try:
            replaced = await self.server.pool.live.restart_now(group)
        except ValueError as exc:
            raise Refused(RefusalKind.CONFLICT, str(exc)) from None
        return Done(Action.RESTART, {"app": group.name, "replaced": replaced})

    async def set_spawn_method(self, app: str, method: object) -> Done:
        """Spawn ``app``'s workers ``smart`` or ``direct`` from now on, replacing the running
        ones one at a time; done when all are replaced."""
        group = self.group(app)
        if not isinstance(method, str) or method not in SPAWN_METHODS:
            raise Refused(RefusalKind.INVALID,
                          f'method must be "smart" or "direct", got {method!r}')
        replaced = await self.server.pool.set_spawn_method(group, method)
        return Done(Action.SPAWN_METHOD, {"app": group.name, "spawn_method": method,
                                          "replaced": replaced})

    async def refork(self, app: str) -> Done:
        """Make a warmed worker of ``app`` the preloader of a new generation and replace the
        others from it (smart spawning only); Refused (conflict) if it did not happen."""
        group = self.group(app)
        try:
            replaced = await self.server.pool.refork_now(group)
        except ValueError as exc:
            raise Refused(RefusalKind.CONFLICT, str(exc)) from None
        spawner = group.spawner
        if spawner.preloader is None or spawner.preloader.pid is None:
            # the mold died, or the method changed, the moment the refork was done
            raise Refused(RefusalKind.CONFLICT, f"{group.name}: the new mold is gone already")
        return Done(Action.REFORK, {"app": group.name, "generation": spawner.generation,
                                    "mold": spawner.preloader.pid, "replaced": replaced})

    async def pause_sampling(self, paused: object) -> Done:
        """Stop (``paused`` true) or resume reading /proc for memory, fds and CPU."""
        if not isinstance(paused, bool):
            raise Refused(RefusalKind.INVALID, "paused must be true or false")
        sampler = self.server.sampler
        if sampler is None:
            raise Refused(RefusalKind.CONFLICT, "sampling is disabled in this instance")
        if paused:
            sampler.pause()
        else:
            sampler.resume()
        return Done(Action.SAMPLING, {"paused": paused})

    async def reload(self) -> Done:
        """Read the configuration file again and apply it (Server.reload). A file with an
        error changes nothing: Refused (invalid) with the error, which also goes to the log
        and the event log; Refused (conflict) when there is no file to read."""
        server = self.server
        try:
            plan = server.reload()
        except (ConfigError, ReloadError) as exc:
            reason = f"configuration not reloaded, nothing changed: {exc}"
            log.error("%s", reason)
            server.events.add("reload", reason, level="error")
            kind = RefusalKind.INVALID if isinstance(exc, ConfigError) else RefusalKind.CONFLICT
            raise Refused(kind, reason) from None
        done = Done(Action.RELOAD, plan.reply())
        log.info("%s", done.message)
        server.events.add("reload", done.message,
                          level="warning" if plan.restart_needed else "info")
        return done

    async def reopen_logs(self) -> Done:
        """Open the log files again by their names, as after logrotate moved them away
        (SIGUSR1 does the same): the main log's file (``--log-file``), then the access
        log's (what was buffered goes to the old file first)."""
        done = Done(Action.REOPEN_LOGS, self.server.reopen_logs())
        log.info("%s", done.message)
        return done

    async def stop(self) -> Done:
        """Shut the instance down gracefully, as SIGTERM does: it stops accepting, lets
        in-flight requests finish (up to shutdown_timeout) and stops every process. Answers
        at once; the instance exits afterwards. Refused (conflict) if it is stopping already."""
        server = self.server
        if server.stopping or server.stop_requested.is_set():
            raise Refused(RefusalKind.CONFLICT, "the instance is shutting down already")
        server.request_stop()
        return Done(Action.STOP, {"pid": os.getpid(),
                                  "shutdown_timeout": server.config.server.shutdown_timeout})
