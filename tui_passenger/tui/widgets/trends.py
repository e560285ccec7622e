"""What the selection is doing and how its memory went: the requests in flight on a worker,
and sparklines of a worker's shared vs private memory since it started (copy-on-write
drift) or of an app's PSS and saving vs direct spawning."""

from __future__ import annotations

from typing import Any

from rich.style import StyleType
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from tui_passenger.snapshot import ProcessStatus
from tui_passenger.tui import format as fmt
from tui_passenger.tui.rows import Selection, long_request
from tui_passenger.tui.widgets.header import SparkRow
from tui_passenger.tui.widgets.texts import show_text

#: Requests listed for the selected worker (the oldest first; the rest counted).
SHOWN_REQUESTS = 3


def requests_text(selection: Selection | None, long_style: StyleType = "bold") -> Text:
    """The selected worker's requests in flight, oldest first, a long one in
    ``long_style`` (empty for anything but a worker)."""
    process = selection.process if selection is not None else None
    if not isinstance(process, ProcessStatus) or not process.requests:
        return Text("")
    assert selection is not None
    limit = selection.app.max_request_time
    text = Text(no_wrap=True, overflow="ellipsis")
    for request in process.requests[:SHOWN_REQUESTS]:
        style = long_style if long_request(request.age, limit) else ""
        text.append(f"▶ {request.age:.1f}s ", style=style or "bold")
        text.append(f"{request.method} {request.path}\n", style=style)
    more = len(process.requests) - SHOWN_REQUESTS
    if more > 0:
        text.append(f"  and {more} more\n", style="dim")
    text.rstrip()
    return text


class MemoryTrend(Vertical):
    """Two sparklines over a life: a worker's shared and private memory, an app's PSS and
    saving vs direct (MiB; the latest value beside each)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Held, not queried: a tick may land while the app is closing and children go.
        self._title = Static("", id="trend-title")
        self._first = SparkRow("shared", "M", id="trend-first")
        self._second = SparkRow("private", "M", id="trend-second")
        #: What is shown (unchanged: nothing to update).
        self._shown: tuple[object, ...] = ()

    def compose(self) -> ComposeResult:
        yield self._title
        yield self._first
        yield self._second

    def show(self, selection: Selection | None) -> None:
        """Render the history of the selected worker or app (a preloader has none)."""
        if selection is None or selection.kind == "preloader":
            self.display = False
            return
        if selection.process is None:
            history = selection.app.memory_history
            labels, what = ("PSS", "saving"), f"app, over {fmt.duration(history.span)}"
        else:
            assert isinstance(selection.process, ProcessStatus)
            history = selection.process.memory_history
            labels, what = ("shared", "private"), f"since start, {fmt.duration(history.span)}"
        self.display = bool(history.first)
        if not history.first or self._shown == (history, labels):
            return
        self._shown = (history, labels)
        show_text(self._title, Text(f"memory ({what})", style="dim", no_wrap=True,
                                overflow="ellipsis"))
        self._first.relabel(labels[0])
        self._second.relabel(labels[1])
        self._first.show(history.first)
        self._second.show(history.second)
