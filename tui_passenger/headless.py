"""Run the core without the dashboard: logs to stderr, stops cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from tui_passenger.config import Config
from tui_passenger.engine import (
    OutputLine,
    RuntimeDir,
    SpawnError,
    WorkerProcess,
    become_subreaper,
    make_spawner,
)

log = logging.getLogger("tui_passenger")


def log_output(line: OutputLine) -> None:
    """Log a line a child printed, labelled with its app, role and pid."""
    level = logging.WARNING if line.stream == "stderr" else logging.INFO
    logging.getLogger(f"tui_passenger.app.{line.app}").log(
        level, "%s %d | %s", line.role, line.pid, line.text)


async def run_headless(config: Config) -> int:
    """Start every app's ``min_instances`` workers and keep them until a stop signal."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    become_subreaper()
    runtime = RuntimeDir()
    spawners = {app.name: make_spawner(app, runtime.path, on_output=log_output)
                for app in config.apps}
    workers: list[WorkerProcess] = []

    async def start(app_name: str) -> None:
        spawner = spawners[app_name]
        try:
            worker = await spawner.spawn()
        except SpawnError as exc:
            log.error("%s", exc.details())
            return
        workers.append(worker)
        log.info("%s: worker %d ready in %.1f ms (%s, %s, socket %s)", app_name, worker.pid,
                 (worker.spawn_duration or 0) * 1000, worker.spawn_method, worker.interface,
                 worker.socket_path)

    try:
        await asyncio.gather(*(start(app.name) for app in config.apps
                               for _ in range(app.min_instances)))
        log.info("running %d workers; Ctrl+C to stop", len(workers))
        await stop.wait()
        log.info("stopping")
    finally:
        await asyncio.gather(*(w.stop(config.server.shutdown_timeout) for w in workers))
        await asyncio.gather(*(s.close() for s in spawners.values()))
        runtime.close()
    return 0
