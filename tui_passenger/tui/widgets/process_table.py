"""The process tree table, updated by diffing rows by key (cleared and rebuilt when a
resize changes its columns, or when many rows go at once: a fold).

A tick changes a few cells; the DataTable would render every visible cell again (its
caches are keyed by a table-wide update count), which at 150 workers costs more than the
200 ms a key may take to show. So rendered cells are kept here, keyed by the cell's value
object: a cell is rendered again only when its value was replaced (a row that moved, after
a fold or a new row above it, gets its place in its segments' styles changed, no more).

The columns of :data:`LAYOUT` always show; width beyond them goes to the name column first
(up to :data:`WIDE_NAME`: room for ``preloader``), then to a request column (the oldest
request in flight on each worker) once it can be at least :data:`MIN_REQUEST` wide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.console import JustifyMethod
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.cache import LRUCache
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowDoesNotExist, RowKey

from tui_passenger.tui.rows import COLUMNS, TreeRow, app_key, tree_labels

#: (column key, header, width): fixed widths, so nothing jumps as numbers change.
LAYOUT = (
    ("name", "process", 15),
    ("state", "state", 8),
    ("sessions", "sess", 5),
    ("processed", "done", 6),
    ("age", "age", 5),
    ("spawn", "spawn", 6),
    ("cpu", "cpu%", 4),
    ("pss", "pss", 6),
    ("private", "priv", 6),
)
#: The name column's width when the table has room for it.
WIDE_NAME = 20
MIN_REQUEST = 16
#: Every column's cell padding, left and right.
PADDING = 2
#: Rows going at once (a fold): the table is rebuilt rather than each row removed when
#: going × rows > REBUILD_RATIO × staying. DataTable.remove_row renumbers every row (150
#: removals cost over 100 ms); adding a row back costs about a hundred renumberings.
REBUILD_RATIO = 100
#: Rendered cells kept (a 60-line screen of 10 columns, each with and without the cursor).
CELL_CACHE = 4000
#: Entries the DataTable's own caches keep (lines, rows, cells): a screen's worth. Their
#: keys hold a table-wide update count, so what an update left there is never used again,
#: yet each of the 1000 (10 000 cells) it keeps by default is ~20 objects every full pass
#: of the garbage collector walks (90 rows: a pass took 40 ms, then 100 ms after a minute).
SCREEN_CACHE = 200


def _moved(lines: list[list[Segment]], row: int, column: int) -> list[list[Segment]]:
    """A cell rendered for another row index, for ``row``: the DataTable puts the cell's
    place in its segments' style (meta, for the mouse), the rest is the same."""
    place = Style.from_meta({"row": row, "column": column})
    return [[Segment(segment.text, place if segment.style is None else segment.style + place,
                     segment.control) for segment in line] for line in lines]


@dataclass(frozen=True)
class NameCell:
    """The first cell: a renderable that knows its row key (so rows can be sorted by key)."""

    key: str
    text: Text

    def __rich__(self) -> Text:
        return self.text


