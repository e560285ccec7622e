"""What the service manager (systemd) is told about a running server: ``READY=1`` once it
listens and every app has its min_instances, a one-line ``STATUS=``, ``STOPPING=1``, and
the watchdog pings (see :mod:`tui_passenger.systemd`)."""

from __future__ import annotations

from tui_passenger.eventlog import Traffic
from tui_passenger.pool import Pool
from tui_passenger.pool.events import PoolEvent, Spawned, SpawnFailed
from tui_passenger.pool.group import READY
from tui_passenger.systemd import Heartbeat, Notifier


class ServiceState:
    """The server's side of sd_notify: when it is ready, and how it is, in one line."""

    __slots__ = ("pool", "traffic", "notifier", "heartbeat", "ready_sent")

    def __init__(self, pool: Pool, traffic: Traffic, notifier: Notifier | None = None) -> None:
        self.pool = pool
        self.traffic = traffic
        #: The one object that talks to systemd: a config reload calls its reloading()
        #: and ready() around the reload.
        self.notifier = Notifier.from_environment() if notifier is None else notifier
        self.heartbeat = Heartbeat(self.notifier, self.summary)
        self.ready_sent = False

    def apps_ready(self) -> bool:
        """Every app has its min_instances ready, or is failing to spawn (in backoff): one
        broken app must not keep the others from being declared up."""
        for group in self.pool.groups.values():
            ready = sum(1 for p in group.processes if p.state is READY)
            if ready < group.min_instances and group.last_error is None:
                return False
        return True

    def summary(self) -> str:
        """One line for ``STATUS=``: apps, workers, requests per second."""
        groups = self.pool.groups.values()
        rps = self.traffic.rps[-1] if self.traffic.rps else 0
        failing = [g.name for g in groups if g.last_error is not None]
        workers = sum(len(g.processes) for g in groups)
        return (f"{_count(len(groups), 'app')}, {_count(workers, 'worker')}, {rps} req/s"
                + (f"; failing to spawn: {', '.join(failing)}" if failing else ""))

    def started(self) -> None:
        """The server listens: begin STATUS and watchdog pings, READY=1 when apps are up."""
        self.heartbeat.start()
        self._check_ready()

    def failed(self, problem: object) -> None:
        """The start failed: say why in STATUS= (systemd shows it beside the failure)."""
        self.notifier.status(f"failed to start: {problem}")

    def on_event(self, event: PoolEvent) -> None:
        """A pool event: a spawn may have made every app ready."""
        if not self.ready_sent and isinstance(event, (Spawned, SpawnFailed)):
            self._check_ready()

    def stopping(self) -> None:
        """STOPPING=1; no more pings."""
        self.notifier.stopping()
        self.heartbeat.stop()

    def _check_ready(self) -> None:
        if self.ready_sent or not self.notifier.enabled or not self.apps_ready():
            return
        self.ready_sent = True
        self.notifier.ready(self.summary())


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
