"""Restarts asked for with files, as Passenger does.

- ``ROOT/tmp/restart.txt``: created, or its mtime changed (``touch``) → one rolling restart.
- ``ROOT/tmp/always_restart.txt``: while it exists, every request gets a worker of a freshly
  loaded app (development; see :meth:`LiveOperations.fresh_load`).
- ``watch = true`` (development): a change to the app's Python source → one rolling restart.

The two files are looked at by a timer, every ``restart_check_interval`` seconds (0 = never),
off the request path: the timer sets ``Group.always_restart``, the one attribute a request
reads. The source is watched with watchfiles (inotify on Linux), which groups the changes of
one save of several files into one batch, so that makes one restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tui_passenger.pool.group import Group

log = logging.getLogger("tui_passenger.pool")

#: ``restart(group, reason)``: the pool's rolling restart.
RestartFn = Callable[["Group", str], object]
#: Runs a coroutine as a task the pool cancels when it closes.
TrackFn = Callable[[Coroutine[Any, Any, None]], object]

#: watchfiles: a batch of changes is handed over once nothing changed for this long (ms),
#: so that an editor saving several files (or a git checkout) makes one restart.
WATCH_QUIET_MS = 300
#: ... and at the latest after this long (ms) of changes going on.
WATCH_DEBOUNCE_MS = 1600
#: How often (ms) the watcher's thread comes back to see whether it should stop: what
#: stopping the server may wait for it.
WATCH_STOP_MS = 500
#: Directory names never watched (besides watchfiles' own list: .git, __pycache__, .venv…).
IGNORED_DIRS = ("venv", "env", "virtualenv", "site-packages", "node_modules", "tmp", "log")


def watch_restart_triggers(groups: Iterable[Group], restart: RestartFn,
                           track: TrackFn) -> None:
    """Start the file triggers of every app, as tasks run by ``track``."""
    for group in groups:
        if group.app.restart_check_interval > 0:
            track(RestartFiles(group, restart).run())
        if group.app.watch:
            track(watch_source(group, restart))


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class RestartFiles:
    """One app's ``tmp/restart.txt`` and ``tmp/always_restart.txt``."""

    def __init__(self, group: Group, restart: RestartFn) -> None:
        tmp = group.app.root / "tmp"
        self.group = group
        self.restart = restart
        self.restart_txt = tmp / "restart.txt"
        self.always_txt = tmp / "always_restart.txt"
        #: The restart.txt there is at start asks for nothing; a later touch does.
        self.mtime = _mtime(self.restart_txt)

    def look(self) -> tuple[int | None, bool]:
        """restart.txt's mtime (None: no such file), and whether always_restart.txt exists."""
        return _mtime(self.restart_txt), os.path.exists(self.always_txt)

    def apply(self, mtime: int | None, always: bool) -> None:
        """Act on what :meth:`look` saw."""
        if mtime != self.mtime:
            self.mtime = mtime
            if mtime is not None:  # a removed restart.txt asks for nothing
                self.restart(self.group, "restart.txt touched")
        if always != self.group.always_restart:
            self.group.always_restart = always
            log.info("%s: %s exists%s", self.group.name, self.always_txt,
                     ": a freshly loaded worker for every request" if always else " no more")

    async def run(self) -> None:
        """Look every restart_check_interval seconds (the stat in a thread: a slow file
        system does not hold up the proxy)."""
        interval = self.group.app.restart_check_interval
        while True:
            await asyncio.sleep(interval)
            self.apply(*await asyncio.to_thread(self.look))


def source_filter(root: Path) -> Callable[[Any, str], bool]:
    """What ``watch`` restarts for: .py files under ``root``, outside ``tmp/``, caches,
    version control and virtualenvs (any directory holding a pyvenv.cfg)."""
    from watchfiles import PythonFilter  # only apps with watch = true need it

    venvs = [entry.path for entry in os.scandir(root)
             if entry.is_dir() and os.path.exists(os.path.join(entry.path, "pyvenv.cfg"))]
    watched = PythonFilter(ignore_paths=[root / "tmp", *venvs])
    ignored = frozenset(IGNORED_DIRS)

    def wanted(change: Any, path: str) -> bool:
        parts = Path(os.path.relpath(path, root)).parts
        return not ignored.intersection(parts[:-1]) and watched(change, path)

    return wanted


async def watch_source(group: Group, restart: RestartFn) -> None:
    """Restart ``group``'s app when its Python source changes (until cancelled)."""
    from watchfiles import awatch

    root = group.app.root
    async for changes in awatch(root, watch_filter=source_filter(root),
                                debounce=WATCH_DEBOUNCE_MS, step=WATCH_QUIET_MS,
                                rust_timeout=WATCH_STOP_MS):
        names = sorted({os.path.relpath(path, root) for _change, path in changes})
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        restart(group, f"source changed: {shown}")
