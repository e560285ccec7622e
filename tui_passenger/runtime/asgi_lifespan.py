"""Run an ASGI app's ``lifespan`` scope (startup and shutdown) for the ASGI worker server."""

from __future__ import annotations

from typing import Any

from tui_passenger.runtime.http_common import LifespanError, log


class Lifespan:
    """Run an ASGI app's ``lifespan`` scope: startup before serving, shutdown after.

    ``mode`` is "auto" (an app that fails before ``startup.complete`` is taken not to
    support lifespan, as uvicorn does) or "on" (that is an error).
    """

    def __init__(self, app: Any, mode: str, error_log: Any) -> None:
        self.app, self.mode, self.error_log = app, mode, error_log
        #: The lifespan state once startup completed; requests get a copy of it.
        self.state: dict[str, Any] | None = None
        self._task: Any = None

    async def startup(self) -> None:
        """Send ``lifespan.startup``; raise :class:`LifespanError` if the app refuses."""
        import asyncio  # here, not at module level: WSGI workers never pay for it

        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._started = loop.create_future()
        self._stopped = loop.create_future()
        state: dict[str, Any] = {}
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": state}
        self._queue.put_nowait({"type": "lifespan.startup"})
        self._task = loop.create_task(self._main(scope))
        outcome, detail = await self._started
        if outcome == "complete":
            self.state = state
        elif outcome == "failed":
            raise LifespanError(detail or "the app sent lifespan.startup.failed")
        elif self.mode == "on":
            cause = detail if isinstance(detail, BaseException) else None
            raise LifespanError(f"lifespan startup did not complete: {detail!r}") from cause
        else:
            log(self.error_log, f"ASGI 'lifespan' protocol appears unsupported ({detail!r});"
                                " continuing without it")

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait for the app's answer (if startup completed)."""
        if self.state is None or self._task.done():
            return
        self._queue.put_nowait({"type": "lifespan.shutdown"})
        outcome, detail = await self._stopped
        if outcome == "failed":
            log(self.error_log, f"ASGI lifespan shutdown failed: {detail}")

    async def _main(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._queue.get, self._send)
        except Exception as exc:  # noqa: BLE001 - reported through the futures
            outcome: tuple[str, Any] = ("error", exc)
        else:
            outcome = ("returned", "the app returned")
        if not self._started.done():
            self._started.set_result(outcome)
        elif not self._stopped.done():
            if outcome[0] == "error":
                log(self.error_log, "ASGI lifespan failed:", outcome[1])
            self._stopped.set_result(outcome)

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        phase, _, result = kind.removeprefix("lifespan.").partition(".")
        future = {"startup": self._started, "shutdown": self._stopped}.get(phase)
        if future is None or result not in ("complete", "failed"):
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r}")
        if not future.done():
            future.set_result((result, message.get("message", "")))
