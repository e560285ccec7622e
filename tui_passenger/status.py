"""The state of a running server, built as a typed :class:`~tui_passenger.snapshot.Snapshot`:
what the dashboard, ``/metrics`` and the text reports render. Its ``to_json()`` is what
``/status`` and ``status --json`` serve, documented here.

Schema (version 1, stable; new keys may be added, none removed or renamed):

- ``schema`` (1), ``server`` {``pid``, ``url`` (the first TCP address, else the first Unix
  socket), ``addresses`` (every public address: ``http://HOST:PORT``, ``unix:PATH``),
  ``started``, ``uptime``, ``max_pool_size``, ``processes``, ``requests``, ``responses``
  {"1xx".."5xx"}, ``retries``, ``errors_502``, ``errors_503``, ``log_file`` (null: stderr),
  ``dashboard_owned`` (started by a dashboard, which stops it when quitting)}, ``manager``
  {``pid``,
  ``cpu``, ``threads``, ``memory``}, ``totals`` (memory summed over every app, as per app
  below), ``traffic`` {``rps``, ``p50_ms``, ``p99_ms``: one value per second, oldest first},
  ``events_seq`` (the newest log entry, see ``/events``), ``sampling`` (false while paused).
- ``apps``: one object per app: ``name``, ``spawn_method``, ``environment``,
  ``min_instances``, ``max_instances``, ``queue`` (requests waiting for a worker),
  ``queue_limit`` (max_request_queue_size), ``queue_time_limit`` (max_request_queue_time,
  s, 0 = none), ``queue_oldest`` (s the oldest queued request has waited, 0 = none
  waits), ``max_request_time`` (s, 0 = none), ``memory_limit_mb`` (MiB, 0 = none), ``spawning``,
  ``spawned``, ``restarts`` (rolling restarts of any cause: operator, restart.txt,
  always_restart.txt, watch, spawn-method switch), ``crashes`` (workers that exited
  without being asked to), ``requests``, ``pipeline_window`` (s), ``pipelined`` (requests
  sent to a busy worker to run next), ``reclaimed`` (of those, taken back because the
  request ahead ran past the window), ``pipelining`` (whether that is on right now),
  ``worker_scheduling`` (batch | normal),
  ``last_spawn_error`` (null or {``category``,
  ``message``}), ``preloader`` (null, or a process object with ``load_ms``,
  ``threads_at_load``, ``generation`` and ``mold``: true for a worker promoted by refork),
  ``generation`` (the one new workers are forked in), ``mold`` (pid of the preloader when it
  is a promoted worker, else null), ``reforks``, ``refork_next`` (the next refork_after
  count, 0 = none), ``processes`` (process objects), ``memory``.
- process objects: ``pid``, ``ppid``, ``app``, ``state`` (ready | busy | draining | stopping |
  molding: becoming the next preloader), ``generation`` (of the preloader that forked it),
  ``spawn_method``, ``spawn_ms``, ``sessions``, ``concurrency``, ``processed``, ``max_requests``,
  ``started`` (epoch s), ``uptime`` (s), ``last_used`` (s ago), ``cpu`` (%, 100 = a core),
  ``threads``, ``memory`` {``rss``, ``pss``, ``uss``, ``shared``, ``private_dirty``,
  ``swap``} in bytes (null until first sampled), ``fds`` [{``fd``, ``kind``, ``target``,
  ``inode``, ``cloexec``, ``shared_with``, ``level`` (null | info | warning), ``warning``
  (the text for either level), ``own``}], ``lost_threads``, ``warnings`` [text: fds at level
  warning, lost threads], ``notes`` [text: fds at level info].
- ``memory`` (per app and ``totals``): ``rss``, ``pss``, ``uss``, ``shared``,
  ``private_dirty``, ``swap`` summed over the workers and the preloader;
  ``direct_estimate``: the PSS the same workers would take if spawned directly (see
  :func:`tui_passenger.inspect.memory.direct_estimate`), and ``saving`` = direct_estimate
  − pss (0 for directly spawned apps).

Memory is in bytes everywhere; ``memory_limit_mb`` is the app's ``memory_limit`` setting, in
MiB (2^20 bytes) like every memory figure the reports and the dashboard show.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from tui_passenger.inspect.memory import MemoryUsage, direct_estimate
from tui_passenger.pool.group import READY
from tui_passenger.snapshot import (
    MEMORY_KEYS,
    SCHEMA,
    TOTAL_KEYS,
    AppStatus,
    ManagerInfo,
    MemoryTotals,
    PreloaderStatus,
    ProcessStatus,
    ServerInfo,
    Snapshot,
    SpawnError,
    TrafficHistory,
)

if TYPE_CHECKING:
    from tui_passenger.inspect.sampler import ProcessSample
    from tui_passenger.pool import Group, PoolProcess
    from tui_passenger.server import Server

__all__ = ["MEMORY_KEYS", "SCHEMA", "memory_summary", "process_state", "snapshot"]

LOST_THREADS = ("threads started while the app was loading did not survive the fork: {} — "
                "start them again in a starting_worker_process hook")


def _sampled(sample: ProcessSample | None, *warnings: str) -> dict[str, Any]:
    """The :class:`~tui_passenger.snapshot.Sampled` fields of one process (``warnings``:
    more warnings than its fds give, e.g. lost threads)."""
    if sample is None:
        return {"warnings": warnings}
    fds = sample.fds
    return {
        "cpu": round(sample.cpu, 1),
        "threads": sample.status.threads if sample.status else None,
        "memory": sample.memory,
        "fds": fds,
        "warnings": (*(f"fd {e.fd}: {e.note}" for e in fds if e.level == "warning"),
                     *warnings),
        "notes": tuple(f"fd {e.fd}: {e.note}" for e in fds if e.level == "info"),
    }


def process_state(process: PoolProcess) -> str:
    """ready | busy | draining | stopping."""
    if process.state is READY:
        return "busy" if process.sessions else "ready"
    return process.state


def _process(process: PoolProcess, samples: dict[int, ProcessSample], now: float,
             mono: float) -> ProcessStatus:
    worker = process.worker
    lost = worker.lost_threads
    return ProcessStatus(
        pid=worker.pid,
        ppid=worker.ppid,
        app=process.group.name,
        state=process_state(process),
        spawn_method=worker.spawn_method,
        generation=worker.generation,
        spawn_ms=round((worker.spawn_duration or 0) * 1000, 1),
        sessions=process.sessions,
        concurrency=worker.concurrency,
        processed=process.processed,
        max_requests=process.max_requests,
        started=round(worker.started_at, 3),
        uptime=round(now - worker.started_at, 1),
        last_used=round(mono - process.last_used, 1),
        lost_threads=tuple(lost),
        **_sampled(samples.get(worker.pid),
                   *((LOST_THREADS.format(", ".join(lost)),) if lost else ())),
    )


def _preloader(group: Group, samples: dict[int, ProcessSample],
               now: float) -> PreloaderStatus | None:
    preloader = group.spawner.preloader
    if preloader is None or preloader.pid is None or not preloader.live:
        return None
    return PreloaderStatus(
        pid=preloader.pid,
        ppid=os.getpid(),
        state=preloader.state,
        started=round(preloader.started_at, 3),
        uptime=round(now - preloader.started_at, 1),
        load_ms=round((preloader.load_seconds or 0) * 1000, 1),
        threads_at_load=tuple(preloader.threads),
        generation=preloader.generation,
        mold=preloader.mold is not None,
        **_sampled(samples.get(preloader.pid)),
    )


def memory_summary(workers: list[MemoryUsage | None], preloader: MemoryUsage | None,
                   smart: bool) -> MemoryTotals:
    """Sum the memory of an app's processes and estimate the saving against direct."""
    usages = [m for m in workers if m]
    total = {key: sum(getattr(u, key) for u in usages) for key in MEMORY_KEYS}
    if preloader is not None:
        for key in MEMORY_KEYS:
            total[key] += getattr(preloader, key)
    estimate = direct_estimate(usages, preloader) if smart else total["pss"]
    return MemoryTotals(**total, direct_estimate=estimate,
                        saving=max(0, estimate - total["pss"]))


