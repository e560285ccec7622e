"""The two kinds of :class:`~tui_passenger.core.Core`: embedded and attached."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from tui_passenger.admin.report import reforked_text
from tui_passenger.config import Config
from tui_passenger.core import Core
from tui_passenger.server import Server
from tui_passenger.snapshot import Snapshot
from tui_passenger.status import snapshot


class EmbeddedCore(Core):
    """The server runs in this process, on the dashboard's event loop."""

    embedded = True

    def __init__(self, config: Config, **server_options: Any) -> None:
        self.server = Server(config, **server_options)
        self.description = f"{config.path or 'config'}"

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        if not self.server.stopped.is_set():
            await self.server.stop()

    async def snapshot(self) -> Snapshot:
        return snapshot(self.server)

    async def events(self, since: int) -> tuple[int, list[dict[str, Any]]]:
        return self.server.events.since(since)

    def _group(self, app: str):
        group = self.server.pool.groups.get(app)
        if group is None:
            raise KeyError(f"no app named {app!r}")
        return group

    async def scale(self, app: str, count: int) -> str:
        group = self._group(app)
        limit = group.app.max_instances or self.server.pool.max_pool_size
        count = max(0, min(count, limit))
        self.server.pool.scale(group, count)
        return f"{app}: keeping {count} worker(s) warm"

    async def kill(self, pid: int, force: bool = False) -> str:
        process = self.server.pool.find(pid)
        if process is None:
            raise KeyError(f"pid {pid} is not a worker of this instance")
        self.server.pool.kill(process, force=force)
        status = await process.worker.exited
        return f"{process.group.name}: worker {pid} stopped ({status.describe()})"

    async def restart(self, app: str) -> str:
        replaced = await self.server.pool.restart(self._group(app))
        return f"{app}: {replaced} worker(s) replaced, one at a time"

    async def set_spawn_method(self, app: str, method: str) -> str:
        replaced = await self.server.pool.set_spawn_method(self._group(app), method)
        return f"{app}: now {method} spawning ({replaced} worker(s) replaced)"

    async def refork(self, app: str) -> str:
        group = self._group(app)
        try:
            replaced = await self.server.pool.refork_now(group)
        except ValueError as exc:
            raise KeyError(str(exc)) from None
        return reforked_text(app, group.spawner.generation, group.spawner.preloader.pid, replaced)

    async def pause_sampling(self, paused: bool) -> None:
        sampler = self.server.sampler
        if sampler is not None:
            sampler.pause() if paused else sampler.resume()


class AttachedCore(Core):
    """A running instance, reached over its admin socket."""

    embedded = False

    def __init__(self, socket_path: Path) -> None:
        self.path = socket_path
        self.description = f"attached to {socket_path}"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(self.path)),
            timeout=aiohttp.ClientTimeout(total=120))
        await self.snapshot()  # fail early with a clear error if nobody answers

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, url: str, body: dict | None = None) -> Any:
        assert self._session is not None, "AttachedCore.start() first"
        try:
            async with self._session.request(method, "http://admin" + url, json=body) as r:
                reply = await r.json()
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            raise ConnectionError(f"instance at {self.path} does not answer: {exc}") from None
        if r.status >= 400:
            raise KeyError(reply.get("error", f"HTTP {r.status}"))
        return reply

    async def snapshot(self) -> Snapshot:
        return Snapshot.from_json(await self._call("GET", "/status"))

    async def events(self, since: int) -> tuple[int, list[dict[str, Any]]]:
        reply = await self._call("GET", f"/events?since={since}")
        return reply["seq"], reply["events"]

    async def scale(self, app: str, count: int) -> str:
        reply = await self._call("POST", f"/apps/{app}/scale", {"count": count})
        return f"{app}: keeping {reply['min_instances']} worker(s) warm"

    async def kill(self, pid: int, force: bool = False) -> str:
        reply = await self._call("POST", f"/processes/{pid}/kill", {"force": force})
        return f"{reply['app']}: worker {pid} stopped ({reply['exit']})"

    async def restart(self, app: str) -> str:
        reply = await self._call("POST", f"/apps/{app}/restart")
        return f"{app}: {reply['replaced']} worker(s) replaced, one at a time"

    async def set_spawn_method(self, app: str, method: str) -> str:
        reply = await self._call("POST", f"/apps/{app}/spawn-method", {"method": method})
        return f"{app}: now {method} spawning ({reply['replaced']} worker(s) replaced)"

    async def refork(self, app: str) -> str:
        reply = await self._call("POST", f"/apps/{app}/refork")
        return reforked_text(app, reply["generation"], reply["mold"], reply["replaced"])

    async def pause_sampling(self, paused: bool) -> None:
        await self._call("POST", "/sampling", {"paused": paused})
