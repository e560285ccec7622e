"""``/metrics`` in the Prometheus text format, from the same snapshot as ``status``.

A registry per server (no global state): gauges and counters are read from the snapshot at
scrape time; spawn durations go into a histogram as workers become ready.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tui_passenger.snapshot import TOTAL_KEYS
from tui_passenger.status import snapshot

if TYPE_CHECKING:
    from tui_passenger.server import Server

PREFIX = "tui_passenger"


class SnapshotCollector(Collector):
    """Turns the status snapshot into metric families."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = snapshot(self.server)
        requests = CounterMetricFamily(f"{PREFIX}_requests", "Requests answered, by app",
                                       labels=["app"])
        responses = CounterMetricFamily(f"{PREFIX}_responses", "Responses by status class",
                                        labels=["class"])
        queue = GaugeMetricFamily(f"{PREFIX}_queue_length", "Requests waiting for a worker",
                                  labels=["app"])
        processes = GaugeMetricFamily(f"{PREFIX}_processes", "Worker processes by state",
                                      labels=["app", "state"])
        restarts = CounterMetricFamily(f"{PREFIX}_worker_restarts",
                                       "Workers that exited unexpectedly", labels=["app"])
        memory = GaugeMetricFamily(f"{PREFIX}_memory_bytes",
                                   "Memory of an app's workers and preloader, by kind",
                                   labels=["app", "kind"])
        websockets = GaugeMetricFamily(f"{PREFIX}_websockets", "Open WebSockets, by app",
                                       labels=["app"])
        for app in state.apps:
            name = app.name
            requests.add_metric([name], app.requests)
            websockets.add_metric([name], app.websockets)
            queue.add_metric([name], app.queue)
            restarts.add_metric([name], app.crashes)
            counts = dict.fromkeys(("ready", "busy", "draining", "stopping"), 0)
            for process in app.processes:
                counts[process.state] = counts.get(process.state, 0) + 1
            counts["spawning"] = app.spawning
            for label, count in counts.items():
                processes.add_metric([name, label], count)
            for kind in TOTAL_KEYS:
                memory.add_metric([name, kind], getattr(app.memory, kind))
        server = state.server
        for label, count in server.responses.items():
            responses.add_metric([label], count)
        yield from (requests, responses, queue, processes, restarts, memory, websockets)
        yield CounterMetricFamily(f"{PREFIX}_503", "Requests refused with 503 (queue full, "
                                  "shutting down)", value=server.errors_503)
        yield CounterMetricFamily(f"{PREFIX}_502", "Requests answered 502 (worker failed)",
                                  value=server.errors_502)
        yield CounterMetricFamily(f"{PREFIX}_retries", "Requests retried on another worker",
                                  value=server.retries)


class Metrics:
    """The registry of one server."""

    def __init__(self, server: Server) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(server))
        self.spawn_seconds = Histogram(
            f"{PREFIX}_spawn_duration_seconds", "Time from spawn request to ready",
            ["app", "method"], registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

    def observe_spawn(self, app: str, method: str, seconds: float) -> None:
        """A worker became ready ``seconds`` after it was asked for."""
        self.spawn_seconds.labels(app, method).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
