"""Run the core without the dashboard: logs to stderr, stops cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from tui_passenger.config import Config
from tui_passenger.server import Server

log = logging.getLogger("tui_passenger")


async def run_headless(config: Config) -> int:
    """Serve until SIGINT or SIGTERM, then shut down gracefully; returns the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = Server(config)
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
