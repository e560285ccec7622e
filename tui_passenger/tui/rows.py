"""The process tree as flat rows, built from one snapshot (plain data, no Textual).

Row keys are stable across snapshots: ``app:NAME`` for an app, ``pid:123`` for a
preloader or a worker. Rows come app by app: the app, its preloader, the workers it
forked, then the app's other workers (direct, or forked by a preloader that has gone).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tui_passenger.tui import format as fmt

#: Sort orders the ``s`` key cycles through (within each app).
SORTS = ("tree", "cpu", "pss", "processed")

#: Column keys after the name column, in display order.
COLUMNS = ("state", "sessions", "processed", "age", "spawn", "cpu", "pss", "private")


@dataclass(frozen=True)
class TreeRow:
    """One row of the process table."""

    key: str
    kind: str  # "app" | "preloader" | "worker"
    app: str
    pid: int | None
    depth: int
    label: str
    values: tuple[str, ...]  # one per COLUMNS
    warning: bool = False
    dim: bool = False


@dataclass(frozen=True)
class Selection:
    """What a row key points at in a snapshot."""

    kind: str
    app: dict[str, Any]
    process: dict[str, Any] | None


def app_key(name: str) -> str:
    """The row key of an app."""
    return f"app:{name}"


def pid_key(pid: int) -> str:
    """The row key of a preloader or a worker."""
    return f"pid:{pid}"


def _memory(process: dict[str, Any], key: str) -> int | None:
    memory = process.get("memory")
    return None if not memory else memory.get(key)


def _sort_value(process: dict[str, Any], sort: str) -> float:
    if sort == "cpu":
        return process.get("cpu") or 0.0
    if sort == "pss":
        return _memory(process, "pss") or 0
    if sort == "processed":
        return process.get("processed") or 0
    return 0.0


def _ordered(processes: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    if sort == "tree":
        return sorted(processes, key=lambda p: (p.get("started") or 0, p["pid"]))
    return sorted(processes, key=lambda p: (-_sort_value(p, sort), p["pid"]))


def _process_row(process: dict[str, Any], app: str, kind: str, depth: int) -> TreeRow:
    pid = process["pid"]
    warning = bool(process.get("warnings"))
    state = process.get("state", "")
    generation = process.get("generation") or 0
    if kind == "preloader":
        sessions = processed = ""
        spawn = f"gen {generation}" if generation else ""
        label = f"{pid} {'mold' if process.get('mold') else 'pre'}"
    else:
        sessions = f"{process.get('sessions', 0)}/{process.get('concurrency', 0)}"
        processed = fmt.count(process.get("processed"))
        # The generation says more than "smart" once a refork happened.
        spawn = f"gen {generation}" if generation else process.get("spawn_method", "")
        label = str(pid)
    values = (state, sessions, processed, fmt.duration(process.get("uptime")), spawn,
              fmt.percent(process.get("cpu")), fmt.size(_memory(process, "pss")),
              fmt.size(_memory(process, "private_dirty")))
    return TreeRow(pid_key(pid), kind, app, pid, depth, label, values, warning,
                   dim=state in ("draining", "stopping", "molding"))


def _app_row(app: dict[str, Any]) -> TreeRow:
    processes = app.get("processes", [])
    up = len(processes)
    state = f"{up} up" + (f" +{app['spawning']}" if app.get("spawning") else "")
    sessions = (f"{sum(p.get('sessions', 0) for p in processes)}/"
                f"{sum(p.get('concurrency', 0) for p in processes)}")
    cpus = [p["cpu"] for p in processes if p.get("cpu") is not None]
    preloader = app.get("preloader")
    if preloader and preloader.get("cpu") is not None:
        cpus.append(preloader["cpu"])
    memory = app.get("memory") or {}
    if not up and not preloader:
        sessions = fmt.NONE
        memory = {}
    values = (state, sessions, fmt.count(app.get("requests")), "",
              app.get("spawn_method", ""), fmt.percent(sum(cpus)) if cpus else fmt.NONE,
              fmt.size(memory.get("pss")), fmt.size(memory.get("private_dirty")))
    warning = bool(app.get("last_spawn_error")) or any(p.get("warnings") for p in processes)
    return TreeRow(app_key(app["name"]), "app", app["name"], None, 0, app["name"], values,
                   warning)


def _matches(text: str, needle: str) -> bool:
    return needle in text.lower()


def build_rows(snapshot: dict[str, Any], sort: str = "tree", needle: str = "") -> list[TreeRow]:
    """The rows to show, in order; ``needle`` keeps apps/pids containing it (and their app)."""
    needle = needle.strip().lower()
    rows: list[TreeRow] = []
    for app in snapshot.get("apps", []):
        name = app["name"]
        app_hit = not needle or _matches(name, needle)
        children: list[TreeRow] = []
        preloader = app.get("preloader")
        processes = app.get("processes", [])
        forked = []
        if preloader:
            forked = [p for p in processes if p.get("ppid") == preloader["pid"]]
            children.append(_process_row(preloader, name, "preloader", 1))
            children += [_process_row(p, name, "worker", 2) for p in _ordered(forked, sort)]
        others = [p for p in processes if p not in forked]
        children += [_process_row(p, name, "worker", 1) for p in _ordered(others, sort)]
        if not app_hit:
            children = [c for c in children if _matches(str(c.pid), needle)]
            if not children:
                continue
        rows.append(_app_row(app))
        rows += children
    return rows


def tree_labels(rows: Iterable[TreeRow]) -> dict[str, str]:
    """The first-column text of each row: the label indented with tree guides."""
    rows = list(rows)
    labels: dict[str, str] = {}
    for index, row in enumerate(rows):
        if row.kind == "app":
            labels[row.key] = f"▾ {row.label}"
            continue
        # Last among its siblings when no later row of the same app sits at the same depth
        # before the app's rows end or the depth drops below it.
        last = True
        for later in rows[index + 1:]:
            if later.app != row.app or later.depth < row.depth:
                break
            if later.depth == row.depth:
                last = False
                break
        guide = "└ " if last else "├ "
        prefix = "  " if row.depth == 1 else "  │ " if _has_next_sibling(rows, index) else "    "
        labels[row.key] = prefix + guide + row.label
    return labels


def _has_next_sibling(rows: list[TreeRow], index: int) -> bool:
    """Whether a depth-1 row after this depth-2 row's parent continues the app's tree."""
    row = rows[index]
    for later in rows[index + 1:]:
        if later.app != row.app:
            return False
        if later.depth == 1:
            return True
    return False


def select(snapshot: dict[str, Any], key: str | None) -> Selection | None:
    """The app and process a row key points at, or None if it is gone."""
    if key is None:
        return None
    for app in snapshot.get("apps", []):
        if key == app_key(app["name"]):
            return Selection("app", app, None)
        preloader = app.get("preloader")
        if preloader and key == pid_key(preloader["pid"]):
            return Selection("preloader", app, preloader)
        for process in app.get("processes", []):
            if key == pid_key(process["pid"]):
                return Selection("worker", app, process)
    return None
