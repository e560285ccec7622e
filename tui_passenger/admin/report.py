"""Text reports for ``tui-passenger status`` and ``tui-passenger memory``, from the snapshot.

Memory is shown in MiB (2^20 bytes), as everywhere else (the dashboard, ``memory_limit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tui_passenger.snapshot import MEMORY_KEYS, MemoryUsage, Snapshot


def size(value: int | None) -> str:
    """Bytes as MiB with one decimal ("-" when unknown)."""
    return "-" if value is None else f"{value / (1 << 20):.1f} MiB"


def _typed(state: Snapshot | Mapping[str, Any]) -> Snapshot:
    """The snapshot, typed (the CLI passes the JSON it got from ``/status``)."""
    return state if isinstance(state, Snapshot) else Snapshot.from_json(state)


def duration(seconds: float | None) -> str:
    """3s, 4m 10s, 2h 5m, 3d 4h."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    for unit, span, sub, subspan in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                     ("m", 60, "s", 1)):
        if seconds >= span:
            return f"{seconds // span}{unit} {seconds % span // subspan}{sub}"
    return f"{seconds}s"


def _pss(memory: MemoryUsage | None) -> str:
    return size(None if memory is None else memory.pss)


def status_text(state: Snapshot | Mapping[str, Any]) -> str:
    """Like passenger-status: general information, then each app and its processes."""
    snap = _typed(state)
    server = snap.server
    responses = server.responses
    lines = [
        "----------- General information -----------",
        f"Address       : {', '.join(server.addresses) or server.url}  "
        f"(manager pid {server.pid}, "
        f"up {duration(server.uptime)})",
        f"Processes     : {server.processes} / max_pool_size {server.max_pool_size}",
        f"Requests      : {server.requests}  (2xx {responses['2xx']}, 4xx {responses['4xx']},"
        f" 5xx {responses['5xx']}; 502 {server.errors_502}, 503 {server.errors_503}, "
        f"retried {server.retries})",
        "",
        "----------- Application groups -----------",
    ]
    for app in snap.apps:
        lines.append(f"{app.name} ({app.spawn_method} spawning, min {app.min_instances}"
                     f", max {app.max_instances or '-'}, {app.environment}):")
        queue = [f"max wait {app.queue_time_limit:g} s"] if app.queue_time_limit else []
        if app.queue:
            queue.append(f"oldest waited {app.queue_oldest:.1f} s")
        waits = f" ({', '.join(queue)})" if queue else ""
        lines.append(f"  Requests in queue: {app.queue} / {app.queue_limit}{waits}"
                     f"   Spawning: {app.spawning}   Restarts: {app.restarts}"
                     f"   Crashes: {app.crashes}")
        limits = [f"max_request_time {app.max_request_time:g} s"
                  if app.max_request_time else "",
                  f"memory_limit {app.memory_limit_mib} MiB" if app.memory_limit_mib else ""]
        if any(limits):
            lines.append("  Limits: " + ", ".join(x for x in limits if x))
        if app.pipelined:
            lines.append(f"  Pipelined to busy workers: {app.pipelined} requests, "
                         f"{app.reclaimed} taken back "
                         f"(now {'on' if app.pipelining else 'off'})")
        if app.last_spawn_error is not None:
            error = app.last_spawn_error
            lines.append(f"  Last spawn error ({error.category}): {error.message}")
        preloader = app.preloader
        if preloader is not None:
            role = "Mold (a promoted worker)" if preloader.mold else "Preloader"
            lines.append(f"  {role}: PID {preloader.pid}  generation "
                         f"{preloader.generation}  up {duration(preloader.uptime)}"
                         f"  ready in {preloader.load_ms:.0f} ms  "
                         f"PSS {_pss(preloader.memory)}")
            if app.reforks or app.refork_next:
                lines.append(f"  Reforks: {app.reforks}   next after "
                             f"{app.refork_next or '-'} requests")
        elif app.spawn_method == "smart":
            lines.append("  Preloader: not running (starts on the next spawn)")
        for p in app.processes:
            cpu = "-" if p.cpu is None else f"{p.cpu:.0f}%"
            private = size(None if p.memory is None else p.memory.private_dirty)
            lines.append(
                f"  * PID {p.pid:<7} PPID {p.ppid:<7} {p.spawn_method:<6} "
                f"gen {p.generation:<3} "
                f"{p.state:<8} Sessions {p.sessions}/{p.concurrency}  "
                f"Processed {p.processed:<6} Uptime {duration(p.uptime):<7} CPU {cpu:<4} "
                f"PSS {_pss(p.memory):<10} Private {private:<10} "
                f"Last used {duration(p.last_used)} ago")
            lines.extend(f"      ! {warning}" for warning in p.warnings)
            lines.extend(f"      > {r.method} {r.path}  running {r.age:.1f} s  (id {r.id})"
                         for r in p.requests)
        if app.refork_hint:
            lines.append(f"  Hint: {app.refork_hint} (tui-passenger ctl refork {app.name})")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


HEADER = f"{'App':<14} {'PID':>7} {'Role':<9} " + " ".join(
    f"{h:>11}" for h in ("RSS", "PSS", "USS", "Shared", "Private", "Swap"))


def _row(app: str, pid: int | str, role: str, memory: MemoryUsage | None) -> str:
    cells = " ".join(f"{size(None if memory is None else getattr(memory, key)):>11}"
                     for key in MEMORY_KEYS)
    return f"{app:<14} {pid!s:>7} {role:<9} {cells}"


def memory_text(state: Snapshot | Mapping[str, Any]) -> str:
    """Like passenger-memory-stats: every process, totals, and the saving vs direct."""
    snap = _typed(state)
    lines = ["Memory (Private = private dirty, as passenger-memory-stats; Shared = RSS − USS)",
             HEADER, "-" * len(HEADER)]
    lines.append(_row("(manager)", snap.manager.pid, "manager", snap.manager.memory))
    for app in snap.apps:
        if app.preloader is not None:
            lines.append(_row(app.name, app.preloader.pid,
                              "mold" if app.preloader.mold else "preloader",
                              app.preloader.memory))
        for p in app.processes:
            lines.append(_row(app.name, p.pid, p.spawn_method, p.memory))
    lines.append("-" * len(HEADER))
    for app in snap.apps:
        lines.append(_row(app.name, "", "total", app.memory))
    totals = snap.totals
    lines.append(_row("all apps", "", "total", totals))
    lines.append("")
    lines.append(f"Total PSS {size(totals.pss)}; the same workers spawned directly: about "
                 f"{size(totals.direct_estimate)} — smart spawning saves "
                 f"{size(totals.saving)}.")
    lines.append("(Estimate: a directly spawned worker would hold privately what it now shares, "
                 "so its PSS would be about its RSS; and there would be no preloader.)")
    return "\n".join(lines) + "\n"
