"""Request bodies, received completely before a worker is checked out.

Slow clients then never hold a worker. Small bodies stay in memory; larger ones are
spooled to a temporary file.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import IO

CHUNK = 64 * 1024


class RequestBody:
    """A request body being received: bytes in memory, spooled to a file past a threshold."""

    __slots__ = ("_parts", "file", "length", "_spool_after")

    def __init__(self, spool_after: int) -> None:
        self._parts: list[bytes] = []
        self.file: IO[bytes] | None = None
        self.length = 0
        self._spool_after = spool_after

    def append(self, chunk: bytes) -> None:
        """Add received bytes."""
        self.length += len(chunk)
        if self.file is not None:
            self.file.write(chunk)
            return
        self._parts.append(chunk)
        if self.length > self._spool_after:
            self.file = tempfile.TemporaryFile(prefix="tui-passenger-body-")  # noqa: SIM115
            self.file.writelines(self._parts)
            self._parts.clear()

    @property
    def data(self) -> bytes:
        """The whole body, when it is held in memory."""
        if len(self._parts) > 1:
            self._parts[:] = [b"".join(self._parts)]
        return self._parts[0] if self._parts else b""

    async def chunks(self) -> AsyncIterator[bytes]:
        """The spooled body in pieces."""
        assert self.file is not None
        self.file.seek(0)
        while chunk := self.file.read(CHUNK):
            yield chunk

    def close(self) -> None:
        """Remove the spool file, if any."""
        if self.file is not None:
            self.file.close()
            self.file = None
