"""The process tree as flat rows, built from one typed snapshot (no Textual).

Row keys are stable across snapshots: ``app:NAME`` for an app, ``pid:123`` for a
preloader or a worker. Rows come app by app: the app, its preloader, the workers it
forked, then the app's other workers (direct, or forked by a preloader that has gone).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from tui_passenger.snapshot import (
    AppStatus,
    MemoryUsage,
    PreloaderStatus,
    ProcessStatus,
    RequestStatus,
    Snapshot,
)
from tui_passenger.tui import format as fmt

#: Sort orders the ``s`` key cycles through (within each app).
SORTS = ("tree", "cpu", "pss", "processed")

#: Column keys after the name column, in display order ("request": shown where the table
#: has the width for it).
COLUMNS = ("state", "sessions", "processed", "age", "spawn", "cpu", "pss", "private",
           "request")
#: A request running this long shows its age in the state column.
SHOW_AGE_AFTER = 1.0
#: A request is long (highlighted) past this many seconds, or half of max_request_time.
LONG_REQUEST = 5.0


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
    #: Its oldest request in flight is long (see long_request()).
    slow: bool = False
    #: The label where the name column is wide enough ("" = the label).
    wide_label: str = ""
    #: An app row whose processes are hidden (tui.folding).
    folded: bool = False


@dataclass(frozen=True)
class Selection:
    """What a row key points at in a snapshot: an app, or one of its processes."""

    kind: str  # "app" | "preloader" | "worker"
    app: AppStatus
    process: ProcessStatus | PreloaderStatus | None


def app_key(name: str) -> str:
    """The row key of an app."""
    return f"app:{name}"


def pid_key(pid: int) -> str:
    """The row key of a preloader or a worker."""
    return f"pid:{pid}"


def _pss(memory: MemoryUsage | None) -> str:
    return fmt.size(None if memory is None else memory.pss)


def _private(memory: MemoryUsage | None) -> str:
    return fmt.size(None if memory is None else memory.private_dirty)


def _sort_value(process: ProcessStatus, sort: str) -> float:
    if sort == "cpu":
        return process.cpu or 0.0
    if sort == "pss":
        return process.memory.pss if process.memory is not None else 0
    if sort == "processed":
        return process.processed
    return 0.0


def _ordered(processes: Iterable[ProcessStatus], sort: str) -> list[ProcessStatus]:
    if sort == "tree":
        return sorted(processes, key=lambda p: (p.started, p.pid))
    return sorted(processes, key=lambda p: (-_sort_value(p, sort), p.pid))


def long_request(age: float, max_request_time: float) -> bool:
    """Whether a request running for ``age`` seconds is long: past LONG_REQUEST, or past
    half of the app's max_request_time when that is shorter."""
    limit = min(LONG_REQUEST, max_request_time / 2) if max_request_time else LONG_REQUEST
    return age >= limit


def _preloader_row(preloader: PreloaderStatus, app: AppStatus) -> TreeRow:
    generation = preloader.generation
    role = "mold" if preloader.mold else "pre"
    row = _row(preloader, app, "preloader", 1, f"{preloader.pid} {role}", "", "",
               f"gen {generation}" if generation else "")
    if preloader.mold:
        return row
    return replace(row, wide_label=f"{preloader.pid} preloader")


def _worker_row(process: ProcessStatus, app: AppStatus, depth: int) -> TreeRow:
    # The generation says more than "smart" once a refork happened.
    spawn = f"gen {process.generation}" if process.generation else process.spawn_method
    sessions = f"{process.sessions}/{process.concurrency}"
    if process.websockets:  # open WebSockets hold no session: shown beside them
        sessions += f" +{process.websockets}ws"
    return _row(process, app, "worker", depth, str(process.pid), sessions,
                fmt.count(process.processed), spawn, process.requests)


