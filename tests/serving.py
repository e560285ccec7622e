"""Start a real tui-passenger server (pool + proxy) on an ephemeral port for a test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp

from tui_passenger.config import parse_config
from tui_passenger.engine import OutputLine
from tui_passenger.engine.output import log_line
from tui_passenger.server import Server

PROBE_APP = Path(__file__).resolve().parent / "apps" / "proxy_probe"


def toml_value(value: object) -> str:
    """A Python value written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def config_text(server: dict, apps: list[dict]) -> str:
    """A passenger.toml document (admin socket in a fresh private directory)."""
    server = {"admin_socket": os.path.join(tempfile.mkdtemp(prefix="tp-admin-"), "admin.sock"),
              "access_log": False, **server}
    # allow_root: the tests may run as root (CI does); apps then run as root on purpose.
    lines = ["[server]", 'address = "127.0.0.1"', "port = 0", "allow_root = true"]
    lines += [f"{k} = {toml_value(v)}" for k, v in server.items()]
    for app in apps:
        lines.append("[[app]]")
        app = {"root": str(PROBE_APP), "entry": "app:application", "start_timeout": 20, **app}
        lines += [f"{k} = {toml_value(v)}" for k, v in app.items()]
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def running(apps: list[dict], on_output: Callable[[OutputLine], None] | None = None,
                  server_options: dict | None = None,
                  **server: object) -> AsyncIterator[Server]:
    """A started server; stopped on exit."""
    config = parse_config(config_text(server, apps), path="test.toml")
    def sink(line: OutputLine) -> None:
        log_line(line)
        if on_output is not None:
            on_output(line)

    srv = Server(config, on_output=sink, **(server_options or {}))
    await srv.start()
    await srv.pool.wait_started(30)
    try:
        yield srv
    finally:
        if not srv.stopped.is_set():
            await srv.stop()


async def get(server: Server, path: str = "/", *, method: str = "GET", **kwargs):
    """One request on a fresh connection; returns (status, headers, body bytes)."""
    async with aiohttp.ClientSession() as session, \
            session.request(method, server.url + path, **kwargs) as response:
        return response.status, response.headers, await response.read()


async def wait_until(predicate, timeout: float = 10.0) -> None:
    """Wait for a condition of the server's state to hold (bounded)."""
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


class Load:
    """Concurrent GET loops on keep-alive sessions, counting successes and failures."""

    def __init__(self, server, path: str = "/", clients: int = 4) -> None:
        self.server = server
        self.path = path
        self.ok = 0
        self.failures: list[str] = []
        self.pids: set[int] = set()
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._loop()) for _ in range(clients)]

    async def _loop(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set():
                try:
                    async with session.get(self.server.url + self.path) as response:
                        body = await response.read()
                        if response.status == 200:
                            self.ok += 1
                            self.pids.add(json.loads(body)["pid"])
                        else:
                            self.failures.append(f"{response.status}: {body[:200]!r}")
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    self.failures.append(repr(exc))

    async def more(self, count: int, timeout: float = 10.0) -> None:
        """Wait for ``count`` more successful requests."""
        target = self.ok + count
        await wait_until(lambda: self.ok >= target, timeout)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
