"""Smart spawning: a preloader imports the app once and forks every worker from it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tui_passenger.engine.errors import SpawnError
from tui_passenger.engine.preloader import MoldHandle, PreloaderHandle, PreloaderLost
from tui_passenger.engine.process import WorkerProcess
from tui_passenger.engine.spawner import Spawner

#: How many times in a row a preloader may vanish at the moment it was asked to fork
#: because its idle timer fired; each such race just starts a new preloader.
IDLE_RACE_RETRIES = 3


class SmartSpawner(Spawner):
    """Forks workers from a preloader, starting (or restarting) the preloader as needed."""

    method = "smart"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.preloader: PreloaderHandle | None = None
        #: Preloaders of earlier generations, kept until their workers are replaced.
        self.previous: list[PreloaderHandle] = []
        self.preloader_starts = 0
        self.generations = 0
        self.reforks = 0
        self._lock = asyncio.Lock()
        self._reforking: asyncio.Future[None] | None = None

    @property
    def generation(self) -> int:
        """The generation new workers are forked in (the current preloader's)."""
        return self.preloader.generation if self.preloader is not None else self.generations

    def preloaders(self) -> list[PreloaderHandle]:
        """The preloader processes running now: the current one (preloader or mold) first,
        then those of earlier generations, newest first."""
        handles = [self.preloader, *reversed(self.previous)]
        return [handle for handle in handles if handle is not None and handle.live]

    def _next_generation(self) -> int:
        self.generations += 1
        return self.generations - 1

    async def _ensure_preloader(self, started: float) -> PreloaderHandle:
        while self._reforking is not None:
            await asyncio.shield(self._reforking)
        async with self._lock:
            if self.preloader is not None and self.preloader.state == "ready":
                return self.preloader
            # The current one is gone (a mold that died, say): fall back to the newest
            # earlier generation still running, else start a fresh preloader.
            self._discard(self.preloader)
            while self.previous:
                earlier = self.previous.pop()
                if earlier.state == "ready":
                    self.preloader = earlier
                    return earlier
                self._discard(earlier)
            preloader = PreloaderHandle(self, self._next_generation())
            self.preloader = preloader
            self.preloader_starts += 1
            await preloader.start(self._deadline(started))
            return preloader

    @staticmethod
    def _discard(preloader: PreloaderHandle | None) -> None:
        """Release the channel of a preloader that has gone (it exited, nothing waits)."""
        if preloader is not None:
            asyncio.ensure_future(preloader.stop())

    def begin_refork(self) -> None:
        """Hold new spawns until :meth:`refork` is done (call it right before)."""
        if self._reforking is None:
            self._reforking = asyncio.get_running_loop().create_future()

    async def refork(self, worker: WorkerProcess) -> PreloaderHandle:
        """Turn ``worker`` (idle, taken out of the pool) into the preloader of a new
        generation; the previous preloader stays until :meth:`retire_previous`.

        Raises SpawnError if the worker cannot become the mold; spawning then goes on
        from the preloader there was.
        """
        try:
            async with self._lock:
                mold = MoldHandle(self, self._next_generation(), worker)
                await mold.adopt(self._deadline(time.monotonic()))
                if self.preloader is not None:
                    self.previous.append(self.preloader)
                self.preloader = mold
                self.reforks += 1
                return mold
        finally:
            self.end_refork()

    def end_refork(self) -> None:
        """Let held spawns go on (done by :meth:`refork`; call it if refork is not called)."""
        pending, self._reforking = self._reforking, None
        if pending is not None and not pending.done():
            pending.set_result(None)

    async def retire_previous(self) -> None:
        """Stop the preloaders of earlier generations (their workers keep running)."""
        previous, self.previous = self.previous, []
        await asyncio.gather(*(p.stop() for p in previous))

    async def prepare(self) -> None:
        """Start the preloader now (a fresh import of the app); raises SpawnError."""
        self.preflight()
        await self._ensure_preloader(time.monotonic())

    async def spawn(self) -> WorkerProcess:
        self.preflight()
        started = time.monotonic()
        crashes = idle_races = 0
        while True:
            preloader = await self._ensure_preloader(started)
            try:
                return await preloader.fork_worker(started, self._deadline(started))
            except asyncio.TimeoutError:
                raise SpawnError(self.app.name, "timeout", "preloader did not fork a worker "
                                 f"within start_timeout ({self.app.start_timeout:g} s)") from None
            except PreloaderLost as lost:
                if lost.idle and idle_races < IDLE_RACE_RETRIES:
                    idle_races += 1
                    continue
                crashes += 1
                if crashes >= 2:
                    raise SpawnError(self.app.name, "preloader",
                                     f"preloader failed twice in a row: {lost}") from lost

    async def close(self) -> None:
        """Stop the preloaders; forked workers keep running (we are their subreaper)."""
        await self.retire_previous()
        if self.preloader is not None:
            await self.preloader.stop()
            self.preloader = None
