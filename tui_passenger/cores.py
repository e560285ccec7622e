"""The kinds of :class:`~tui_passenger.core.Core`: a running instance attached over its
admin socket, the same started by the dashboard as its own process (the default), and the
server embedded in the dashboard's process (``--embedded``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from tui_passenger.admin.client import SERVED_HEADER, action_url
from tui_passenger.config import Config
from tui_passenger.core import Core
from tui_passenger.operations import Action, Done, Operations, Refused, reply_error
from tui_passenger.server import Server
from tui_passenger.snapshot import Snapshot
from tui_passenger.status import snapshot


class EmbeddedCore(Core):
    """The server runs in this process, on the dashboard's event loop."""

    embedded = True
    owned = True

    def __init__(self, config: Config, **server_options: Any) -> None:
        self.server = Server(config, **server_options)
        self.operations = Operations(self.server)
        self.description = f"{config.path or 'config'}"

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        if not self.server.stopped.is_set():
            await self.server.stop()

    async def snapshot(self) -> Snapshot:
        return snapshot(self.server, self.fds_of)

    async def events(self, since: int) -> tuple[int, list[dict[str, Any]]]:
        return self.server.events.since(since)

    # The intents: the operations layer, the same one the admin API calls.

    async def scale(self, app: str, count: int) -> Done:
        return await self.operations.scale(app, count)

    async def kill(self, pid: int, force: bool = False) -> Done:
        return await self.operations.kill(pid, force)

    async def stack(self, pid: int) -> Done:
        return await self.operations.stack(pid)

    async def restart(self, app: str) -> Done:
        return await self.operations.restart(app)

    async def set_spawn_method(self, app: str, method: str) -> Done:
        return await self.operations.set_spawn_method(app, method)

    async def refork(self, app: str) -> Done:
        return await self.operations.refork(app)

    async def pause_sampling(self, paused: bool) -> Done:
        return await self.operations.pause_sampling(paused)

    async def reload(self) -> Done:
        return await self.operations.reload()


class AttachedCore(Core):
    """A running instance, reached over its admin socket. One a dashboard started (and left
    running, detached) is owned again: quitting stops it. Others are only looked at."""

    embedded = False

    def __init__(self, socket_path: Path) -> None:
        self.path = socket_path
        self.description = f"attached to {socket_path}"
        self._session: aiohttp.ClientSession | None = None
        #: The instance's manager pid (from its first snapshot).
        self.pid: int | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(self.path)),
            timeout=aiohttp.ClientTimeout(total=120))
        # Fail early with a clear error if nobody answers; learn whose it is.
        server = (await self.snapshot()).server
        self.pid = server.pid
        self.owned = self.owned or server.dashboard_owned
        if server.log_file is not None:
            self.log_file = Path(server.log_file)

    async def stop(self) -> None:
        if self.owned and not self.detached and self._session is not None and self._running():
            try:
                await self._act(Action.STOP)
            except Refused:
                pass  # it is stopping already
            except (ConnectionError, RuntimeError):
                self._no_answer()
            await self._ended()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _running(self) -> bool:
        """Whether the instance may still be running (a stop is worth asking for)."""
        return True

    def _no_answer(self) -> None:
        """The stop request got no answer: nothing more to do (it is gone or going)."""

    async def _ended(self) -> None:
        """Wait until the instance's process has exited (a pidfd: no polling)."""
        if self.pid is None:
            return
        try:
            fd = os.pidfd_open(self.pid)
        except OSError:  # gone already (or not ours to watch)
            return
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:  # called until the reader is removed: settle once
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    async def _call(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        """One admin API request; its JSON reply. Refused (as the instance said) on a 4xx."""
        assert self._session is not None, "AttachedCore.start() first"
        try:
            async with self._session.request(method, "http://admin" + url, json=body) as r:
                status, text = r.status, await r.text()
                served = r.headers.get(SERVED_HEADER)
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            raise ConnectionError(f"instance at {self.path} does not answer: {exc}") from None
        if served:  # an older instance does not say
            self.served_seconds += float(served) / 1000
        try:
            reply = json.loads(text)
        except ValueError:
            raise RuntimeError(f"HTTP {status}: {text[:200]}") from None
        if status >= 400:
            raise reply_error(status, reply)
        return reply

    async def snapshot(self) -> Snapshot:
        fds = self.fds_of
        query = "" if fds is None else "?fds=" + ",".join(map(str, fds))
        return Snapshot.from_json(await self._call("GET", "/status" + query))

    async def events(self, since: int) -> tuple[int, list[dict[str, Any]]]:
        reply = await self._call("GET", f"/events?since={since}")
        return reply["seq"], reply["events"]

    # The intents: the admin API's replies, read as the operations layer's results.

    async def _act(self, action: Action, target: str | int | None = None,
                   body: dict[str, Any] | None = None) -> Done:
        return Done(action, await self._call("POST", action_url(action, target), body))

    async def scale(self, app: str, count: int) -> Done:
        return await self._act(Action.SCALE, app, {"count": count})

    async def kill(self, pid: int, force: bool = False) -> Done:
        return await self._act(Action.KILL, pid, {"force": force})

    async def stack(self, pid: int) -> Done:
        return await self._act(Action.STACK, pid)

    async def restart(self, app: str) -> Done:
        return await self._act(Action.RESTART, app)

    async def set_spawn_method(self, app: str, method: str) -> Done:
        return await self._act(Action.SPAWN_METHOD, app, {"method": method})

    async def refork(self, app: str) -> Done:
        return await self._act(Action.REFORK, app)

    async def pause_sampling(self, paused: bool) -> Done:
        return await self._act(Action.SAMPLING, body={"paused": paused})

    async def reload(self) -> Done:
        return await self._act(Action.RELOAD)


class SpawnedCore(AttachedCore):
    """A core this dashboard started as its own process (``tui-passenger --headless``),
    attached over its admin socket like any running instance. Quitting asks it to stop
    (the ``stop`` operation) and waits until it has exited; detaching leaves it serving."""

    owned = True

    def __init__(self, socket_path: Path, process: subprocess.Popen[bytes],
                 log_file: Path) -> None:
        super().__init__(socket_path)
        self.process = process
        self.log_file = log_file
        self.description = f"core pid {process.pid} on {socket_path}"

    async def start(self) -> None:
        try:
            await super().start()
        except BaseException:  # it does not answer: do not leave it behind
            await self.stop()
            raise

    def _running(self) -> bool:
        return self.process.poll() is None

    def _no_answer(self) -> None:
        self.process.terminate()  # SIGTERM stops it as the stop operation does

    async def _ended(self) -> None:
        await asyncio.to_thread(self.process.wait)  # and reaps it
