"""The spawning engine: start workers directly or by forking them from a preloader.

This package imports no UI code; the dashboard and the CLI drive it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tui_passenger.engine.direct import DirectSpawner
from tui_passenger.engine.errors import SpawnError
from tui_passenger.engine.output import OutputLine, OutputSink
from tui_passenger.engine.process import ExitStatus, WorkerProcess
from tui_passenger.engine.smart import SmartSpawner
from tui_passenger.engine.spawner import Spawner
from tui_passenger.engine.system import RuntimeDir, become_subreaper, raise_open_files_limit

if TYPE_CHECKING:
    from tui_passenger.config import AppConfig

SPAWNERS: dict[str, type[Spawner]] = {"direct": DirectSpawner, "smart": SmartSpawner}


def make_spawner(app: AppConfig, socket_dir: Path, method: str | None = None, *,
                 on_output: OutputSink | None = None) -> Spawner:
    """A spawner for ``app`` using ``method`` (default: the app's ``spawn_method``)."""
    return SPAWNERS[method or app.spawn_method](app, socket_dir, on_output=on_output)


__all__ = [
    "DirectSpawner", "ExitStatus", "OutputLine", "OutputSink", "RuntimeDir", "SmartSpawner",
    "SpawnError", "Spawner", "WorkerProcess", "become_subreaper", "make_spawner",
    "raise_open_files_limit",
]
