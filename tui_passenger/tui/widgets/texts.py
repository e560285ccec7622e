"""Updating a Static each tick without laying the whole screen out again.

``Static.update`` asks for a layout by default, and a layout re-renders every widget on
the screen (tens of milliseconds at 150 workers, on every tick and every cursor move).
Most texts the dashboard refreshes keep their size: the same number of lines, each within
the widget's width. Those are repainted only.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import Static


def _lines(content: Text | str) -> list[str]:
    plain = content.plain if isinstance(content, Text) else content
    return plain.split("\n")


def show_text(static: Static, content: Text | str) -> None:
    """Make ``static`` show ``content``: nothing if it shows that already, a repaint if its
    size stays (as many lines as it is high, none wider than it), else an update with a
    layout."""
    if static.content == content:  # Text compares its text and its styles
        return
    size = static.content_size
    lines = _lines(content)
    width = static.styles.width  # None: the container's width
    unwrapped = static.styles.text_wrap == "nowrap" or (isinstance(content, Text)
                                                        and content.no_wrap is True)
    fits = ((width is None or not width.is_auto) and len(lines) == size.height
            and (unwrapped or all(cell_len(line) <= size.width for line in lines)))
    static.update(content, layout=not fits)