class ProcessTable(DataTable["NameCell | Text"]):
    """Apps, preloaders and workers as a tree; the cursor follows its row key."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "process-table--app", "process-table--warning", "process-table--dim",
        "process-table--slow",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        for cache in (self._line_cache, self._row_render_cache, self._row_renderable_cache,
                      self._cell_render_cache):
            cache.maxsize = SCREEN_CACHE
        #: Row key → (cell texts, style) as shown, to update only what changed.
        self._shown: dict[str, tuple[tuple[str, ...], Style, bool]] = {}
        self._order: dict[str, int] = {}
        self._app_of: dict[str, str] = {}
        #: (column key, width) as laid out now.
        self.layout_widths: tuple[tuple[str, int], ...] = ()
        self._rows: list[TreeRow] = []
        #: The row the cursor was on before the columns were rebuilt.
        self._reselect: str | None = None
        #: Row key → (what its cells show, the cells): kept while a fold hides the row,
        #: so that its cells (and their renderings) are the same ones when it comes back.
        self._made: LRUCache[str, tuple[tuple[tuple[str, ...], Style, bool],
                                        list[NameCell | Text]]] = LRUCache(CELL_CACHE)
        #: How each cell was rendered, and from which value (see the module docstring).
        self._rendered: LRUCache[tuple[object, ...],
                                 tuple[object, int, list[list[Segment]]]] = LRUCache(CELL_CACHE)

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False) -> list[list[Segment]]:
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        if row_key is None or column_key is None:  # the header (-1): rendered rarely
            return super()._render_cell(row_index, column_index, base_style, width, cursor,
                                        hover)
        value = self._data[row_key][column_key]
        key = (row_key, column_key, base_style, width, cursor, hover,
               self._show_hover_cursor, self._pseudo_class_state)
        kept = self._rendered.get(key)
        if kept is not None and kept[0] is value:
            if kept[1] == row_index:
                return kept[2]
            lines = _moved(kept[2], row_index, column_index)
        else:
            lines = super()._render_cell(row_index, column_index, base_style, width, cursor,
                                         hover)
        self._rendered[key] = (value, row_index, lines)
        return lines

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._rendered = LRUCache(CELL_CACHE)  # a new one: see _rebuild

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._rendered = LRUCache(CELL_CACHE)

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        # Every column has a fixed width and every row is one line high: new rows need no
        # measuring (which DataTable does cell by cell: 150 rows take tens of ms).
        super()._update_dimensions(())

    def _rebuild(self) -> None:
        """Remove every row at once (the columns stay). Rows added back with the same
        cells at the same places are not rendered again: an unfold after a fold."""
        rendered = self._rendered
        self.clear()
        self._rendered = rendered
        self._shown.clear()
        self._order = {}

    def on_mount(self) -> None:
        self._lay_out()

    def on_resize(self) -> None:
        if self._lay_out():
            self.show(self._rows)

    def _widths(self) -> tuple[tuple[str, int], ...]:
        """The columns for the present width (see the module docstring)."""
        widths = [(key, width) for key, _, width in LAYOUT]
        spare = self.scrollable_content_region.width - 1 - sum(
            width + PADDING for _, width in widths)  # 1: the vertical scrollbar
        name = min(WIDE_NAME, widths[0][1] + max(0, spare))
        spare -= name - widths[0][1]
        widths[0] = ("name", name)
        if spare >= MIN_REQUEST + PADDING:
            widths.append(("request", spare - PADDING))
        return tuple(widths)

    def _lay_out(self) -> bool:
        """Set the columns up for the present width; True if they changed."""
        widths = self._widths()
        if widths == self.layout_widths:
            return False
        keep = self.selected_key
        self.clear(columns=True)
        self._shown.clear()
        self._order = {}
        headers = {key: label for key, label, _ in LAYOUT}
        for key, width in widths:
            self.add_column(headers.get(key, key), width=width, key=key)
        self.layout_widths = widths
        self._reselect = self._reselect or keep
        return True

    @property
    def selected_key(self) -> str | None:
        """The row key under the cursor."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
        except CellDoesNotExist:
            return None

    def select_key(self, key: str) -> bool:
        """Move the cursor to the row ``key``; False if there is no such row."""
        try:
            index = self.get_row_index(key)
        except RowDoesNotExist:
            return False
        if index != self.cursor_row:
            self.move_cursor(row=index)
        return True

    def _style(self, row: TreeRow) -> Style:
        name = ("process-table--warning" if row.warning and row.kind != "app"
                else "process-table--dim" if row.dim
                else "process-table--app" if row.kind == "app" else None)
        return self.get_component_rich_style(name, partial=True) if name else Style()

    def _cells(self, row: TreeRow, label: str) -> tuple[tuple[str, ...], Style]:
        name = label + (" ⚠" if row.warning else "")
        shown = len(self.layout_widths) - 1  # the request column is last, maybe not shown
        return (name, *row.values[:shown]), self._style(row)

    def _cell(self, column: str, value: str, style: Style, slow: bool) -> Text:
        if slow and column in ("state", "request"):
            style = style + self.get_component_rich_style("process-table--slow", partial=True)
        return Text(value, style=style, no_wrap=True, overflow="ellipsis",
                    justify=self._justify(column))

    def _make_cells(self, row: TreeRow, plain: tuple[str, ...], style: Style,
                    made: tuple[tuple[tuple[str, ...], Style, bool], list[NameCell | Text]]
                    | None) -> list[NameCell | Text]:
        """The row's cells; those showing what they showed when ``made`` are the same
        objects (their renderings are kept by identity, see the module docstring)."""
        old: tuple[str, ...] = ()
        if made is not None and made[0][1:] == (style, row.slow):
            old, old_cells = made[0][0], made[1]
        fresh: list[NameCell | Text] = []
        for index, value in enumerate(plain):
            if index < len(old) and old[index] == value:
                fresh.append(old_cells[index])
            elif index == 0:
                fresh.append(NameCell(row.key, Text(value, style=style, no_wrap=True)))
            else:
                fresh.append(self._cell(COLUMNS[index - 1], value, style, row.slow))
        return fresh

    def show(self, rows: list[TreeRow]) -> None:
        """Make the table show ``rows`` in this order, touching only what changed."""
        self._rows = rows
        keep = self._reselect or self.selected_key
        self._reselect = None
        labels = tree_labels(rows, self.layout_widths[0][1] if self.layout_widths else 0)
        wanted = {row.key for row in rows}
        going = [key for key in self._shown if key not in wanted]
        if len(going) * len(self._shown) > REBUILD_RATIO * (len(self._shown) - len(going)):
            self._rebuild()
            going = []
        for gone in going:
            self.remove_row(gone)
            del self._shown[gone]
        added = False
        for row in rows:
            plain, style = self._cells(row, labels[row.key])
            what = (plain, style, row.slow)
            shown = self._shown.get(row.key)
            if shown == what:
                continue
            made = self._made.get(row.key)
            if made is None or made[0] != what:
                made = (what, self._make_cells(row, plain, style, made))
                self._made[row.key] = made
            if shown is None:
                self.add_row(*made[1], key=row.key)
                added = True
            else:  # the cells made last are the ones the table has (kept in step here)
                in_table = self._data[RowKey(row.key)]
                for (column, _), cell in zip(self.layout_widths, made[1], strict=False):
                    if in_table.get(ColumnKey(column)) is not cell:
                        self.update_cell(row.key, column, cell)
            self._shown[row.key] = what
        order = {row.key: index for index, row in enumerate(rows)}
        if added or order != self._order:
            self._order = order
            self.sort("name", key=lambda cell: self._order.get(cell.key, 0))
        if keep is not None and not self.select_key(keep) and rows:
            # The selected process went away: stay near it, on its app if still there.
            app = self._app_of.get(keep)
            if app is None or not self.select_key(app):
                self.move_cursor(row=min(self.cursor_row, len(rows) - 1))
        self._app_of = {row.key: app_key(row.app) for row in rows}

    @staticmethod
    def _justify(column: str) -> JustifyMethod:
        return "right" if column in ("processed", "age", "cpu", "pss", "private") else "left"
