"""The top lines: address, uptime, traffic, memory saving, and two sparklines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from tui_passenger.snapshot import Snapshot
from tui_passenger.tui import format as fmt
from tui_passenger.tui.widgets.texts import show_text

#: Seconds of history the sparklines show.
HISTORY = 60


def _last(values: Sequence[float]) -> float:
    return values[-1] if values else 0


class SparkRow(Horizontal):
    """A label with the latest value, then a sparkline of the history."""

    def __init__(self, label: str, unit: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._label, self._unit = label, unit
        # Held, not queried: a tick may land while the app is closing and children go.
        self._text = Static(label, classes="spark-label")
        self._spark = Sparkline([], classes="spark")

    def compose(self) -> ComposeResult:
        yield self._text
        yield self._spark

    def relabel(self, label: str) -> None:
        """Name what the row shows (from the next show())."""
        self._label = label

    def show(self, values: Sequence[float]) -> None:
        """Show the last :data:`HISTORY` values."""
        values = list(values[-HISTORY:])
        latest = _last(values)
        number = f"{latest:.0f}" if latest >= 10 or float(latest).is_integer() else f"{latest:.1f}"
        show_text(self._text, f"{self._label} {number}{self._unit}")
        if self._spark.data != values:
            self._spark.data = values or [0]


class DashboardHeader(Horizontal):
    """Server address and uptime, req/s, queue, 503s, memory, and sparklines."""

    def __init__(self, description: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._server = Static(description, id="header-server")
        self._load = Static("connecting…", id="header-load")
        self._rps = SparkRow("req/s", "", id="rps")
        self._p99 = SparkRow("p99", "ms", id="p99")

    def compose(self) -> ComposeResult:
        with Vertical(id="summary"):
            yield self._server
            yield self._load
        with Vertical(id="sparks"):
            yield self._rps
            yield self._p99

    def show(self, snap: Snapshot) -> None:
        """Render one snapshot."""
        server, traffic, totals = snap.server, snap.traffic, snap.totals
        paused = not snap.sampling
        self.set_class(paused, "-paused")
        first = Text(no_wrap=True, overflow="ellipsis")
        first.append(server.url or "(no public address)", style="bold")
        others = [a for a in server.addresses if a != server.url]
        if others:  # [server] bind: the rest, shortest first, as the width allows
            first.append("  + " + ", ".join(sorted(others, key=len)))
        first.append(f"  up {fmt.long_duration(server.uptime)}")
        first.append(f"  {server.processes}/{server.max_pool_size} procs")
        if paused:
            first.append("  ⏸ sampling paused", style="bold reverse")
        show_text(self._server, first)

        queue = sum(app.queue for app in snap.apps)
        second = Text(no_wrap=True, overflow="ellipsis")
        second.append(f"req/s {_last(traffic.rps):.0f}")
        second.append(f"  queue {queue}")
        oldest = max(snap.apps, key=lambda app: app.queue_oldest, default=None)
        if oldest is not None and oldest.queue_oldest >= 0.1:
            # A queue that moves in milliseconds is no news; one that waits is shown with
            # how close it is to its app's max_request_queue_time (bold past half of it).
            limit = f"/{oldest.queue_time_limit:g}" if oldest.queue_time_limit else ""
            second.append(f" (waited {oldest.queue_oldest:.1f}{limit} s)",
                          style="bold" if oldest.queue_oldest > oldest.queue_time_limit / 2
                          else "")
        second.append(f"  503s {server.errors_503}", style="bold" if server.errors_503 else "")
        second.append(f"  PSS {fmt.size(totals.pss)}")
        if totals.saving:
            second.append(f"  saves {fmt.size(totals.saving)}"
                          f" of {fmt.size(totals.direct_estimate)} direct")
        show_text(self._load, second)
        self._rps.show(traffic.rps)
        self._p99.show(traffic.p99_ms)
