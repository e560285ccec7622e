"""The configuration's data model: the validated dataclasses and :class:`ConfigError`."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONCURRENCY = {"wsgi": 1, "asgi": 100}


class ConfigError(Exception):
    """An invalid configuration; ``str()`` is a single human-readable line."""

    def __init__(self, detail: str, *, path: str | None = None, table: str | None = None,
                 key: str | None = None, line: int | None = None, column: int | None = None,
                 key_in_detail: bool = False) -> None:
        self.detail, self.path, self.table, self.key = detail, path, table, key
        self.line, self.column = line, column
        where = (path or "") + "".join(f":{n}" for n in (line, column) if n and path)
        parts = [where, table, None if key_in_detail else key, detail]
        message = ": ".join(p for p in parts if p)
        # One line whatever the file holds: escape every non-printable character (line and
        # paragraph separators, control characters, escape sequences).
        super().__init__("".join(ch if ch.isprintable() else ascii(ch)[1:-1]
                                 for ch in message))


class EnvMap(Mapping[str, str]):
    """An immutable, hashable ``str -> str`` mapping (an app's environment variables)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str] | None = None) -> None:
        self._data = dict(data or {})

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __eq__(self, other: object) -> bool:
        return dict(self._data) == dict(other) if isinstance(other, Mapping) else NotImplemented

    def __repr__(self) -> str:
        return f"EnvMap({self._data!r})"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The ``[server]`` table: where to listen and pool-wide limits."""

    address: str = "127.0.0.1"
    port: int = 3000
    #: Every address to listen on (``HOST:PORT``, ``[V6]:PORT``, ``unix:PATH``); when given,
    #: instead of ``address`` + ``port``.
    bind: tuple[str, ...] = ()
    #: Mode and group of the Unix sockets of ``bind``.
    bind_mode: int = 0o660
    bind_group: str | None = None
    admin_socket: str | None = None
    max_pool_size: int = 6
    shutdown_timeout: float = 30.0
    #: Largest request body accepted (bytes); larger → 413.
    client_max_body_size: int = 1024 * 1024 * 1024
    #: Request bodies above this many bytes are spooled to a temporary file.
    client_body_buffer_size: int = 1024 * 1024
    #: Peers (addresses or CIDR networks) whose X-Forwarded-* headers are kept.
    trusted_proxies: tuple[str, ...] = ()
    #: One log line per request (see :mod:`tui_passenger.proxy.accesslog`).
    access_log: bool = True
    #: ``"combined"`` (the combined log format plus app, time taken and request id) or
    #: ``"json"`` (one object per line).
    access_log_format: str = "combined"
    #: The file access lines are appended to; None: where the main log goes.
    access_log_file: str | None = None
    #: Seconds buffered access lines wait at most before being written.
    access_log_flush: float = 1.0
    #: Seconds a client may take to send a request's head (from its first byte) → 408.
    client_header_timeout: float = 30.0
    #: Seconds a client may take to send a request's body (after the head) → 408.
    client_body_timeout: float = 60.0
    #: Seconds an idle keep-alive client connection is kept.
    keepalive_timeout: float = 75.0
    #: Client connections open at once; more are answered 503 and closed (0 = no cap).
    max_connections: int = 4096
    #: (host, port) of the read-only TCP listener for /metrics, /healthz and /readyz.
    metrics_bind: tuple[str, int] | None = None
    #: Longest request line (method, target, version) in bytes → 414.
    limit_request_line: int = 4094
    #: Longest header field line (name, value, separators) in bytes → 431.
    limit_request_field_size: int = 8190
    #: Most header fields in a request → 431.
    limit_request_fields: int = 100


@dataclass(frozen=True, slots=True)
class AppConfig:
    """One ``[[app]]`` table, with ``[server]`` defaults already applied."""

    name: str
    root: Path
    entry: str | None = None
    interface: str = "auto"
    env: EnvMap = EnvMap()
    python: str = sys.executable
    spawn_method: str = "smart"
    min_instances: int = 1
    max_instances: int = 0
    pool_idle_time: float = 300.0
    max_preloader_idle_time: float = 300.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    #: Requests that may wait for a worker at once; more get 503 (0 = none may wait).
    max_request_queue_size: int = 10000
    #: Seconds a request may wait for a worker; longer → 503 with Retry-After (0 = no limit).
    max_request_queue_time: float = 10.0
    start_timeout: float = 90.0
    concurrency: int = 0
    environment: str = "production"
    #: Smart spawning: gc.collect() + gc.freeze() in the preloader before each fork.
    gc_freeze: bool = True
    #: Smart spawning: request counts after which the current generation's first worker to
    #: reach them becomes the new preloader (the "mold"), e.g. (100, 500, 1000).
    refork_after: tuple[int, ...] = ()
    #: Fraction of the workers replaced at once when a new mold takes over (at least one).
    refork_max_unavailable: float = 0.1
    #: Seconds a request may run; longer → 504 and the worker is killed and replaced (0 = off).
    max_request_time: float = 0.0
    #: One-request-at-a-time workers: a GET-like request that would wait for a worker may
    #: instead be sent to a busy one (it runs next, no round trip through the proxy) when
    #: that worker's request started less than this many seconds ago and the app's requests
    #: have all finished within it lately (0 = off). See Pool.try_pipeline.
    pipeline_window: float = 0.01
    #: Linux scheduling policy of the workers: "batch" (SCHED_BATCH: a worker woken by a
    #: request does not preempt the proxy, which feeds every worker) or "normal".
    worker_scheduling: str = "batch"
    #: MiB of private (dirty) memory a worker may hold; above → recycled gracefully (0 = off).
    memory_limit: int = 0
    #: Seconds between looks at ROOT/tmp/restart.txt and always_restart.txt (0 = off).
    restart_check_interval: float = 2.0
    #: Development: restart the app when a source file under its root changes.
    watch: bool = False
    #: Started as root: run the app's preloader and workers as this user (and group).
    user: str | None = None
    group: str | None = None
    #: Started as root without ``user``: run the app as root anyway (refused otherwise).
    allow_root: bool = False
    #: Open WebSockets the app may have at once; more get 503 before the upgrade (0 = no cap).
    max_websockets: int = 10000
    #: Seconds between the worker's pings on an open WebSocket, and to answer one (0 = off).
    websocket_ping_interval: float = 20.0
    websocket_ping_timeout: float = 20.0
    #: Largest WebSocket message (bytes) a worker takes; larger → close code 1009.
    websocket_max_message_size: int = 16 * 1024 * 1024
    #: Seconds an open WebSocket may pass without a message either way; then the worker
    #: closes it (1001). 0 = no limit (the pings still find peers that are gone).
    websocket_idle_timeout: float = 0.0
    hosts: tuple[str, ...] = ()
    base_uri: str = "/"
    default: bool = False

    def effective_concurrency(self, interface: str) -> int:
        """Requests one worker takes at once, given the detected ``"wsgi"``/``"asgi"``."""
        if interface not in DEFAULT_CONCURRENCY:
            raise ValueError(f"interface must be 'wsgi' or 'asgi', got {interface!r}")
        return self.concurrency or DEFAULT_CONCURRENCY[interface]


@dataclass(frozen=True, slots=True)
class Config:
    """A whole configuration file: the server settings and the apps, in file order."""

    path: Path | None
    server: ServerConfig
    apps: tuple[AppConfig, ...]
    #: Dashboard key remapping: action id → key (the ``[keys]`` table).
    keys: EnvMap = dataclasses.field(default_factory=lambda: EnvMap({}))

    def app(self, name: str) -> AppConfig:
        """The app called ``name``; KeyError if there is none."""
        for app in self.apps:
            if app.name == name:
                return app
        raise KeyError(name)
