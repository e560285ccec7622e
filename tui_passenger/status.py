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
  count, 0 = none), ``processes`` (process objects), ``memory``, ``websockets`` (open
  WebSockets over its workers), ``max_websockets`` (the cap; 0 = none), ``memory_history``
  {``pss_mib``, ``saving_mib``, ``span``: as a process's, for the app's ``memory``},
  ``refork_hint`` (null, or why a refork would pay now: smart spawning, and the share of
  its workers' memory still shared with the preloader has fallen below
  :data:`REFORK_HINT_SHARED_FRACTION`).
- process objects: ``pid``, ``ppid``, ``app``, ``state`` (ready | busy | draining | stopping |
  molding: becoming the next preloader), ``generation`` (of the preloader that forked it),
  ``spawn_method``, ``spawn_ms``, ``sessions``, ``concurrency``, ``processed``, ``max_requests``,
  ``started`` (epoch s), ``uptime`` (s), ``last_used`` (s ago), ``cpu`` (%, 100 = a core),
  ``threads``, ``memory`` {``rss``, ``pss``, ``uss``, ``shared``, ``private_dirty``,
  ``swap``} in bytes (null until first sampled), ``fds`` [{``fd``, ``kind``, ``target``,
  ``inode``, ``cloexec``, ``shared_with``, ``level`` (null | info | warning), ``warning``
  (the text for either level), ``own``}] (GET /status?fds=PID,…: listed for those pids
  only, empty for the others), ``lost_threads`` (the preloader's threads
  that did not survive the fork, less those the starting_worker_process hooks started
  again: a thread of that name runs after them), ``warnings`` [text: fds at level
  warning, lost threads], ``notes`` [text: fds at level info], ``websockets`` (open
  WebSockets on it, and upgrades sent to it not answered yet; they hold no session).
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
from collections.abc import Container
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
    RequestStatus,
    ServerInfo,
    Snapshot,
    SpawnError,
    TrafficHistory,
)

if TYPE_CHECKING:
    from tui_passenger.inspect.sampler import ProcessSample
    from tui_passenger.pool import Group, PoolProcess
    from tui_passenger.server import Server

__all__ = ["MEMORY_KEYS", "SCHEMA", "memory_summary", "process_state", "record_memory",
           "snapshot"]

#: The refork hint: below this fraction of shared memory (shared / (shared + private
#: dirty), over an app's workers), when their first samples after the fork were above it.
REFORK_HINT_SHARED_FRACTION = 0.5

LOST_THREADS = ("threads started while the app was loading did not survive the fork: {} — "
                "start them again in a starting_worker_process hook")


def _sampled(sample: ProcessSample | None, *warnings: str,
             fds_of: Container[int] | None = None) -> dict[str, Any]:
    """The :class:`~tui_passenger.snapshot.Sampled` fields of one process (``warnings``:
    more warnings than its fds give, e.g. lost threads). Its fds are listed if ``fds_of``
    is None or holds its pid (the warnings and notes they give stay either way)."""
    if sample is None:
        return {"warnings": warnings}
    fds = sample.fds
    return {
        "cpu": round(sample.cpu, 1),
        "threads": sample.status.threads if sample.status else None,
        "memory": sample.memory,
        "fds": fds if fds_of is None or sample.pid in fds_of else (),
        "warnings": (*(f"fd {e.fd}: {e.note}" for e in fds if e.level == "warning"),
                     *warnings),
        "notes": tuple(f"fd {e.fd}: {e.note}" for e in fds if e.level == "info"),
    }


def process_state(process: PoolProcess) -> str:
    """ready | busy | draining | stopping."""
    if process.state is READY:
        return "busy" if process.sessions else "ready"
    return process.state


def in_flight(server: Server) -> dict[int, list[RequestStatus]]:
    """The requests on each worker now, by pid, oldest first: the client connections'
    current exchanges that hold a worker. Found when the status is read, so that nothing is
    kept per request on the proxy's hot path."""
    found: dict[int, list[RequestStatus]] = {}
    perf = time.perf_counter()
    for connection in server.proxy.connections:
        exchange = connection.current
        if exchange is None or exchange.process is None:
            continue
        request = exchange.request
        found.setdefault(exchange.process.pid, []).append(RequestStatus(
            id=exchange.request_id.decode("latin-1"), method=request.method,
            path=request.url.decode("latin-1"), age=round(perf - request.received, 3)))
    for requests in found.values():
        requests.sort(key=lambda r: -r.age)
    return found


