"""The panel for the selected row: its requests in flight, memory (numbers, a shared/private
bar, sparklines over time) and fds."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from tui_passenger.snapshot import AppStatus, FdEntry, MemoryUsage
from tui_passenger.tui import format as fmt
from tui_passenger.tui.rows import Selection
from tui_passenger.tui.widgets.texts import show_text
from tui_passenger.tui.widgets.trends import MemoryTrend, requests_text

MEMORY_ROWS = (("PSS", "pss"), ("USS", "uss"), ("shared", "shared"),
               ("private dirty", "private_dirty"), ("swap", "swap"))


class MemoryBar(Widget):
    """One line: the shared part of a process's memory, then its private part."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"memory-bar--shared", "memory-bar--private"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._shared = 0
        self._private = 0

    def set_parts(self, shared: int, private: int) -> None:
        """Shared and private bytes."""
        if (shared, private) != (self._shared, self._private):
            self._shared, self._private = shared, private
            self.refresh()

    def render(self) -> Text:
        width = max(1, self.size.width)
        total = self._shared + self._private
        if total <= 0:
            return Text("·" * width, style="dim")
        shared = round(width * self._shared / total)
        text = Text(no_wrap=True)
        text.append("█" * shared, style=self.get_component_rich_style("memory-bar--shared"))
        text.append("█" * (width - shared),
                    style=self.get_component_rich_style("memory-bar--private"))
        return text


def _memory_text(title: str, memory: MemoryUsage | None) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(title + "\n", style="bold")
    if memory is None:
        text.append("not sampled yet")
        return text
    for label, key in MEMORY_ROWS:
        text.append(f"{label:<14}{fmt.size(getattr(memory, key)):>7}\n")
    text.rstrip()
    return text


def _legend(memory: MemoryUsage | None, bar: MemoryBar) -> Text:
    if memory is None:
        return Text("")
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("■", style=bar.get_component_rich_style("memory-bar--shared"))
    text.append(f" shared {fmt.size(memory.shared)}   ")
    text.append("■", style=bar.get_component_rich_style("memory-bar--private"))
    text.append(f" private {fmt.size(memory.private_dirty)}")
    return text


def _saving_text(app: AppStatus) -> Text:
    memory = app.memory
    text = Text()
    text.append(f"app {app.name}: PSS {fmt.mebibytes(memory.pss)}\n", style="bold")
    if app.refork_hint:
        text.append(f"⚠ {app.refork_hint} (g: refork)\n", style="bold")
    if app.spawn_method == "smart":
        text.append(f"saving vs direct: {fmt.mebibytes(memory.saving)}\n")
        text.append("(estimated: a direct worker would hold its RSS privately)", style="dim")
    else:
        text.append("direct spawning: nothing shared, no saving", style="dim")
    return text


class MemoryView(Widget):
    """Numbers, bar and app totals for the selection."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Held, not queried: a tick may land while the app is closing and children go.
        self._numbers = Static(id="memory-numbers")
        self._legend = Static(id="memory-legend")
        self._bar = MemoryBar(id="memory-bar")
        self._trend = MemoryTrend(id="memory-trend")
        self._app = Static(id="memory-app")

    def compose(self) -> ComposeResult:
        yield self._numbers
        with Vertical(id="memory-side"):
            yield self._legend
            yield self._bar
            yield self._trend
            yield self._app

    def show(self, selection: Selection | None) -> None:
        """Render the selection (None: nothing selected)."""
        numbers = self._numbers
        if selection is None:
            show_text(numbers, "nothing selected")
            return
        memory: MemoryUsage | None
        if selection.process is None:
            title, memory = f"{selection.app.name} (app total)", selection.app.memory
        else:
            title, memory = f"{selection.kind} {selection.process.pid}", selection.process.memory
        show_text(numbers, _memory_text(title, memory))
        bar = self._bar
        show_text(self._legend, _legend(memory, bar))
        if memory is None:
            bar.set_parts(0, 0)
        else:
            bar.set_parts(memory.shared, memory.private_dirty)
        self._trend.show(selection)
        show_text(self._app, _saving_text(selection.app))


class FdTable(DataTable[Text]):
    """The selected process's file descriptors; warnings stand out, info rows are dim."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"fd-table--warning", "fd-table--info"}


