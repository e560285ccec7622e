"""Errors the spawning engine reports to its callers."""

from __future__ import annotations

from collections.abc import Sequence


class SpawnError(Exception):
    """A worker (or its preloader) could not be started.

    ``category`` says which step failed: ``import`` (the app did not load), ``hook`` (a
    ``starting_worker_process`` hook raised), ``startup`` (binding or ASGI lifespan),
    ``timeout`` (not ready within ``start_timeout``), ``exited`` (died before it was ready),
    ``preloader`` (the preloader failed twice in a row), ``interpreter`` (could not exec),
    ``protocol`` (it sent something else than ready, or a malformed message).
    """

    def __init__(self, app: str, category: str, message: str, *, traceback: str = "",
                 output: Sequence[str] = (), pid: int | None = None) -> None:
        super().__init__(f"{app}: spawn failed ({category}): {message}")
        self.app = app
        self.category = category
        self.message = message
        self.traceback = traceback
        self.output = tuple(output)
        self.pid = pid

    def details(self) -> str:
        """The message, the traceback and what the process printed, for logs and error pages."""
        parts = [str(self)]
        if self.traceback:
            parts.append(self.traceback.rstrip())
        if self.output:
            parts.append("output:\n" + "\n".join(f"  {line}" for line in self.output))
        return "\n".join(parts)
