"""Persistent HTTP/1.1 connections from the proxy to a worker's Unix socket.

One exchange at a time per connection. The response is parsed with httptools (llhttp) and
handed to the exchange through plain method calls (no task or future per request: this is
the hot path). Reading from the worker pauses while the client cannot take more.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable
from typing import Protocol

import httptools

from tui_passenger.proxy.headers import HOP_BY_HOP

#: The names of the fields that matter to the relay, in a lower-cased head.
_SPECIAL_FIELDS = re.compile(
    rb"\n(" + b"|".join(sorted(HOP_BY_HOP | {b"content-length"})) + rb"):")


class ResponseSink(Protocol):
    """What an upstream connection reports to (the exchange it serves)."""

    def on_response(self, connection: UpstreamConnection) -> bool: ...
    def on_response_head(self, connection: UpstreamConnection) -> None: ...
    def on_response_body(self, chunk: bytes) -> None: ...
    def on_response_end(self, connection: UpstreamConnection) -> None: ...
    def on_upstream_failed(self, connection: UpstreamConnection, reason: str) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """A keep-alive connection to one worker, reused exchange after exchange."""

    __slots__ = ("transport", "_parser", "sink", "head_only", "status", "head", "pending",
                 "plain", "has_length", "keep_alive", "complete", "failed", "body", "streaming",
                 "_can_write", "paused", "sending", "tail")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.failed: str | None = None
        self._can_write: asyncio.Future[None] | None = None
        #: Reading is paused because the client is slow.
        self.paused = False
        #: A streamed request body is still being written (the connection is not reusable
        #: until it is, whatever the response says).
        self.sending = False
        #: What followed a 101's head (the first bytes of the new protocol).
        self.tail = b""
        self._reset(False)

    def _reset(self, head_only: bool) -> None:
        self.head_only = head_only
        self.status = 0
        #: The status line and fields as received, each line ending in CRLF (see headers).
        self.head = b""
        #: What arrived of the response before its head was complete.
        self.pending = b""
        #: No hop-by-hop field in the response (its fields can be relayed as they are).
        self.plain = True
        #: The response has a Content-Length field.
        self.has_length = False
        self.keep_alive = False
        self.complete = False
        #: Body bytes received before the head was handed over (usually the whole body).
        self.body: list[bytes] = []
        #: True once the head went to the sink: body chunks then go straight through.
        self.streaming = False

    @classmethod
    async def open(cls, path: str) -> UpstreamConnection:
        """Connect to the worker listening on ``path``."""
        _, protocol = await asyncio.get_running_loop().create_unix_connection(cls, path)
        return protocol

    @property
    def usable(self) -> bool:
        """True when the connection can carry another request."""
        return (self.transport is not None and self.failed is None and self.sink is None
                and not self.sending and not self.transport.is_closing())

    # -- driving an exchange -------------------------------------------------------------

    def send(self, sink: ResponseSink, data: bytes, head_only: bool = False) -> None:
        """Send a whole request (head and body); the response goes to ``sink``."""
        transport = self.transport
        # self.usable, without the call (once per request)
        if transport is None or self.failed is not None or self.sink is not None \
                or self.sending or transport.is_closing():
            raise ConnectionError(self.failed or "connection to the worker is closed")
        self._reset(head_only)
        self.sink = sink
        transport.write(data)

    def send_head(self, sink: ResponseSink, head: bytes, *, head_only: bool = False) -> None:
        """Send a request head whose (spooled) body follows with :meth:`send_body`."""
        self.send(sink, head, head_only)
        self.sending = True  # (a write calls back nothing: nothing saw it unset)

    async def send_body(self, chunks: AsyncIterable[bytes]) -> None:
        """Write the body that follows :meth:`send_head`; a failure fails the exchange."""
        try:
            async for chunk in chunks:
                if self.transport is None or self.failed is not None:
                    return
                self.transport.write(chunk)
                if self._can_write is not None:
                    await self._can_write
        except Exception as exc:  # noqa: BLE001 - e.g. the spool file could not be read
            self._fail(f"could not send the request body: {exc}")
        finally:
            self.sending = False

    def pause(self) -> None:
        """The client is not keeping up: stop reading the worker's response for now."""
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        """The client can take more again."""
        if self.transport is not None and self.paused:
            self.paused = False
            self.transport.resume_reading()

    def detach(self) -> None:
        """Forget the exchange and close (the exchange left before the response ended)."""
        self.sink = None
        self.close()

    def close(self) -> None:
        """Close the connection (the worker is going away, or it is no longer reusable)."""
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.sink is None:
            self._fail("worker sent data nobody asked for")
            return
        if not self.status:
            self.pending += data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:  # a 101: the rest is the new protocol
            self.tail = data[exc.args[0]:] if exc.args else b""
        except httptools.HttpParserError as exc:
            self._fail(f"bad response from worker: {exc}")
            return
        if self.status and not self.streaming:
            if not self._take_head():
                return
            if self.head_only:
                # llhttp cannot be told that a HEAD response has no body: start afresh.
                self._parser = httptools.HttpResponseParser(self)
                self.complete = True
            self.streaming = True
            sink = self.sink
            if self.complete and sink.on_response(self):
                return  # relayed whole, the connection handed back
            sink.on_response_head(self)
            if self.complete and self.sink is sink:
                self._finish()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.sink is not None and not self.complete:
            self._fail("worker closed the connection" + (f" ({exc})" if exc else ""))
        else:
            self.failed = self.failed or "closed"
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._can_write = None

    def _take_head(self) -> bool:
        """Take the status line and fields of the (complete) head from the bytes received.

        llhttp has validated the head; here it is only cut out: no Python callback per field.
        """
        pending, self.pending = self.pending, b""
        end = pending.find(b"\r\n\r\n")
        if end < 0:
            self._fail("bad response from worker: head not terminated by CRLF CRLF")
            return False
        self.head = head = pending[:end + 2]
        special = _SPECIAL_FIELDS.findall(head.lower())
        self.has_length = b"content-length" in special
        self.plain = len(special) == self.has_length  # nothing else, one Content-Length
        return True

    @property
    def reason(self) -> bytes:
        """The reason phrase of the status line (may be empty)."""
        status_line = self.head[:self.head.find(b"\r\n")].split(b" ", 2)
        return status_line[2] if len(status_line) == 3 else b""

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The response's fields as (name, value) pairs, in order."""
        pairs: list[tuple[bytes, bytes]] = []
        for line in self.head.split(b"\r\n")[1:]:
            if not line:
                continue
            if line[:1] in (b" ", b"\t") and pairs:  # obsolete line folding
                name, value = pairs[-1]
                pairs[-1] = (name, value + b" " + line.strip())
                continue
            name, _, value = line.partition(b":")
            pairs.append((name, value.strip(b" \t")))
        return pairs

    # -- httptools callbacks -------------------------------------------------------------

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim response (we never send Expect, so this is unusual): skip its head.
            self.pending = self.pending[self.pending.find(b"\r\n\r\n") + 4:]
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.streaming:
            self.sink.on_response_body(body)  # type: ignore[union-attr]
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.status:
            return  # the end of an interim response
        self.complete = True
        if self.streaming:
            self._finish()

    # -- internals -----------------------------------------------------------------------

    def _finish(self) -> None:
        # Reading may have been paused for a slow client while llhttp went on to the end
        # of the message: a reused connection must read again.
        if self.paused:
            self.resume()
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.on_response_end(self)

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
        if self.transport is not None:
            self.transport.close()
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.on_upstream_failed(self, reason)
