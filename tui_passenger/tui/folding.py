"""Folding the process tree per app (htop-like): left folds the app under the cursor to its
one row, right unfolds it. With 150 workers of one app, the others stay in view."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import ClassVar

from textual.binding import Binding, BindingType

from tui_passenger.tui.rows import TreeRow
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
    """The process table, with left/right folding and unfolding the selected app (the
    dashboard keeps which apps are folded; these keys run its actions)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "app.fold", "Fold app", id="fold", show=False),
        Binding("right", "app.unfold", "Unfold app", id="unfold", show=False),
    ]
