"""Run the core without the dashboard: logs to stderr, stops cleanly on SIGINT/SIGTERM,
reloads the configuration on SIGHUP, reopens the log files on SIGUSR1."""

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
    event log, as Operations.reload says); reopen its log files on SIGUSR1."""
    operations = Operations(server)

    async def reload() -> None:
        with contextlib.suppress(Refused):  # already logged, with the reason
            await operations.reload()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload()))
    # SIGUSR1 reopens the log files, as nginx and gunicorn do (logrotate's postrotate).
    loop.add_signal_handler(signal.SIGUSR1,
                            lambda: asyncio.ensure_future(operations.reopen_logs()))


async def run_headless(config: Config,
                       reload_config: Callable[[], Config] | None = None,
                       started: Callable[[str], None] | None = None,
                       log_file: str | None = None) -> int:
    """Serve until SIGINT, SIGTERM or the ``stop`` operation, then shut down gracefully;
    returns the exit status. SIGHUP reloads the configuration (``reload_config`` reads it,
    see Server). ``started`` is told how the start went: "" once listening, else the
    problem (a dashboard launched this process, waits for it and owns it); ``log_file``
    says where the log goes (None: stderr)."""
    loop = asyncio.get_running_loop()
    server = Server(config, reload_config=reload_config)
    server.log_file = log_file
    server.dashboard_owned = started is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_stop)
    reload_on_sighup(server)
    try:
        await server.start()
    except OSError as exc:  # StartError: a sentence with the fix; anything else as it is
        # The start undid itself: nothing of another instance was touched.
        log.error("%s", exc)
        if started is not None:
            started(str(exc))
        return 1
    if started is not None:
        started("")
    try:
        await server.stop_requested.wait()
        log.info("shutting down (in-flight requests get up to %g s)",
                 config.server.shutdown_timeout)
    finally:
        await server.stop()
    return 0
