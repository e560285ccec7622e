"""Relaying a worker's response to the client: head, body, end (the exchange's
:class:`~tui_passenger.proxy.upstream.ResponseSink` side).

:class:`ResponseRelay` is a base class of :class:`~tui_passenger.proxy.exchange.Exchange`
(a mixin without state of its own): the upstream connection calls these methods on the
exchange directly, as before, with no extra call per response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tui_passenger.pool.group import READY
from tui_passenger.proxy.headers import HOP_BY_HOP, connection_tokens
from tui_passenger.proxy.states import RELAYING, State

if TYPE_CHECKING:
    from tui_passenger.pool import PoolProcess
    from tui_passenger.proxy.request import Request
    from tui_passenger.proxy.sides import ClientSide, Front
    from tui_passenger.proxy.upstream import UpstreamConnection

NO_BODY_STATUS = frozenset({204, 304})


class ResponseRelay:
    """The response half of an exchange: frames the worker's response for the client."""

    if not TYPE_CHECKING:
        # Empty at run time (the exchange's own slots hold everything); hidden from the type
        # checker, which would otherwise refuse the attributes set here.
        __slots__ = ()
    else:  # the exchange's slots
        front: Front
        client: ClientSide
        request: Request
        process: PoolProcess | None
        state: State
        status: int
        sent: int
        chunked: bool
        keep_alive: bool
        head_only: bool
        request_id: bytes
        complete_response: bytes | None

        def _detach(self) -> None: ...
        def _finish(self, keep_alive: bool) -> None: ...

    def on_response(self, upstream: UpstreamConnection) -> bool:
        """The worker's whole response came in one go: relay it, keep the connection, free
        the worker and finish, in one call (the hot path). False when it is not the common
        case (then the upstream connection reports head and end as for any response)."""
        status = upstream.status
        if not (upstream.plain and upstream.has_length and self.keep_alive and status >= 200
                and not self.head_only and self.request.version == "1.1"
                and not self.front.closing and upstream.head.startswith(b"HTTP/1.1 ")):
            return False
        self.status = status
        # As on_response_head, then upstream's end of message, then on_response_end.
        if upstream.paused:
            upstream.resume()
        upstream.sink = None
        process = self.process
        body = upstream.body
        self.sent = sum(map(len, body))
        data = b"".join([upstream.head, b"X-Request-Id: ", self.request_id, b"\r\n\r\n",
                         *body])
        self._detach()
        if process is not None:
            if process.queued:
                self.front.pool.unqueue(process, self)
            transport = upstream.transport  # upstream.usable (its sink is gone), no call
            if upstream.keep_alive and transport is not None and upstream.failed is None \
                    and not upstream.sending and not transport.is_closing() \
                    and process.state is READY:
                process.connections.append(upstream)
            else:
                upstream.close()
            # The worker gets its next request before this response is written out.
            self.front.pool.release(process)
        self.client.write(data)
        self._finish(True)
        return True

    def on_response_head(self, upstream: UpstreamConnection) -> None:
        """The worker's response head has come (with the body so far, often all of it)."""
        self.status = status = upstream.status
        self.state = RELAYING
        process = self.process
        if process is not None and process.queued:
            # It has started: no longer waiting behind another request to be reclaimed.
            self.front.pool.unqueue(process, self)
        if upstream.plain and upstream.has_length and self.keep_alive and status >= 200 \
                and self.request.version == "1.1" and not self.front.closing \
                and upstream.head.startswith(b"HTTP/1.1 "):
            # The common case: the worker's head goes out as it came, plus the request id.
            parts = [upstream.head, b"X-Request-Id: ", self.request_id, b"\r\n\r\n"]
        else:
            parts = self._response_head(upstream)
        # The head and what came of the body are joined once, into one write.
        if upstream.complete:
            # Held until on_response_end() has handed the worker its next request: the
            # worker starts on it while we write this response out.
            if not self.head_only:
                parts += upstream.body
                self.sent = sum(map(len, upstream.body))
            self.complete_response = b"".join(parts)
            return
        if upstream.body:
            data = b"".join(upstream.body)
            if data:
                self.sent = len(data)
                parts.append(self._frame(data))
        self.client.write(b"".join(parts))
        if self.client.paused_writing:
            upstream.pause()

    def on_response_body(self, chunk: bytes) -> None:
        """More of a streamed response body."""
        if chunk and not self.head_only:
            self.sent += len(chunk)
            self.client.write(self._frame(chunk))

    def on_response_end(self, upstream: UpstreamConnection) -> None:
        """The response is complete: keep the connection, free the worker, finish."""
        if self.chunked:
            self.client.write(b"0\r\n\r\n")
        process = self.process
        self._detach()
        if process is not None:
            # Not reused while a streamed body is still being written (the app answered
            # before reading it): the worker would take the next request for body bytes.
            if upstream.keep_alive and upstream.usable and process.state is READY:
                process.connections.append(upstream)
            else:
                upstream.close()
            self.front.pool.release(process)
        if self.complete_response is not None:
            self.client.write(self.complete_response)
            self.complete_response = None
        self._finish(self.keep_alive)

    def _response_head(self, upstream: UpstreamConnection) -> list[bytes]:
        """The pieces of the response head, rebuilt field by field (hop-by-hop fields
        dropped, framing and Connection set for this client)."""
        status = upstream.status
        raw = upstream.headers
        dropped = HOP_BY_HOP | connection_tokens(raw) if len(raw) else HOP_BY_HOP
        parts = [b"HTTP/1.1 ", str(status).encode(), b" ", upstream.reason, b"\r\n"]
        has_length = False
        for name, value in raw:
            lower = name.lower()
            if lower in dropped:
                continue
            if lower == b"content-length":
                has_length = True
            parts += (name, b": ", value, b"\r\n")
        no_body = status < 200 or status in NO_BODY_STATUS
        if not has_length and not no_body:
            if upstream.complete:
                if not self.head_only:
                    parts += (b"Content-Length: ",
                              str(sum(map(len, upstream.body))).encode(), b"\r\n")
            elif self.request.version == "1.1":
                self.chunked = not self.head_only
                if self.chunked:
                    parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False  # HTTP/1.0 client: the end of the body is the close
        parts += (b"X-Request-Id: ", self.request_id, b"\r\n")
        if not self.keep_alive or self.front.closing:
            self.keep_alive = False
            parts.append(b"Connection: close\r\n\r\n")
        elif self.request.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        return parts

    def _frame(self, data: bytes) -> bytes:
        if self.chunked:
            return b"%x\r\n%b\r\n" % (len(data), data)
        return data
