"""An app worker's own HTTP server (WSGIServer or ASGIServer) run in a thread for a test.

Apart from tests/serving.py (the whole tui-passenger server) on purpose: this module stays
light to import, as the worker servers are (the standard library and the two servers).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.client import HTTPResponse
from typing import Any

from tests.helpers import WAIT, Client, UnixHTTPConnection, make_listener
from tui_passenger.runtime.asgi_server import ASGIServer
from tui_passenger.runtime.wsgi_server import WSGIServer

AppServer = WSGIServer | ASGIServer


@dataclass
class Running:
    """A server serving in its thread, and how to reach it."""

    server: AppServer
    path: str  # of the Unix socket; "" for a TCP listener
    log: io.StringIO
    thread: threading.Thread

    def client(self) -> Client:
        """A raw socket connection."""
        return Client(self.path)

    def http(self) -> UnixHTTPConnection:
        """An ``http.client`` connection (not yet connected)."""
        return UnixHTTPConnection(self.path)

    def get(self, url: str = "/", method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[HTTPResponse, bytes]:
        """One request on a fresh connection: the response and its body."""
        conn = self.http()
        try:
            conn.request(method, url, body=body, headers=headers or {})
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()

    def post_both_ways(self, url: str, chunks: list[bytes]) -> tuple[bytes, bytes]:
        """POST the chunks' bytes with a Content-Length, then chunked (one chunk each) on a
        raw connection: the two response bodies."""
        _, sized = self.get(url, "POST", body=b"".join(chunks))
        encoded = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
        client = self.client()
        try:
            client.send(b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"%s0\r\n\r\n" % (url.encode(), encoded))
            return sized, client.response().body
        finally:
            client.close()

    def stop(self) -> None:
        """Ask the server to stop and wait (bounded) for ``serve_forever`` to return."""
        self.server.request_stop()
        self.thread.join(WAIT)


@contextlib.contextmanager
def serve(server_class: type[AppServer], app: Callable[..., Any], *,
          before: Callable[[Any], None] | None = None, listener: socket.socket | None = None,
          **options: Any) -> Iterator[Running]:
    """Serve ``app`` on a fresh Unix socket (or ``listener``); stopped on exit.

    ``before(server)`` runs before the server starts (to watch fds, say). ``start()`` runs in
    the serving thread, as an ASGI server's loop belongs to the thread that created it; an
    error it raises (an ASGI app refusing to start) is raised here.
    """
    directory = None
    path = ""
    if listener is None:
        listener, path, directory = make_listener()
    log = io.StringIO()
    server = server_class(app, listener, error_log=log, **options)
    if before is not None:
        before(server)
    started = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            server.start()
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            failures.append(exc)
            return
        finally:
            started.set()
        server.serve_forever()

    running = Running(server, path, log, threading.Thread(target=run, daemon=True))
    running.thread.start()
    try:
        assert started.wait(WAIT)
        if failures:
            raise failures[0]
        yield running
    finally:
        running.stop()
        listener.close()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    assert not running.thread.is_alive(), "serve_forever did not return after request_stop()"