def _app(group: Group, samples: dict[int, ProcessSample], now: float,
         mono: float) -> AppStatus:
    app = group.app
    processes = tuple(_process(p, samples, now, mono) for p in group.processes)
    preloader = _preloader(group, samples, now)
    error = group.last_error
    return AppStatus(
        name=group.name,
        spawn_method=group.spawn_method,
        environment=app.environment,
        min_instances=group.min_instances,
        max_instances=app.max_instances,
        queue=len(group.waiters),
        queue_limit=app.max_request_queue_size,
        queue_time_limit=app.max_request_queue_time,
        queue_oldest=group.queue_age(mono),
        max_request_time=app.max_request_time,
        memory_limit_mib=app.memory_limit,
        spawning=group.spawning,
        spawned=group.spawned,
        restarts=group.restarts,
        crashes=group.crashes,
        requests=group.requests,
        pipeline_window=app.pipeline_window,
        pipelined=group.pipelined,
        reclaimed=group.reclaimed,
        pipelining=group.may_pipeline(time.monotonic()),
        worker_scheduling=app.worker_scheduling,
        last_spawn_error=None if error is None else SpawnError(error.category, error.message),
        preloader=preloader,
        generation=group.spawner.generation,
        reforks=group.spawner.reforks,
        refork_next=group.refork_next,
        processes=processes,
        memory=memory_summary([p.memory for p in processes],
                              preloader.memory if preloader else None,
                              group.spawn_method == "smart"),
    )


def snapshot(server: Server) -> Snapshot:
    """The whole state, typed (``.to_json()`` gives the schema above)."""
    now, mono = time.time(), time.monotonic()
    samples = server.sampler.latest if server.sampler is not None else {}
    apps = tuple(_app(g, samples, now, mono) for g in server.pool.groups.values())
    stats = server.proxy.stats
    traffic = server.traffic
    return Snapshot(
        server=ServerInfo(
            pid=os.getpid(),
            url=server.url if server.listeners else None,
            addresses=tuple(server.addresses),
            started=round(server.started_at, 3),
            uptime=round(now - server.started_at, 1),
            max_pool_size=server.pool.max_pool_size,
            processes=server.pool.total(),
            requests=stats.requests,
            responses={f"{i}xx": stats.by_class[i] for i in range(1, 6)},
            retries=stats.retries,
            errors_502=stats.errors_502,
            errors_503=stats.errors_503,
            log_file=server.log_file,
            dashboard_owned=server.dashboard_owned,
        ),
        manager=ManagerInfo(pid=os.getpid(), **_sampled(samples.get(os.getpid()))),
        apps=apps,
        totals=MemoryTotals(**{key: sum(getattr(a.memory, key) for a in apps)
                               for key in TOTAL_KEYS}),
        traffic=TrafficHistory(tuple(traffic.rps), tuple(traffic.p50_ms),
                               tuple(traffic.p99_ms)),
        events_seq=server.events.last,
        sampling=server.sampler is not None and not server.sampler.paused,
    )
