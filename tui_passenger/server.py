"""The core as one object: pool + front proxy + sampler + admin API, with a start → stop
lifecycle.

The headless runner, the dashboard and the tests all drive this; it imports no UI code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

from tui_passenger import reload
from tui_passenger.admin.api import AdminServer
from tui_passenger.admin.metrics import Metrics
from tui_passenger.admin.paths import admin_socket_path
from tui_passenger.admin.probes import ProbeServer
from tui_passenger.config import Config, load_config
from tui_passenger.engine import (
    OutputSink,
    RuntimeDir,
    become_subreaper,
    raise_open_files_limit,
)
from tui_passenger.engine.output import OutputLine, log_line
from tui_passenger.eventlog import EventLog, Traffic
from tui_passenger.inspect.fds import ProcessInfo
from tui_passenger.inspect.sampler import Sampler
from tui_passenger.listeners import Listener, format_address, open_listeners
from tui_passenger.pool import Pool
from tui_passenger.pool.events import EventSink, PoolEvent, Spawned
from tui_passenger.proxy import FrontServer
from tui_passenger.service import ServiceState
from tui_passenger.status import record_memory
from tui_passenger.systemd import Notifier

log = logging.getLogger("tui_passenger")


class Server:
    """Serves every app of a config on one public address."""

    def __init__(self, config: Config, *, on_output: OutputSink | None = None,
                 on_event: EventSink | None = None, admin: bool = True,
                 sample_interval: float = 1.0, smaps_interval: float = 10.0,
                 reload_config: Callable[[], Config] | None = None) -> None:
        self.config = config
        #: Reads the configuration again for reload() (the command line's overrides
        #: applied); by default the file the configuration came from.
        path = config.path
        self.reload_config = reload_config or (
            None if path is None else lambda: load_config(path))
        self.runtime = RuntimeDir()
        self._on_event = on_event
        self.events = EventLog()
        self.traffic = Traffic()
        self._on_output = on_output or log_line
        self.pool = Pool(config, self.runtime.path, on_output=self._output,
                         on_event=self._event)
        self.proxy = FrontServer(config, self.pool, on_request=self.traffic.record)
        self.metrics = Metrics(self)
        self.admin = AdminServer(self, admin_socket_path(config)) if admin else None
        bind = config.server.metrics_bind
        self.probes = ProbeServer(self, bind) if bind is not None else None
        self.sampler: Sampler | None = Sampler(self._targets, interval=sample_interval,
                                               smaps_interval=smaps_interval)
        self._target_map: dict[int, ProcessInfo] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._started = False
        #: Set when stop() begins: readiness probes fail from then on.
        self.stopping = False
        self.started_at = time.time()
        #: The first TCP address listened on (None: only Unix sockets).
        self.address: tuple[str, int] | None = None
        self.listeners: list[Listener] = []
        self.service = ServiceState(self.pool, self.traffic)
        self.stopped = asyncio.Event()
        #: Set by request_stop() (the ``stop`` operation, SIGTERM): whoever runs the server
        #: (the headless runner, the embedded dashboard) then stops it.
        self.stop_requested = asyncio.Event()
        #: Where this process logs (None: stderr), for the status and the dashboard.
        self.log_file: str | None = None
        #: Started by a dashboard (tui_passenger.launch): one attached stops it on quit.
        self.dashboard_owned = False

    async def start(self) -> None:
        """Listen on the public addresses and the admin socket, start each app's minimum.

        Nothing of another instance is touched: a live admin socket is refused before
        anything is created, and a start that fails (StartError) closes and removes only
        what it made, its runtime directory included.
        """
        if self._started:
            raise RuntimeError("Server.start() called twice")
        self._started = True
        become_subreaper()
        raise_open_files_limit()  # bursts of clients; workers inherit it too
        try:
            if self.admin is not None:
                self.admin.check()
            self.listeners = open_listeners(self.config.server, _address_fix(self.config))
            if self.admin is not None:
                await self.admin.start()
            if self.probes is not None:
                await self.probes.start()
            await self.proxy.start([listener.sock for listener in self.listeners])
        except BaseException as exc:
            await self._release()
            self.service.failed(exc)
            raise
        self.address = next((a for a in (x.tcp_address for x in self.listeners) if a), None)
        self.pool.start()
        self.refresh_targets()
        if self.sampler is not None:
            self.sampler.start()
        self._ticker = asyncio.ensure_future(self._tick_forever())
        log.info("listening on %s", ", ".join(a + "/" if a.startswith("http") else a
                                              for a in self.addresses))
        self.service.started()

    async def _release(self) -> None:
        """Close and remove what this server made: its listeners (and their socket files),
        its admin socket, its probe listener, its runtime directory. Never anything of
        another instance."""
        if self.probes is not None:
            await self.probes.stop()
        for listener in self.listeners:
            listener.close()
        self.listeners = []
        if self.admin is not None:
            await self.admin.stop()
        self.runtime.close()

    @property
    def addresses(self) -> list[str]:
        """Every public address: ``http://HOST:PORT``, ``unix:PATH``."""
        return [listener.name for listener in self.listeners]

    @property
    def url(self) -> str:
        """The public base URL (the first TCP address; else the first Unix socket)."""
        if self.address is None:
            return self.addresses[0]
        return "http://" + format_address(*self.address)

    @property
    def notifier(self) -> Notifier:
        """The one object that talks to systemd (ready, reloading, stopping, status)."""
        return self.service.notifier

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to shutdown_timeout), stop all."""
        grace = self.config.server.shutdown_timeout
        self.stopping = True
        self.service.stopping()
        # From now on responses say "Connection: close" and idle keep-alive clients are let
        # go, so that they reconnect elsewhere instead of getting 503s during the drain.
        self.proxy.stop_accepting()
        self.proxy.begin_closing()
        if self._ticker is not None:
            self._ticker.cancel()
        if self.sampler is not None:
            await asyncio.to_thread(self.sampler.stop)
        await self.pool.close(grace)
        await self.proxy.close(grace=1.0)
        # The probes answer through the drain (readyz: 503, shutting down), for the load
        # balancer to see this instance leave; _release() stops them last.
        await self._release()
        self.stopped.set()
        log.info("stopped")

    def request_stop(self) -> None:
        """Ask whoever runs this server to stop it (gracefully, with stop())."""
        self.stop_requested.set()

    def reopen_logs(self) -> dict[str, str | None]:
        """Open the main log's file (if it goes to one) and the access log's again by their
        names (see Operations.reopen_logs); which were reopened."""
        log_file = None
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                old = handler.setStream(handler._open())  # flushes the old one
                if old is not None:
                    old.close()
                log_file = handler.baseFilename
        return {"log_file": log_file, "access_log": self.proxy.reopen_access_log()}

    def loop_problem(self) -> str | None:
        """Why the manager's periodic work is not running (liveness), or None if it is."""
        ticker = self._ticker
        if ticker is None or not ticker.done() or self.stopping:
            return None
        failure = None if ticker.cancelled() else ticker.exception()
        return f"the manager's periodic task stopped: {failure!r}"

    def reload(self) -> reload.ReloadPlan:
        """Read the configuration file again and apply it (see :mod:`tui_passenger.reload`):
        apps added, removed, restarted or updated, ``[server]`` keys applied or reported as
        needing a restart. Returns what was done. The one place a reload happens: SIGHUP,
        ``ctl reload`` and the dashboard come here through Operations.reload (systemd is
        told RELOADING=1 once the file has been read, READY=1 after).

        Raises ConfigError if the file has an error (then nothing changed), ReloadError if
        there is no file to read or the instance is shutting down.
        """
        if self.reload_config is None:
            raise reload.ReloadError("this instance was not started from a configuration file")
        if self.pool.closing:
            raise reload.ReloadError("the instance is shutting down")
        new = self.reload_config()  # a file with an error raises here: nothing changed
        self.notifier.reloading()
        try:
            reload_plan = reload.plan(self.config, new)
            reload.apply(self, reload_plan)
        finally:
            self.notifier.ready()
        return reload_plan

    # -- what the sampler looks at -------------------------------------------------------

    def refresh_targets(self) -> None:
        """Rebuild the set of processes to sample (on the loop; the sampler thread reads the
        latest map, which is replaced, never changed in place)."""
        targets = {os.getpid(): ProcessInfo("manager", None, frozenset())}
        for group in self.pool.groups.values():
            for preloader in group.spawner.preloaders():
                if preloader.pid is not None:  # set on every listed one; narrows the type
                    targets[preloader.pid] = ProcessInfo(preloader.role, group.name,
                                                         preloader.own_fds)
            for process in group.processes:
                targets[process.pid] = ProcessInfo("worker", group.name,
                                                   process.worker.own_fds)
        self._target_map = targets

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.traffic.roll()
            # Preloaders come and go outside the pool's events (idle exit, restart).
            self.refresh_targets()
            self.enforce_memory_limits()
            record_memory(self)  # the memory histories, whether or not anyone looks

    def enforce_memory_limits(self) -> None:
        """Recycle (drain, then stop) workers whose private memory is above memory_limit."""
        if self.sampler is None:
            return
        samples = self.sampler.current  # the server's own reading: not someone looking
        for group in self.pool.groups.values():
            limit = group.app.memory_limit * 1024 * 1024
            if not limit:
                continue
            for process in list(group.processes):
                sample = samples.get(process.pid)
                memory = sample.memory if sample is not None else None
                if process.state == "ready" and memory is not None \
                        and memory.private_dirty > limit:
                    self.pool.drain(process, f"memory_limit ({group.app.memory_limit} MiB) "
                                             f"exceeded: {memory.private_dirty >> 20} MiB private")

    def _targets(self) -> dict[int, ProcessInfo]:
        return self._target_map

    async def sample_now(self) -> None:
        """A full sample (memory and fds included) of every process, off the event loop."""
        self.refresh_targets()
        if self.sampler is not None:
            await asyncio.to_thread(self.sampler.sample_now)

    def _output(self, line: OutputLine) -> None:
        self.events.add("output", line.text, app=line.app, pid=line.pid, role=line.role,
                        stream=line.stream, level="warning" if line.stream == "stderr" else "info")
        self._on_output(line)

    def _event(self, event: PoolEvent) -> None:
        for text, level in event.entries():
            self.events.add("event", text, level=level, app=event.app, pid=event.pid)
        if event.changes_processes:
            self.refresh_targets()
        self.service.on_event(event)
        if isinstance(event, Spawned):
            worker = event.process.worker
            self.metrics.observe_spawn(worker.app, worker.spawn_method,
                                       worker.spawn_duration or 0.0)
        if self._on_event is not None:
            self._on_event(event)


def _address_fix(config: Config) -> str:
    """How the operator picks another public address, for a start that cannot listen."""
    if config.server.bind:
        return "change [server] bind"
    return "choose another port with --port PORT (or [server] port)"
