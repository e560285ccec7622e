"""The dashboard: one snapshot a second rendered into a header, a process tree, a detail
panel and a log; keys send intents to the core.

Only this App touches the terminal. It renders the typed snapshot of
:mod:`tui_passenger.snapshot` and calls the :class:`~tui_passenger.core.Core` intents.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Input

from tui_passenger.core import Core
from tui_passenger.snapshot import Snapshot
from tui_passenger.tui import heap
from tui_passenger.tui.commands import DashboardCommands
from tui_passenger.tui.folding import ProcessTree
from tui_passenger.tui.intents import INTENT_ERRORS, Intents
from tui_passenger.tui.rows import SORTS, Selection, build_rows, select
from tui_passenger.tui.screens.help import HelpScreen
from tui_passenger.tui.theme_picker import ThemePicker
from tui_passenger.tui.themes import APP_VARIABLES, DEFAULT_THEME, fallback_theme, load_themes
from tui_passenger.tui.widgets.detail import DetailPanel
from tui_passenger.tui.widgets.header import DashboardHeader
from tui_passenger.tui.widgets.logs import LogPanel
from tui_passenger.tui.widgets.process_table import ProcessTable

#: The share of a core the periodic refreshes may take (this process's CPU and the
#: server's time answering them); above it they come less often...
REFRESH_BUDGET = 0.05
#: ...and this share while the server's manager is busy (its CPU at BUSY_CPU % of a core or
#: more): then it is the bottleneck, and whatever watching costs is taken from requests...
BUSY_BUDGET = 0.01
BUSY_CPU = 50.0
#: ...but at least every this many seconds.
MAX_INTERVAL = 5.0
#: A periodic refresh due, or whose data lands, this soon after a key press waits until
#: then: the key's effect is drawn first, not behind a whole tree's fetch and repaint...
KEY_FIRST = 0.25
#: However fast keys come, a periodic refresh waits no longer than this.
MAX_HOLD = 1.0
KEY_NAMES = {"plus": "+", "equals_sign": "=", "minus": "-", "slash": "/",
             "question_mark": "?", "escape": "Esc", "enter": "Enter", "left": "←",
             "right": "→"}


class FilterInput(Input):
    """The row filter; Esc clears it and gives the keys back to the table."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear_filter", "Clear filter", id="filter.clear"),
        Binding("enter", "done", "Keep filter", show=False, id="filter.done"),
    ]

    def action_clear_filter(self) -> None:
        """Empty the filter and hide it."""
        self.value = ""
        self.app.query_one(ProcessTable).focus()

    def action_done(self) -> None:
        """Keep the filter, go back to the table."""
        self.app.query_one(ProcessTable).focus()