def _process(process: PoolProcess, samples: dict[int, ProcessSample], now: float,
             mono: float, requests: dict[int, list[RequestStatus]],
             fds_of: Container[int] | None) -> ProcessStatus:
    worker = process.worker
    lost = worker.lost_threads
    sample = samples.get(worker.pid)
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
        websockets=process.websockets,
        requests=tuple(requests.get(worker.pid, ())),
        memory_history=process.memory.history(),
        **_sampled(sample,
                   *((LOST_THREADS.format(", ".join(lost)),) if lost else ()), fds_of=fds_of),
    )


def _preloader(group: Group, samples: dict[int, ProcessSample], now: float,
               fds_of: Container[int] | None) -> PreloaderStatus | None:
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
        **_sampled(samples.get(preloader.pid), fds_of=fds_of),
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


def refork_hint(app: str, processes: tuple[ProcessStatus, ...]) -> str | None:
    """Why a refork would pay now, or None: the share of memory the workers of ``app``
    (smart) still share has fallen below REFORK_HINT_SHARED_FRACTION since their fork."""
    now = [p.memory for p in processes if p.memory is not None and p.memory_history.first]
    if not now:
        return None
    fraction = sum(m.shared for m in now) / (sum(m.shared + m.private_dirty for m in now) or 1)
    first = [(p.memory_history.first[0], p.memory_history.second[0]) for p in processes
             if p.memory_history.first]
    at_fork = sum(s for s, _ in first) / (sum(s + d for s, d in first) or 1)
    if fraction >= REFORK_HINT_SHARED_FRACTION or at_fork < REFORK_HINT_SHARED_FRACTION:
        return None
    return (f"{app}: its workers share {fraction:.0%} of their memory with the preloader "
            f"now ({at_fork:.0%} after the fork): a refork would share it again")


def _app(group: Group, samples: dict[int, ProcessSample], now: float, mono: float,
         requests: dict[int, list[RequestStatus]], fds_of: Container[int] | None) -> AppStatus:
    app = group.app
    processes = tuple(_process(p, samples, now, mono, requests, fds_of)
                      for p in group.processes)
    preloader = _preloader(group, samples, now, fds_of)
    smart = group.spawn_method == "smart"
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
        websockets=sum(p.websockets for p in group.processes),
        max_websockets=app.max_websockets,
        memory=memory_summary([p.memory for p in processes],
                              preloader.memory if preloader else None, smart),
        memory_history=group.memory.history(),
        refork_hint=refork_hint(group.name, processes) if smart else None,
    )


def record_memory(server: Server) -> None:
    """Add the sampler's new memory samples to each worker's and app's history (a sample
    once: by its time). The server calls it every second; each status read too."""
    if server.sampler is None:
        return
    samples = server.sampler.current  # the server itself: not someone looking
    for group in server.pool.groups.values():
        usages: list[MemoryUsage | None] = []
        newest = 0.0
        for process in group.processes:
            sample = samples.get(process.pid)
            if sample is None or sample.memory is None or sample.memory_at is None:
                continue
            memory = sample.memory
            process.memory.add(sample.memory_at, memory.shared, memory.private_dirty)
            usages.append(memory)
            newest = max(newest, sample.memory_at)
        if newest > group.memory.last_at:
            preloader = group.spawner.preloader
            pid = preloader.pid if preloader is not None and preloader.live else None
            sample = samples.get(pid) if pid is not None else None
            totals = memory_summary(usages, sample.memory if sample is not None else None,
                                    group.spawn_method == "smart")
            group.memory.add(newest, totals.pss, totals.saving)


def snapshot(server: Server, fds_of: Container[int] | None = None) -> Snapshot:
    """The whole state, typed (``.to_json()`` gives the schema above). ``fds_of``: list
    the fds of these pids only (the others' ``fds`` empty): a dashboard shows the fds of
    one process, and at 150 workers the lists are most of the snapshot's cost."""
    now, mono = time.time(), time.monotonic()
    record_memory(server)
    samples = server.sampler.latest if server.sampler is not None else {}
    requests = in_flight(server)
    apps = tuple(_app(g, samples, now, mono, requests, fds_of)
                 for g in server.pool.groups.values())
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
        manager=ManagerInfo(pid=os.getpid(),
                            **_sampled(samples.get(os.getpid()), fds_of=fds_of)),
        apps=apps,
        totals=MemoryTotals(**{key: sum(getattr(a.memory, key) for a in apps)
                               for key in TOTAL_KEYS}),
        traffic=TrafficHistory(tuple(traffic.rps), tuple(traffic.p50_ms),
                               tuple(traffic.p99_ms)),
        events_seq=server.events.last,
        sampling=server.sampler is not None and not server.sampler.paused,
    )