def _row(process: ProcessStatus | PreloaderStatus, app: AppStatus, kind: str, depth: int,
         label: str, sessions: str, processed: str, spawn: str,
         requests: tuple[RequestStatus, ...] = ()) -> TreeRow:
    state = process.state
    request, slow = "", False
    if requests:  # the oldest: what the worker is stuck on, if anything
        oldest = requests[0]
        request = f"{fmt.duration(oldest.age)} {oldest.method} {oldest.path}"
        if oldest.age >= SHOW_AGE_AFTER:
            state = f"{state} {fmt.short_duration(oldest.age)}"
        slow = long_request(oldest.age, app.max_request_time)
    values = (state, sessions, processed, fmt.duration(process.uptime), spawn,
              fmt.percent(process.cpu), _pss(process.memory), _private(process.memory),
              request)
    return TreeRow(pid_key(process.pid), kind, app.name, process.pid, depth, label, values,
                   bool(process.warnings), dim=process.state in ("draining", "stopping",
                                                                 "molding"), slow=slow)


def _app_row(app: AppStatus) -> TreeRow:
    processes = app.processes
    preloader = app.preloader
    up = len(processes)
    state = f"{up} up" + (f" +{app.spawning}" if app.spawning else "")
    sessions = (f"{sum(p.sessions for p in processes)}/"
                f"{sum(p.concurrency for p in processes)}")
    if app.websockets:
        sessions += f" +{app.websockets}ws"
    cpus = [p.cpu for p in processes if p.cpu is not None]
    if preloader is not None and preloader.cpu is not None:
        cpus.append(preloader.cpu)
    memory: MemoryUsage | None = app.memory
    if not up and preloader is None:
        sessions = fmt.NONE
        memory = None
    values = (state, sessions, fmt.count(app.requests), "", app.spawn_method,
              fmt.percent(sum(cpus)) if cpus else fmt.NONE, _pss(memory), _private(memory), "")
    warning = app.last_spawn_error is not None or any(p.warnings for p in processes)
    return TreeRow(app_key(app.name), "app", app.name, None, 0, app.name, values, warning)


def _matches(text: str, needle: str) -> bool:
    return needle in text.lower()


def build_rows(snapshot: Snapshot | None, sort: str = "tree",
               needle: str = "") -> list[TreeRow]:
    """The rows to show, in order; ``needle`` keeps apps/pids containing it (and their app)."""
    if snapshot is None:
        return []
    needle = needle.strip().lower()
    rows: list[TreeRow] = []
    for app in snapshot.apps:
        name = app.name
        app_hit = not needle or _matches(name, needle)
        children: list[TreeRow] = []
        preloader = app.preloader
        if preloader is not None:
            forked = [p for p in app.processes if p.ppid == preloader.pid]
            children.append(_preloader_row(preloader, app))
            children += [_worker_row(p, app, 2) for p in _ordered(forked, sort)]
        parent = preloader.pid if preloader is not None else None
        others = [p for p in app.processes if p.ppid != parent]
        children += [_worker_row(p, app, 1) for p in _ordered(others, sort)]
        if not app_hit:
            children = [c for c in children if _matches(str(c.pid), needle)]
            if not children:
                continue
        rows.append(_app_row(app))
        rows += children
    return rows


def tree_labels(rows: Iterable[TreeRow], width: int = 0) -> dict[str, str]:
    """The first-column text of each row: the label indented with tree guides (a row's
    wide label where it fits in ``width`` with a warning sign)."""
    rows = list(rows)
    labels: dict[str, str] = {}
    for index, row in enumerate(rows):
        if row.kind == "app":
            labels[row.key] = f"{'▸' if row.folded else '▾'} {row.label}"
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
        wide = prefix + guide + row.wide_label
        fits = row.wide_label and len(wide) + (2 if row.warning else 0) <= width
        labels[row.key] = wide if fits else prefix + guide + row.label
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


def select(snapshot: Snapshot | None, key: str | None) -> Selection | None:
    """The app and process a row key points at, or None if it is gone."""
    if key is None or snapshot is None:
        return None
    for app in snapshot.apps:
        if key == app_key(app.name):
            return Selection("app", app, None)
        preloader = app.preloader
        if preloader is not None and key == pid_key(preloader.pid):
            return Selection("preloader", app, preloader)
        for process in app.processes:
            if key == pid_key(process.pid):
                return Selection("worker", app, process)
    return None