class Dashboard(Intents):
    """The tui-passenger dashboard for one :class:`~tui_passenger.core.Core`."""

    CSS_PATH = "dashboard.tcss"
    TITLE = "tui-passenger"
    COMMANDS = App.COMMANDS | {DashboardCommands}
    # Not annotated ClassVar: Textual declares it as an instance variable.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS: ClassVar[list[BindingType]] = [
        # Help first: the footer keeps it however narrow the terminal.
        Binding("question_mark", "help", "Help", id="help"),
        Binding("plus,equals_sign", "scale_up", "Scale+", id="scale_up"),
        Binding("minus", "scale_down", "Scale-", id="scale_down"),
        Binding("k,f9", "kill", "Kill", id="kill"),
        Binding("r", "restart", "Restart", id="restart"),
        Binding("m", "spawn_method", "Smart/direct", id="spawn_method"),
        Binding("g", "refork", "Refork", id="refork"),
        Binding("p", "pause", "Pause", id="pause"),
        Binding("R", "reload", "Reload config", id="reload", show=False),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("s", "sort", "Sort", id="sort"),
        Binding("f", "detail_tab", "Mem/fds", id="detail_tab"),
        Binding("t", "theme", "Theme", id="theme", show=False),
        Binding("w", "stack", "Stack", id="stack"),
        Binding("escape", "clear_filter", "Clear filter", id="clear_filter", show=False),
        Binding("q", "quit", "Quit", id="quit"),
        Binding("d", "detach", "Detach", id="detach", show=False),
    ]

    class Refreshed(Message):
        """One tick's data: a snapshot and the log entries since the last tick."""

        def __init__(self, snapshot: Snapshot, entries: list[dict[str, Any]],
                     fds_of: tuple[int, ...] | None = None, periodic: bool = False) -> None:
            super().__init__()
            self.snapshot = snapshot
            self.entries = entries
            #: The pids whose fds it lists (None: all).
            self.fds_of = fds_of
            #: From the periodic tick (not asked for by an intent or a key): it may wait.
            self.periodic = periodic
            #: When it was first held back for a key press (monotonic).
            self.held_at: float | None = None

    def __init__(self, core: Core, *, keymap: dict[str, str] | None = None,
                 theme_dir: Path | None = None, interval: float = 1.0) -> None:
        super().__init__()
        self.core = core
        self.keymap = dict(keymap or {})
        self.theme_dir = theme_dir
        self.interval = interval
        #: The latest snapshot (None until the first tick).
        self.snapshot: Snapshot | None = None
        self.sort_mode = SORTS[0]
        self._seq = 0
        #: (pid, start time) of the instance whose log ``_seq`` refers to.
        self._instance: tuple[int, float] | None = None
        #: app → (min_instances asked for, when): presses faster than the refresh add up.
        self._scale_targets: dict[str, tuple[int, float]] = {}
        self._fetching = False
        #: A refresh was asked for while one was under way (after an intent): it runs
        #: again at once, so the intent's effect does not wait for the next tick; the one
        #: under way predates the intent's answer, and is not drawn (its log entries wait
        #: here for the next one): one tree's fetch and repaint follow an intent, not two.
        self._refetch = False
        self._stale_entries: list[dict[str, Any]] = []
        #: Reloads asked for here whose outcome was notified already (from their answer):
        #: their entries in the log are not notified again. Others (SIGHUP, ctl reload) are.
        self._own_reloads = 0
        self._quitting = False
        self._timer: Timer | None = None
        #: Process CPU time + the server's time answering, at the last periodic refresh.
        self._cost_mark = self._cost()
        #: The refresh period the table's subtitle shows (None: the normal one).
        self._shown_every: float | None = None
        #: The pids whose fds the shown snapshot lists (None: all).
        self._fds_of: tuple[int, ...] | None = None
        #: The widgets a refresh renders into (see _attached), once mounted.
        self._leaves: tuple[Widget, ...] = ()
        #: When a key was last pressed (monotonic), a periodic refresh held back until
        #: KEY_FIRST after it, and when the periodic tick was first put off for one.
        self._key_at = -MAX_INTERVAL
        self._held: Dashboard.Refreshed | None = None
        self._put_off: float | None = None
        #: Whether what the first tree's drawing left alive was frozen (see tui.heap).
        self._frozen = False

    def get_theme_variable_defaults(self) -> dict[str, str]:
        """Fallbacks for the dashboard's own CSS variables (themes may override them)."""
        return dict(APP_VARIABLES)

    def compose(self) -> ComposeResult:
        # The widgets a tick renders into are held, not queried: a tick may land while the
        # app is closing and its widgets are being removed.
        self.header = DashboardHeader(self.core.description, id="header")
        self.filter_input = FilterInput(
            placeholder="filter: app name or pid  (Enter keeps, Esc clears)", id="filter")
        self.table = ProcessTree(id="processes")
        self.detail = DetailPanel(id="detail")
        self.log_panel = LogPanel(id="log")
        yield self.header
        yield self.filter_input
        with Horizontal(id="main"):
            yield self.table
            yield self.detail
        yield self.log_panel
        yield Footer()

    def on_mount(self) -> None:
        self._load_themes()
        if self.keymap:
            self.set_keymap(self.keymap)
        table = self.table
        table.border_title = "processes"
        table.border_subtitle = self._subtitle()
        self.log_panel.border_title = "log"
        table.focus()
        self._cost_mark = self._cost()  # starting up is no refresh's cost
        self.call_later(self._periodic)

    def _load_themes(self) -> None:
        themes, errors = load_themes(self.theme_dir)
        for theme in themes:
            self.register_theme(theme)
        for error in errors:
            self.notify(error, title="theme", severity="warning", markup=False)
        if DEFAULT_THEME not in self.available_themes:
            self.register_theme(fallback_theme())
        self.theme = DEFAULT_THEME

    # -- the tick ---------------------------------------------------------------------

    async def _periodic(self) -> None:
        wait, self._put_off = self._hold(self._put_off)
        if wait > 0 and not self._quitting:  # a key was just pressed: its effect first
            self._timer = self.set_timer(wait, self._periodic)
            return
        await self.tick()
        if not self._quitting:
            self._timer = self.set_timer(self._next_delay(), self._periodic)

    def _cost(self) -> float:
        """Seconds of CPU watching has cost so far: this process's, and the server's time
        answering its reads (when it is another process)."""
        return time.process_time() + self.core.served_seconds

    def _next_delay(self) -> float:
        """Seconds to the next periodic refresh: ``interval``, or longer while a refresh
        costs more than REFRESH_BUDGET of a core (a tree of hundreds of workers), or
        BUSY_BUDGET while the server's manager is busy: watching must stay cheap, and
        must not take from a loaded server. An intent still refreshes at once."""
        cost = self._cost()
        used, self._cost_mark = cost - self._cost_mark, cost
        snap = self.snapshot
        busy = snap is not None and (snap.manager.cpu or 0.0) >= BUSY_CPU
        budget = BUSY_BUDGET if busy else REFRESH_BUDGET
        delay = min(MAX_INTERVAL, max(self.interval, used / budget))
        # Say so when slowed: the numbers are that old at most.
        every = round(delay) if delay > 1.5 * self.interval else None
        if every != self._shown_every:
            self._shown_every = every
            self.table.border_subtitle = self._subtitle(every)
        return delay

    def _subtitle(self, every: float | None = None) -> str:
        """The process table's subtitle: the sort order, and the refresh when slowed."""
        return f"sort: {self.sort_mode}" + (f" · refresh {every:.0f} s" if every else "")

    def _hold(self, since: float | None) -> tuple[float, float | None]:
        """For a periodic refresh held back since ``since`` (None: not yet): the seconds it
        waits now for the last key press, and since when it has waited; (0, None) when it
        waits no more (no key within KEY_FIRST, or held MAX_HOLD already)."""
        now = time.monotonic()
        wait = self._key_at + KEY_FIRST - now
        if wait <= 0:
            return 0.0, None
        since = since or now
        return (wait, since) if now - since < MAX_HOLD else (0.0, None)

    async def on_event(self, event: events.Event) -> None:
        """Note when a key is pressed (see KEY_FIRST), then handle the event as usual."""
        if isinstance(event, events.Key):
            self._key_at = time.monotonic()
            self.call_after_refresh(heap.collect_if_due)
        await super().on_event(event)

    async def tick(self, urgent: bool = False) -> None:
        """Fetch one snapshot and the new log entries, and post them as one message.
        ``urgent`` (after an intent): if a fetch is under way, fetch again after it."""
        if self._quitting:
            return
        if self._fetching:
            self._refetch = self._refetch or urgent
            return
        self._fetching = True
        self._refetch = False
        # Only the selected process's fds are shown: the others' are not fetched.
        fds_of = self.core.fds_of = self._fds_wanted()
        try:
            since = self._seq  # both at once: one round trip's wait, not two
            snap, (seq, entries) = await asyncio.gather(self.core.snapshot(),
                                                        self.core.events(since))
            instance = (snap.server.pid, snap.server.started)
            if since and instance != self._instance:
                # Another instance (restarted, maybe with more log than we had read): its
                # log is read from the start.
                since = 0
                seq, entries = await self.core.events(since)
        except (*INTENT_ERRORS, ValueError) as exc:  # ValueError: not a status snapshot
            self.header.set_class(True, "-disconnected")
            self.notify(f"no snapshot: {exc}", severity="error", markup=False)
            return
        finally:
            self._fetching = False
        if seq < since:  # the log started again all the same
            seq, entries = await self.core.events(0)
        self._instance = instance
        self._seq = seq
        entries[:0], self._stale_entries = self._stale_entries, []
        if self._refetch:  # what was fetched predates an intent's answer: fetch that
            self._stale_entries = entries
            self.call_later(self.tick, True)
            return
        self.post_message(self.Refreshed(snap, entries, fds_of, periodic=not urgent))

    def on_dashboard_refreshed(self, message: Refreshed) -> None:
        """Render one snapshot into every widget, in one batch; a periodic one that lands
        just after a key press first lets the key's effect be drawn (see KEY_FIRST)."""
        if not self._attached():
            return  # the app is closing: its widgets are being removed
        held, self._held = self._held, None
        if held is not None and held is not message:  # superseded: show its log entries
            message.entries[:0] = held.entries
        if message.periodic:
            wait, message.held_at = self._hold(message.held_at)
            if wait > 0:  # bounded by MAX_HOLD: keys held down do not starve it
                self._held = message
                self.set_timer(wait, self._release)
                return
        self._show_snapshot(message)

    def _release(self) -> None:
        """Show the periodic refresh held back for a key press (unless shown since, or
        another key came meanwhile: then it waits for that one too)."""
        if self._held is not None:
            self.on_dashboard_refreshed(self._held)

    def _show_snapshot(self, message: Refreshed) -> None:
        snap = self.snapshot = message.snapshot
        self._fds_of = message.fds_of
        with self.batch_update():
            self.header.set_class(False, "-disconnected")
            self.header.show(snap)
            self.set_class(not snap.sampling, "-paused")
            self._show_rows()
            self._show_detail()
            self.log_panel.add_entries(message.entries)
            self._notify_reloads(message.entries)
            self.log_panel.add_warnings(snap)
        if not self._frozen:  # the first tree is drawn: what starting up made stays
            self._frozen = True
            self.call_after_refresh(self._freeze_heap)
        else:
            self.call_after_refresh(heap.collect_if_due)

    def _freeze_heap(self) -> None:
        if not self._quitting:
            heap.freeze()

    def on_unmount(self) -> None:
        """Hand the frozen objects back to the collector (see tui.heap)."""
        if self._frozen:
            heap.unfreeze()

    def _notify_reloads(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            if entry.get("kind") != "reload":
                continue
            if self._own_reloads:
                self._own_reloads -= 1
                continue
            error = entry.get("level") == "error"
            self.notify(str(entry.get("text")), title="configuration",
                        severity="error" if error else "information", markup=False)

    def _attached(self) -> bool:
        if not self._leaves:  # queried once: the panel's widgets stay (a query costs ms)
            self._leaves = (self.header, self.table, self.log_panel,
                            *self.detail.query("*"))
        return all(widget.is_attached for widget in self._leaves)

    def _fds_wanted(self) -> tuple[int, ...]:
        """The pids whose fds the detail panel needs: the selected process's."""
        selection = self.selection()
        return () if selection is None or selection.process is None else (
            selection.process.pid,)

    def _fetch_fds(self) -> None:
        """If the fds tab shows a process whose fds the snapshot lacks, fetch them now."""
        if not self.detail.fds_shown or self._fds_of is None:
            return
        if not set(self._fds_wanted()) <= set(self._fds_of):
            self.call_later(self.tick, True)

    def _show_rows(self) -> None:
        needle = self.filter_input.value
        self.table.show(build_rows(self.snapshot, self.sort_mode, needle))

    def _show_detail(self) -> None:
        self.detail.show(self.selection())

    def selection(self) -> Selection | None:
        """What the cursor is on, in the latest snapshot."""
        return select(self.snapshot, self.table.selected_key)

    @on(DataTable.RowHighlighted, "#processes")
    def _row_highlighted(self) -> None:
        if self._attached():
            self._show_detail()
            self._fetch_fds()

    @on(Input.Changed, "#filter")
    def _filter_changed(self) -> None:
        self.filter_input.set_class(bool(self.filter_input.value),
                                              "-active")
        self._show_rows()

    # -- view -------------------------------------------------------------------------

    def action_clear_filter(self) -> None:
        """Clear the row filter."""
        if self.filter_input.value:
            self.filter_input.value = ""

    def action_filter(self) -> None:
        """Show the filter input and focus it."""
        self.filter_input.focus()

    def action_sort(self) -> None:
        """Cycle the sort order within each app."""
        self.sort_mode = SORTS[(SORTS.index(self.sort_mode) + 1) % len(SORTS)]
        self.table.border_subtitle = self._subtitle(self._shown_every)
        self._show_rows()

    def action_detail_tab(self) -> None:
        """Switch the detail panel between memory and fds."""
        self.detail.toggle()
        self._fetch_fds()

    def action_theme(self) -> None:
        """Pick a theme."""

        def picked(name: str | None) -> None:
            if name:
                self.theme = name

        self.push_screen(ThemePicker(), picked)

    def key_help(self) -> list[tuple[str, str]]:
        """(keys, description) for every binding, as currently mapped."""
        rows = []
        for binding in (*self.BINDINGS, *ProcessTree.BINDINGS):
            assert isinstance(binding, Binding)
            keys = self.keymap.get(binding.id or "", binding.key)
            shown = ", ".join(KEY_NAMES.get(k.strip(), k.strip()) for k in keys.split(","))
            action = getattr(self, f"action_{binding.action}", None)
            doc = (action.__doc__ or binding.description).strip().splitlines()[0]
            rows.append((shown, doc))
        rows.append(("Ctrl+P", "Command palette: every action by name"))
        if self.core.log_file is not None:
            rows.append(("log", str(self.core.log_file)))
        return rows

    def action_help(self) -> None:
        """Show every key and what it does."""
        self.push_screen(HelpScreen(self.key_help()))

    def _begin_closing(self) -> bool:
        """Begin closing (False if already begun): no more ticks."""
        if self._quitting:
            return False
        self._quitting = True
        if self._timer is not None:
            self._timer.stop()
        return True

    async def action_quit(self) -> None:
        """Quit; a server started with the dashboard first shuts down gracefully."""
        if not self._begin_closing():
            return
        if not self.core.owned:
            self.exit()
            return
        self.notify("shutting down… (in-flight requests may finish)", timeout=60)

        async def shutdown() -> None:
            try:
                await self.core.stop()
            finally:
                self.exit()

        self.run_worker(shutdown(), group="quit", exit_on_error=False)

    async def action_detach(self) -> None:
        """Leave the server running without the dashboard (see it again with attach)."""
        if not self.core.detachable:
            self.notify("the server runs inside this dashboard (--embedded): it cannot be "
                        "left running; q quits", severity="warning")
            return
        if self._begin_closing():
            await self.core.detach()
            self.exit()

