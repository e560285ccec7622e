"""The state of a running server as typed data: what the dashboard renders, what ``/status``
and ``status --json`` serve (:meth:`Snapshot.to_json`, schema in :mod:`tui_passenger.status`)
and what ``/metrics`` and the text reports read.

:mod:`tui_passenger.status` builds a :class:`Snapshot` from a server; a client that gets the
JSON (the attached dashboard, the CLI) rebuilds it with :meth:`Snapshot.from_json`, so both
sides read the same attributes. ``from_json(to_json(s)) == s``.

Plain data only: no server, pool or UI imports here (the sampler's own frozen records,
:class:`~tui_passenger.inspect.memory.MemoryUsage` and :class:`~tui_passenger.inspect.fds.FdEntry`,
are used as they are: the snapshot holds them without copying).

Memory values are bytes; where a number of MiB is meant (``memory_limit``) the name says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tui_passenger.activity import MemoryHistory, RequestStatus
from tui_passenger.inspect.fds import FdEntry
from tui_passenger.inspect.memory import MemoryUsage
from tui_passenger.sampled import (
    JSON,
    MEMORY_KEYS,
    TOTAL_KEYS,
    MemoryTotals,
    Sampled,
    memory_json,
)

__all__ = [
    "MEMORY_KEYS", "SCHEMA", "TOTAL_KEYS", "AppStatus", "FdEntry", "ManagerInfo",
    "MemoryHistory", "MemoryTotals", "MemoryUsage", "PreloaderStatus", "ProcessStatus",
    "RequestStatus", "Sampled", "ServerInfo", "Snapshot", "SpawnError", "TrafficHistory"
]

#: The version of the JSON schema (new keys may be added, none removed or renamed).
SCHEMA = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagerInfo(Sampled):
    """The manager process (this server)."""

    pid: int

    def to_json(self) -> JSON:
        """The schema's ``manager`` object."""
        return {"pid": self.pid, **self.sampled_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ManagerInfo:
        """Rebuild from the schema's ``manager`` object."""
        return cls(pid=data["pid"], **cls.sampled_fields(data))


@dataclass(frozen=True, slots=True, kw_only=True)
class PreloaderStatus(Sampled):
    """An app's preloader: the process new workers are forked from."""

    pid: int
    ppid: int
    #: starting | ready
    state: str
    #: Epoch seconds.
    started: float
    uptime: float
    load_ms: float
    #: Threads running when the app had loaded (they do not survive a fork).
    threads_at_load: tuple[str, ...]
    generation: int
    #: True for a worker promoted by refork.
    mold: bool

    def to_json(self) -> JSON:
        """The schema's ``preloader`` object."""
        return {
            "pid": self.pid,
            "ppid": self.ppid,
            "state": self.state,
            "started": self.started,
            "uptime": self.uptime,
            "load_ms": self.load_ms,
            "threads_at_load": list(self.threads_at_load),
            "generation": self.generation,
            "mold": self.mold,
            **self.sampled_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreloaderStatus:
        """Rebuild from the schema's ``preloader`` object."""
        return cls(pid=data["pid"], ppid=data["ppid"], state=data["state"],
                   started=data["started"], uptime=data["uptime"], load_ms=data["load_ms"],
                   threads_at_load=tuple(data["threads_at_load"]),
                   generation=data["generation"], mold=data["mold"],
                   **cls.sampled_fields(data))


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessStatus(Sampled):
    """One worker process."""

    pid: int
    ppid: int
    app: str
    #: ready | busy | draining | stopping | molding (becoming the next preloader)
    state: str
    spawn_method: str
    #: Of the preloader that forked it.
    generation: int
    spawn_ms: float
    sessions: int
    concurrency: int
    processed: int
    max_requests: int
    #: Epoch seconds.
    started: float
    uptime: float
    #: Seconds ago.
    last_used: float
    #: Threads of the preloader that did not survive the fork into this worker (and that
    #: its starting_worker_process hooks did not start again).
    lost_threads: tuple[str, ...]
    #: Open WebSockets (and upgrades on their way to it); they hold no session.
    websockets: int = 0
    #: The requests it is serving, oldest first.
    requests: tuple[RequestStatus, ...] = ()
    #: Shared (``first``) and private dirty (``second``) memory since it started.
    memory_history: MemoryHistory = MemoryHistory()

    def to_json(self) -> JSON:
        """The schema's process object."""
        return {
            "pid": self.pid,
            "ppid": self.ppid,
            "app": self.app,
            "state": self.state,
            "spawn_method": self.spawn_method,
            "generation": self.generation,
            "spawn_ms": self.spawn_ms,
            "sessions": self.sessions,
            "concurrency": self.concurrency,
            "processed": self.processed,
            "max_requests": self.max_requests,
            "started": self.started,
            "uptime": self.uptime,
            "last_used": self.last_used,
            "lost_threads": list(self.lost_threads),
            "websockets": self.websockets,
            "requests": [request.to_json() for request in self.requests],
            "memory_history": self.memory_history.to_json("shared_mib", "private_mib"),
            **self.sampled_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessStatus:
        """Rebuild from the schema's process object."""
        return cls(pid=data["pid"], ppid=data["ppid"], app=data["app"], state=data["state"],
                   spawn_method=data["spawn_method"], generation=data["generation"],
                   spawn_ms=data["spawn_ms"], sessions=data["sessions"],
                   concurrency=data["concurrency"], processed=data["processed"],
                   max_requests=data["max_requests"], started=data["started"],
                   uptime=data["uptime"], last_used=data["last_used"],
                   lost_threads=tuple(data["lost_threads"]),
                   websockets=data.get("websockets", 0),
                   requests=tuple(map(RequestStatus.from_json, data.get("requests", ()))),
                   memory_history=MemoryHistory.from_json(data.get("memory_history"),
                                                          "shared_mib", "private_mib"),
                   **cls.sampled_fields(data))


@dataclass(frozen=True, slots=True)
class SpawnError:
    """Why an app's last spawn failed."""

    category: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AppStatus:
    """One app: its settings, counts, preloader, workers and memory."""

    name: str
    spawn_method: str
    environment: str
    min_instances: int
    #: 0 = no limit of its own (max_pool_size applies).
    max_instances: int
    queue: int
    queue_limit: int
    #: max_request_queue_time (s; 0 = no limit), and how long the oldest queued request
    #: has waited (s; 0 when none waits).
    queue_time_limit: float = 0.0
    queue_oldest: float = 0.0
    #: Seconds; 0 = no limit.
    max_request_time: float
    #: The ``memory_limit`` setting: MiB (JSON key ``memory_limit_mb``); 0 = no limit.
    memory_limit_mib: int
    spawning: int
    spawned: int
    #: Rolling restarts (any cause); ``crashes``: workers that exited without being asked.
    restarts: int
    crashes: int
    requests: int
    #: Seconds.
    pipeline_window: float
    #: Requests sent to a busy worker to run next.
    pipelined: int
    #: Of those, taken back because the request ahead ran past the window.
    reclaimed: int
    #: Whether pipelining is on right now.
    pipelining: bool
    #: batch | normal
    worker_scheduling: str
    last_spawn_error: SpawnError | None
    preloader: PreloaderStatus | None
    #: The generation new workers are forked in.
    generation: int
    reforks: int
    #: The next refork_after count, 0 = none.
    refork_next: int
    processes: tuple[ProcessStatus, ...]
    memory: MemoryTotals
    #: Open WebSockets over all its workers, and the max_websockets setting (0 = no cap).
    websockets: int = 0
    max_websockets: int = 0
    #: PSS (``first``) and saving vs direct (``second``) since the app's first sample.
    memory_history: MemoryHistory = MemoryHistory()
    #: Why a refork would pay now (its workers' shared fraction fell), else None.
    refork_hint: str | None = None

    @property
    def mold(self) -> int | None:
        """The preloader's pid when it is a promoted worker, else None."""
        preloader = self.preloader
        return preloader.pid if preloader is not None and preloader.mold else None

    def to_json(self) -> JSON:
        """The schema's app object."""
        error = self.last_spawn_error
        return {
            "name": self.name,
            "spawn_method": self.spawn_method,
            "environment": self.environment,
            "min_instances": self.min_instances,
            "max_instances": self.max_instances,
            "queue": self.queue,
            "queue_limit": self.queue_limit,
            "queue_time_limit": self.queue_time_limit,
            "queue_oldest": round(self.queue_oldest, 3),
            "max_request_time": self.max_request_time,
            "memory_limit_mb": self.memory_limit_mib,
            "spawning": self.spawning,
            "spawned": self.spawned,
            "restarts": self.restarts,
            "crashes": self.crashes,
            "requests": self.requests,
            "pipeline_window": self.pipeline_window,
            "pipelined": self.pipelined,
            "reclaimed": self.reclaimed,
            "pipelining": self.pipelining,
            "worker_scheduling": self.worker_scheduling,
            "last_spawn_error": None if error is None else {
                "category": error.category, "message": error.message},
            "preloader": None if self.preloader is None else self.preloader.to_json(),
            "generation": self.generation,
            "mold": self.mold,
            "reforks": self.reforks,
            "refork_next": self.refork_next,
            "processes": [process.to_json() for process in self.processes],
            "memory": memory_json(self.memory),
            "websockets": self.websockets,
            "max_websockets": self.max_websockets,
            "memory_history": self.memory_history.to_json("pss_mib", "saving_mib"),
            "refork_hint": self.refork_hint,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AppStatus:
        """Rebuild from the schema's app object."""
        error, preloader = data["last_spawn_error"], data["preloader"]
        return cls(
            name=data["name"], spawn_method=data["spawn_method"],
            environment=data["environment"], min_instances=data["min_instances"],
            max_instances=data["max_instances"], queue=data["queue"],
            queue_limit=data["queue_limit"],
            queue_time_limit=data.get("queue_time_limit", 0.0),
            queue_oldest=data.get("queue_oldest", 0.0), max_request_time=data["max_request_time"],
            memory_limit_mib=data["memory_limit_mb"], spawning=data["spawning"],
            spawned=data["spawned"], restarts=data["restarts"],
            crashes=data.get("crashes", 0), requests=data["requests"],
            pipeline_window=data["pipeline_window"], pipelined=data["pipelined"],
            reclaimed=data["reclaimed"], pipelining=data["pipelining"],
            worker_scheduling=data["worker_scheduling"],
            last_spawn_error=None if error is None else SpawnError(error["category"],
                                                                   error["message"]),
            preloader=None if preloader is None else PreloaderStatus.from_json(preloader),
            generation=data["generation"], reforks=data["reforks"],
            refork_next=data["refork_next"],
            processes=tuple(ProcessStatus.from_json(p) for p in data["processes"]),
            memory=MemoryTotals.from_json(data["memory"]),
            websockets=data.get("websockets", 0),
            max_websockets=data.get("max_websockets", 0),
            memory_history=MemoryHistory.from_json(data.get("memory_history"), "pss_mib",
                                                   "saving_mib"),
            refork_hint=data.get("refork_hint"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInfo:
    """The server as a whole: address, uptime, pool size and proxy counters."""

    pid: int
    #: None when it serves no public address.
    url: str | None
    #: Every public address: ``http://HOST:PORT``, ``unix:PATH``.
    addresses: tuple[str, ...] = ()
    #: Epoch seconds.
    started: float
    uptime: float
    max_pool_size: int
    processes: int
    requests: int
    #: Responses by status class: "1xx" .. "5xx".
    responses: Mapping[str, int]
    retries: int
    errors_502: int
    errors_503: int
    #: Where the instance logs (None: stderr).
    log_file: str | None = None
    #: Started by a dashboard: the dashboard attached to it stops it when quitting.
    dashboard_owned: bool = False

    def to_json(self) -> JSON:
        """The schema's ``server`` object."""
        return {
            "pid": self.pid,
            "url": self.url,
            "addresses": list(self.addresses),
            "started": self.started,
            "uptime": self.uptime,
            "max_pool_size": self.max_pool_size,
            "processes": self.processes,
            "requests": self.requests,
            "responses": dict(self.responses),
            "retries": self.retries,
            "errors_502": self.errors_502,
            "errors_503": self.errors_503,
            "log_file": self.log_file,
            "dashboard_owned": self.dashboard_owned,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerInfo:
        """Rebuild from the schema's ``server`` object."""
        return cls(pid=data["pid"], url=data["url"],
                   addresses=tuple(data.get("addresses") or ([data["url"]] if data["url"]
                                                            else [])),
                   started=data["started"],
                   uptime=data["uptime"], max_pool_size=data["max_pool_size"],
                   processes=data["processes"], requests=data["requests"],
                   responses=dict(data["responses"]), retries=data["retries"],
                   errors_502=data["errors_502"], errors_503=data["errors_503"],
                   log_file=data.get("log_file"),
                   dashboard_owned=bool(data.get("dashboard_owned")))


@dataclass(frozen=True, slots=True)
class TrafficHistory:
    """One value per second, oldest first: requests, median and p99 latency (ms)."""

    rps: tuple[int, ...] = ()
    p50_ms: tuple[float, ...] = ()
    p99_ms: tuple[float, ...] = ()

    def to_json(self) -> JSON:
        """The schema's ``traffic`` object."""
        return {"rps": list(self.rps), "p50_ms": list(self.p50_ms), "p99_ms": list(self.p99_ms)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrafficHistory:
        """Rebuild from the schema's ``traffic`` object."""
        return cls(tuple(data["rps"]), tuple(data["p50_ms"]), tuple(data["p99_ms"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The whole state of one server at one moment."""

    server: ServerInfo
    manager: ManagerInfo
    apps: tuple[AppStatus, ...]
    #: Memory summed over every app.
    totals: MemoryTotals
    traffic: TrafficHistory
    #: The sequence number of the newest log entry (see ``/events``).
    events_seq: int
    #: False while sampling (/proc reads) is paused.
    sampling: bool

    def to_json(self) -> JSON:
        """The documented status schema, JSON-ready (what ``status --json`` prints)."""
        return {
            "schema": SCHEMA,
            "server": self.server.to_json(),
            "manager": self.manager.to_json(),
            "apps": [app.to_json() for app in self.apps],
            "totals": memory_json(self.totals),
            "traffic": self.traffic.to_json(),
            "events_seq": self.events_seq,
            "sampling": self.sampling,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        """Rebuild from the status JSON; ValueError if it is not a schema-1 snapshot."""
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"not a status snapshot of schema {SCHEMA} (got {found!r})")
        try:
            return cls(server=ServerInfo.from_json(data["server"]),
                       manager=ManagerInfo.from_json(data["manager"]),
                       apps=tuple(AppStatus.from_json(app) for app in data["apps"]),
                       totals=MemoryTotals.from_json(data["totals"]),
                       traffic=TrafficHistory.from_json(data["traffic"]),
                       events_seq=data["events_seq"], sampling=data["sampling"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"status snapshot incomplete: {exc!r}") from None
