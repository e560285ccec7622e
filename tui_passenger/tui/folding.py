"""Folding the process tree per app (htop-like): left folds the app under the cursor to its
one row, right unfolds it. With 150 workers of one app, the others stay in view."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, ClassVar

from textual.binding import Binding, BindingType

from tui_passenger.tui.rows import TreeRow, app_key
from tui_passenger.tui.widgets.process_table import ProcessTable


def fold(rows: Iterable[TreeRow], folded: set[str]) -> list[TreeRow]:
    """``rows`` with the processes of the apps in ``folded`` left out, their app rows
    marked folded."""
    shown = []
    for row in rows:
        if row.app in folded:
            if row.kind != "app":
                continue
            row = dataclasses.replace(row, folded=True)
        shown.append(row)
    return shown


class ProcessTree(ProcessTable):
    """The process table, where left folds the selected row's app and right unfolds it;
    the folded apps stay folded across refreshes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "fold", "Fold the selected app's processes into its row", id="fold",
                show=False),
        Binding("right", "unfold", "Show the selected app's processes again", id="unfold",
                show=False),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: The apps whose processes are folded away.
        self.folded: set[str] = set()
        self._unfolded: list[TreeRow] = []

    def show(self, rows: list[TreeRow]) -> None:
        """Show ``rows``, those of folded apps folded."""
        self._unfolded = rows
        super().show(fold(rows, self.folded))

    def _fold(self, folded: bool) -> None:
        key = self.selected_key
        app = next((row.app for row in self._unfolded if row.key == key), None)
        if app is None:
            return
        if folded:
            self.folded.add(app)
        else:
            self.folded.discard(app)
        self.show(self._unfolded)  # now, not at the next refresh
        self.select_key(app_key(app))

    def action_fold(self) -> None:
        """Fold the selected app's processes into its row."""
        self._fold(True)

    def action_unfold(self) -> None:
        """Show the selected app's processes again."""
        self._fold(False)