#: The fd table's columns and their widths; the target column takes the width left.
FD_COLUMNS = (("fd", "fd", 3), ("kind", "kind", 4), ("target", "target", 0),
              ("shared", "shared", 9))
MIN_TARGET = 12


class FdView(Widget):
    """The fd table and, below it, the warning texts with their remedies."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._shown: tuple[tuple[FdEntry, ...], tuple[str, ...]] | None = None
        self._selection: Selection | None = None
        #: The target column's width as laid out.
        self.target_width = 0
        #: What is shown: (fd, level) per row, and the warning texts.
        self.levels: list[tuple[int, str]] = []
        self.notes: list[str] = []
        self._table = FdTable(id="fd-table", cursor_type="row")
        self._notes = Static(id="fd-warnings")

    def compose(self) -> ComposeResult:
        yield self._table
        yield self._notes

    def on_mount(self) -> None:
        self._lay_out(MIN_TARGET)  # until the tab is first shown and has a size

    def on_resize(self) -> None:
        # Each column has a cell padding of 1 on both sides; 1 for the vertical scrollbar.
        others = sum(width + 2 for _, _, width in FD_COLUMNS if width) + 2 + 1
        target = max(MIN_TARGET, self.size.width - others)
        if target != self.target_width:
            self._lay_out(target)
            self._shown = None
            self.show(self._selection)

    def _lay_out(self, target: int) -> None:
        self.target_width = target
        table = self._table
        table.clear(columns=True)
        for key, label, width in FD_COLUMNS:
            table.add_column(label, key=key, width=width or target)

    def show(self, selection: Selection | None) -> None:
        """Render the selection's fds (rebuilt only when they change; the list is short)."""
        self._selection = selection
        process = selection.process if selection is not None else None
        fds = process.fds if process is not None else ()
        warnings = process.warnings if process is not None else ()
        state = (fds, warnings)
        if state == self._shown:
            return
        self._shown = state
        self.levels = [(entry.fd, entry.level or "info") for entry in fds]
        self.notes = list(warnings)
        table = self._table
        table.clear()
        for entry in fds:
            level = entry.level or "info"
            style = table.get_component_rich_style(f"fd-table--{level}", partial=True) \
                if level in ("warning", "info") else None
            shared = ",".join(str(pid) for pid in entry.shared_with)
            table.add_row(*(Text(str(v), style=style or "", no_wrap=True)
                            for v in (entry.fd, entry.kind, entry.target, shared)),
                          key=f"fd:{entry.fd}")
        text = Text()
        for line in warnings:
            text.append("⚠ " + line + "\n")
        text.rstrip()
        notes = self._notes
        show_text(notes, text if warnings else Text("no fd warnings", style="dim"))
        notes.set_class(bool(warnings), "-warning")


class DetailPanel(Vertical):
    """The selected worker's requests in flight, then tabs: Memory and fds."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"detail-panel--long-request"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._requests = Static(id="detail-requests")
        self._shown_requests: Text | None = None
        self._memory = MemoryView(id="memory-view")
        self._fds = FdView(id="fd-view")

    def compose(self) -> ComposeResult:
        yield self._requests
        with TabbedContent(initial="memory-tab", id="detail-tabs"):
            with TabPane("Memory", id="memory-tab"):
                yield self._memory
            with TabPane("fds", id="fds-tab"):
                yield self._fds

    def show(self, selection: Selection | None) -> None:
        """Render the selection: its requests, and both tabs."""
        requests = requests_text(selection, self.get_component_rich_style(
            "detail-panel--long-request", partial=True))
        if requests != self._shown_requests:
            self._shown_requests = requests
            show_text(self._requests, requests)
            self._requests.display = bool(requests)
        self._memory.show(selection)
        self._fds.show(selection)

    @property
    def fds_shown(self) -> bool:
        """Whether the fds tab is the one shown."""
        return self.query_one(TabbedContent).active == "fds-tab"

    def toggle(self) -> None:
        """Switch between the two tabs (the fds tab takes more width where there is)."""
        tabs = self.query_one(TabbedContent)
        tabs.active = "fds-tab" if tabs.active == "memory-tab" else "memory-tab"

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.set_class(event.pane.id == "fds-tab", "-fds")
