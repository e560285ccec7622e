"""Running the dashboard over a core: start it, show the dashboard until the operator quits
or detaches (or a signal says so), then stop it (a detached one keeps running)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tui_passenger.core import Core
from tui_passenger.tui.app import Dashboard


async def run_dashboard(core: Core, *, keymap: dict[str, str] | None = None,
                        theme_dir: Path | None = None, stop: asyncio.Event | None = None,
                        detach: asyncio.Event | None = None) -> None:
    """Start the core, run the dashboard until the operator quits (or ``stop`` is set, e.g.
    on SIGTERM: the same as the quit key; ``detach``: as the detach key), then stop the
    core (a detached one keeps running)."""
    await core.start()
    app = Dashboard(core, keymap=keymap, theme_dir=theme_dir)

    async def act_on(event: asyncio.Event, action: str) -> None:
        await event.wait()
        await app.run_action(action)

    watchers = [asyncio.ensure_future(act_on(event, action))
                for event, action in ((stop, "quit"), (detach, "detach")) if event is not None]
    try:
        await app.run_async()
    finally:
        for watcher in watchers:
            watcher.cancel()
        await core.stop()
