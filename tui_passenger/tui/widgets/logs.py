"""Worker output, pool events and new process warnings, appended as they arrive."""

from __future__ import annotations

import time
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.widgets import RichLog

from tui_passenger.snapshot import Snapshot

#: Theme variable per entry level (events) or stream (output).
LEVEL_COLOURS = {"error": "error", "warning": "warning", "success": "success"}


class LogPanel(RichLog):
    """A scrolling log; each process warning is shown once, when it first appears."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_lines=2000, wrap=True, markup=False, highlight=False, **kwargs)
        self._warned: set[tuple[int, str]] = set()
        #: Apps whose refork hint is shown (each once while it holds).
        self._hinted: set[str] = set()

    def _colour(self, name: str | None) -> Style:
        if name is None:
            return Style()
        colour = self.app.get_css_variables().get(name)
        return Style(color=colour) if colour else Style()

    def add_entries(self, entries: list[dict[str, Any]]) -> None:
        """Append log entries from ``core.events()``."""
        for entry in entries:
            label = entry.get("app") or "server"
            if entry.get("pid"):
                label += f"[{entry['pid']}]"
            stamp = time.strftime("%H:%M:%S", time.localtime(entry.get("time") or 0))
            if entry.get("kind") == "output":
                colour = "warning" if entry.get("stream") == "stderr" else None
            else:
                colour = LEVEL_COLOURS.get(entry.get("level") or "info")
            lines = str(entry.get("text", "")).rstrip("\n").split("\n")
            text = Text(no_wrap=False)
            text.append(f"{stamp} ", style="dim")
            text.append(label, style="bold")
            text.append(" ")
            text.append(lines[0], style=self._colour(colour))
            for line in lines[1:]:  # a traceback: keep it readable, indented under its entry
                text.append("\n    " + line, style=self._colour(colour))
            self.write(text)

    def add_warnings(self, snap: Snapshot) -> None:
        """Append the per-process warnings not shown before, and an app's refork hint when
        it appears (again after it has gone)."""
        style: Style | None = None  # looked up once there is something new: it is not cheap
        for app in snap.apps:
            if not app.refork_hint:
                self._hinted.discard(app.name)
            elif app.name not in self._hinted:
                self._hinted.add(app.name)
                self.write(Text(f"hint: {app.refork_hint} (g: refork)", style="bold"))
            processes = (*app.processes, *((app.preloader,) if app.preloader else ()))
            for process in processes:
                for warning in process.warnings:
                    seen = (process.pid, warning)
                    if seen in self._warned:
                        continue
                    self._warned.add(seen)
                    if style is None:
                        style = self._colour("warning")
                    text = Text()
                    text.append(f"⚠ {app.name}[{process.pid}] ", style="bold")
                    text.append(warning, style=style)
                    self.write(text)
