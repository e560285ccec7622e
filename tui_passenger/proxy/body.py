"""Receive a request body completely before a worker is checked out.

Slow clients then never hold a worker. Small bodies stay in memory; larger ones are
spooled to a temporary file.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import IO

from aiohttp import web

CHUNK = 64 * 1024


class BodyTooLarge(Exception):
    """The body is larger than ``client_max_body_size``."""


class RequestBody:
    """A fully received body: bytes in memory or a spooled file."""

    __slots__ = ("data", "file", "length")

    def __init__(self, data: bytes = b"", file: IO[bytes] | None = None, length: int = 0) -> None:
        self.data = data
        self.file = file
        self.length = length if file is not None else len(data)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body in pieces (only used for spooled bodies)."""
        if self.file is None:
            if self.data:
                yield self.data
            return
        self.file.seek(0)
        while chunk := self.file.read(CHUNK):
            yield chunk

    def close(self) -> None:
        """Remove the spool file, if any."""
        if self.file is not None:
            self.file.close()


EMPTY = RequestBody()


async def receive_body(request: web.BaseRequest, max_size: int, buffer_size: int) -> RequestBody:
    """Read the whole body; raises BodyTooLarge as soon as it is known to be too large."""
    if not request.body_exists:
        return EMPTY
    declared = request.content_length
    if declared is not None and declared > max_size:
        raise BodyTooLarge(f"request body of {declared} bytes exceeds {max_size}")
    if request.version >= (1, 1) and \
            request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
    if declared is not None and declared <= buffer_size:
        data = await request.content.readexactly(declared) if declared else b""
        return RequestBody(data)
    parts: list[bytes] = []
    size = 0
    spool: IO[bytes] | None = None
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > max_size:
            if spool is not None:
                spool.close()
            raise BodyTooLarge(f"request body exceeds {max_size} bytes")
        if spool is None and size > buffer_size:
            spool = tempfile.TemporaryFile(prefix="tui-passenger-body-")  # noqa: SIM115
            spool.writelines(parts)
            parts.clear()
        if spool is not None:
            spool.write(chunk)
        else:
            parts.append(chunk)
    if spool is not None:
        return RequestBody(file=spool, length=size)
    return RequestBody(b"".join(parts))
