"""Persistent HTTP/1.1 connections from the proxy to a worker's Unix socket.

One request at a time per connection; the response is parsed with httptools (llhttp). The
body is handed over chunk by chunk with flow control: reading from the worker pauses while
more than ``HIGH_WATER`` bytes wait for the client.
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools

HIGH_WATER = 256 * 1024


class UpstreamError(Exception):
    """The worker failed before its response head was complete.

    ``sent`` tells whether the request may have reached the worker (then only idempotent
    requests may be retried elsewhere).
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class UpstreamConnection(asyncio.Protocol):
    """A keep-alive connection to one worker, reused request after request."""

    __slots__ = ("transport", "_parser", "_head_only", "status", "reason", "headers",
                 "keep_alive", "complete", "failed", "_chunks", "_buffered", "_waiter",
                 "_got_bytes", "_paused", "_can_write")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._chunks: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._can_write: asyncio.Future[None] | None = None
        self._reset(head_only=False)

    def _reset(self, head_only: bool) -> None:
        self._head_only = head_only
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.complete = False
        self.failed: str | None = None
        self._chunks.clear()
        self._buffered = 0
        self._got_bytes = False
        self._paused = False

    @classmethod
    async def open(cls, path: str) -> UpstreamConnection:
        """Connect to the worker listening on ``path``."""
        _, protocol = await asyncio.get_running_loop().create_unix_connection(cls, path)
        return protocol

    @property
    def usable(self) -> bool:
        """True when the connection can carry another request."""
        return self.transport is not None and not self.transport.is_closing() \
            and self.failed is None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"bad response from worker: {exc}")
        if self._head_only and self.status:
            # llhttp cannot be told that a HEAD response has no body: start afresh.
            self._parser = httptools.HttpResponseParser(self)
            self.complete = True
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.complete:
            self._fail("worker closed the connection" + (f" ({exc})" if exc else ""))
        self.transport = None
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._can_write = None

    # -- httptools callbacks -------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # Interim response (we never send Expect, so this is unusual): skip it.
            self.headers = []
            self.reason = b""
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status:
            self.complete = True
            self._wake()

    # -- used by the proxy ---------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def send(self, head: bytes, body: bytes | None, *, head_only: bool = False) -> None:
        """Send a request and wait for the response head; raises UpstreamError."""
        if not self.usable:
            raise UpstreamError(self.failed or "connection closed", sent=False)
        assert self.transport is not None
        self._reset(head_only)
        self.transport.write(head + body if body else head)
        while not self.status:
            if self.failed is not None:
                raise UpstreamError(self.failed, sent=True)
            await self._wait()

    async def send_stream(self, head: bytes, chunks, *, head_only: bool = False) -> None:
        """Like :meth:`send`, with a body read from an async iterator of chunks."""
        if not self.usable:
            raise UpstreamError(self.failed or "connection closed", sent=False)
        assert self.transport is not None
        self._reset(head_only)
        self.transport.write(head)
        async for chunk in chunks:
            if self.failed is not None or self.transport is None:
                break
            self.transport.write(chunk)
            if self._can_write is not None:
                await self._can_write
        while not self.status:
            if self.failed is not None:
                raise UpstreamError(self.failed, sent=True)
            await self._wait()

    def take_body(self) -> bytes:
        """All body bytes received so far (the whole body once ``complete``)."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body; None at the end. Raises UpstreamError mid-body."""
        while not self._chunks:
            if self.complete:
                return None
            if self.failed is not None:
                raise UpstreamError(self.failed, sent=True)
            await self._wait()
        return self.take_body()

    def close(self) -> None:
        """Close the connection (the worker is going away, or it is no longer reusable)."""
        if self.transport is not None:
            self.transport.close()
