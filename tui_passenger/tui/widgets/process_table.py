"""The process tree table, updated by diffing rows by key (never cleared and rebuilt)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rich.console import JustifyMethod
from rich.style import Style
from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

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
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        #: Row key → (cell texts, style) as shown, to update only what changed.
        self._shown: dict[str, tuple[tuple[str, ...], Style]] = {}
        self._order: dict[str, int] = {}
        self._app_of: dict[str, str] = {}

    def on_mount(self) -> None:
        for key, label, width in LAYOUT:
            self.add_column(label, width=width, key=key)

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
        return (name, *row.values), self._style(row)

    def show(self, rows: list[TreeRow]) -> None:
        """Make the table show ``rows`` in this order, touching only what changed."""
        keep = self.selected_key
        labels = tree_labels(rows)
        wanted = {row.key for row in rows}
        for gone in [key for key in self._shown if key not in wanted]:
            self.remove_row(gone)
            del self._shown[gone]
        added = False
        for row in rows:
            plain, style = self._cells(row, labels[row.key])
            shown = self._shown.get(row.key)
            if shown == (plain, style):
                continue
            cells: list[NameCell | Text] = [
                NameCell(row.key, Text(plain[0], style=style, no_wrap=True))]
            cells += [Text(value, style=style, no_wrap=True, justify=self._justify(column))
                      for column, value in zip(COLUMNS, plain[1:], strict=True)]
            if shown is None:
                self.add_row(*cells, key=row.key)
                added = True
            else:
                old_plain, old_style = shown
                for index, (column, _, _) in enumerate(LAYOUT):
                    if old_plain[index] != plain[index] or old_style != style:
                        self.update_cell(row.key, column, cells[index])
            self._shown[row.key] = (plain, style)
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
