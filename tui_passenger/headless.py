"""Run the core without the dashboard: logs to stderr, stops cleanly on SIGINT/SIGTERM,
reloads the configuration on SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from tui_passenger.config import Config
from tui_passenger.operations import Operations, Refused
from tui_passenger.server import Server

log = logging.getLogger("tui_passenger")


def reload_on_sighup(server: Server) -> None:
    """Reload ``server``'s configuration on SIGHUP (the outcome goes to the log and the
    event log, as Operations.reload says)."""
    operations = Operations(server)

    async def reload() -> None:
        with contextlib.suppress(Refused):  # already logged, with the reason
            await operations.reload()

    asyncio.get_running_loop().add_signal_handler(
        signal.SIGHUP, lambda: asyncio.ensure_future(reload()))


async def run_headless(config: Config,
                       reload_config: Callable[[], Config] | None = None) -> int:
    """Serve until SIGINT or SIGTERM, then shut down gracefully; returns the exit status.
    SIGHUP reloads the configuration (``reload_config`` reads it, see Server)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = Server(config, reload_config=reload_config)
    reload_on_sighup(server)
    try:
        await server.start()
    except OSError as exc:  # StartError: a sentence with the fix; anything else as it is
        # The start undid itself: nothing of another instance was touched.
        log.error("%s", exc)
        return 1
    try:
        await stop.wait()
        log.info("shutting down (in-flight requests get up to %g s)",
                 config.server.shutdown_timeout)
    finally:
        await server.stop()
    return 0
