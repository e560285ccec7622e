"""ASGIServer over real Unix sockets: what only ASGI has (the scope, concurrency,
``http.disconnect``, lifespan, WebSocket refusal).

What the WSGI and ASGI servers do alike is tested against both in test_http_server.py.
The server (its own event loop) runs in a background thread; clients are raw sockets and
``http.client``. Tests synchronise on events, never on sleeps. Apps wait for the test
thread with ``asyncio.to_thread(event.wait)`` so the server's loop keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import shutil
import threading
from typing import Any

import pytest

from tests.apps.http_probe import http_only, read_body, respond
from tests.helpers import WAIT, make_listener
from tests.http_serving import serve
from tui_passenger.runtime.asgi_server import ASGIServer, LifespanError

serve_asgi = functools.partial(serve, ASGIServer)


@http_only
async def echo_app(scope, receive, send):
    body = await read_body(receive)
    await respond(send, f"{scope['method']} {scope['path']} ".encode() + body)


# --- scope ---------------------------------------------------------------------------------------


def test_scope_keys() -> None:
    seen: dict[str, Any] = {}

    @http_only
    async def app(scope, receive, send):
        seen.update(scope)
        await respond(send, b"")

    with serve_asgi(app) as srv:
        srv.get("/caf%C3%A9/a%20b?x=1", headers={"Host": "example.com:8080", "X-Multi": "a"})
    assert seen["type"] == "http"
    assert seen["asgi"]["version"] == "3.0"
    assert seen["http_version"] == "1.1"
    assert seen["path"] == "/café/a b"
    assert seen["raw_path"] == b"/caf%C3%A9/a%20b"
    assert seen["query_string"] == b"x=1"
    assert (b"host", b"example.com:8080") in seen["headers"]
    assert (b"x-multi", b"a") in seen["headers"]
    assert all(name == name.lower() for name, _ in seen["headers"])
    assert seen["client"] == ("127.0.0.1", 0)
    assert seen["server"] == ("example.com", 8080)


# --- connections and responses --------------------------------------------------------------------


def test_app_connection_close_header_is_honoured() -> None:
    @http_only
    async def app(scope, receive, send):
        await respond(send, b"bye", headers=[(b"connection", b"close")])

    with serve_asgi(app) as srv:
        client = srv.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = client.response()
        assert (resp.status, resp.body, resp.headers["connection"]) == (200, b"bye", "close")
        assert client.at_eof()
        client.close()


def test_app_returning_without_a_response_gives_500() -> None:
    @http_only
    async def app(scope, receive, send):
        return

    with serve_asgi(app) as srv:
        assert srv.get()[0].status == 500
    assert "without starting the response" in srv.log.getvalue()


UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_websocket_upgrade_reaches_the_app_as_a_websocket_scope() -> None:
    # An app that only speaks HTTP fails on the websocket scope: a 500, never a 200.
    with serve_asgi(echo_app) as srv:
        client = srv.client()
        client.send(UPGRADE)
        assert client.response().status == 500
        assert client.at_eof()
        client.close()
        assert srv.server.requests_served == 0


def test_websocket_upgrade_without_wsproto_is_refused_with_501(monkeypatch) -> None:
    from tui_passenger.runtime import asgi_websocket

    monkeypatch.setattr(asgi_websocket, "MISSING", "no wsproto (pip install wsproto)")
    with serve_asgi(echo_app) as srv:
        client = srv.client()
        client.send(UPGRADE)
        response = client.response()
        assert response.status == 501
        assert b"pip install wsproto" in response.body
        assert client.at_eof()
        client.close()


# --- concurrency, disconnects ---------------------------------------------------------------------


def test_two_slow_requests_run_concurrently() -> None:
    started: dict[str, asyncio.Event] = {}

    @http_only
    async def app(scope, receive, send):
        for name in ("/a", "/b"):
            started.setdefault(name, asyncio.Event())
        started[scope["path"]].set()
        other = "/b" if scope["path"] == "/a" else "/a"
        # Each request waits until the other one has started: only overlap lets both finish.
        await asyncio.wait_for(started[other].wait(), WAIT)
        await respond(send, scope["path"].encode())

    with serve_asgi(app) as srv:
        a, b = srv.client(), srv.client()
        a.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        b.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (a.response().body, b.response().body) == (b"/a", b"/b")
        a.close()
        b.close()


def test_http_disconnect_is_delivered() -> None:
    got_body, disconnected = threading.Event(), threading.Event()
    messages: list[dict] = []

    @http_only
    async def app(scope, receive, send):
        if scope["path"] == "/after-response":
            await respond(send, b"done")
            messages.append(await receive())
            return
        await read_body(receive)
        got_body.set()
        messages.append(await receive())  # blocks until the client goes away
        disconnected.set()
        with contextlib.suppress(OSError):  # spec 2.4: send() on a closed connection raises
            await respond(send, b"too late")
            messages.append({"type": "send did not raise"})

    with serve_asgi(app) as srv:
        client = srv.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert got_body.wait(WAIT)
        client.close()
        assert disconnected.wait(WAIT)
        assert srv.get("/after-response")[1] == b"done"
    assert messages == [{"type": "http.disconnect"}, {"type": "http.disconnect"}]


# --- lifespan, stopping ---------------------------------------------------------------------------


def test_lifespan_startup_state_and_shutdown() -> None:
    calls: list[str] = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            assert (await receive())["type"] == "lifespan.startup"
            calls.append("startup")
            scope["state"]["db"] = "connected"
            await send({"type": "lifespan.startup.complete"})
            assert (await receive())["type"] == "lifespan.shutdown"
            calls.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        calls.append("request")
        await respond(send, scope["state"]["db"].encode())

    with serve_asgi(app) as srv:
        assert calls == ["startup"]
        assert srv.get()[1] == b"connected"
        srv.stop()
    assert calls == ["startup", "request", "shutdown"]


def test_lifespan_startup_failed_raises() -> None:
    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    listener, _, directory = make_listener()
    try:
        server = ASGIServer(app, listener, error_log=io.StringIO())
        with pytest.raises(LifespanError, match="no database"):
            server.start()
    finally:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_app_without_lifespan_support_still_starts() -> None:
    async def app(scope, receive, send):
        assert scope["type"] == "http", "lifespan not supported"
        await respond(send, b"plain")

    with serve_asgi(app) as srv:
        assert srv.get()[1] == b"plain"
    assert "lifespan" in srv.log.getvalue()


def test_stop_closes_idle_connections_at_once_and_shuts_down_after_the_request() -> None:
    # The common part (the request in flight is finished) is in test_http_server.py.
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            calls.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/slow":
            started.set()
            assert await asyncio.to_thread(release.wait, WAIT)
        calls.append("done " + scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part1 ", "more_body": True})
        await send({"type": "http.response.body", "body": b"part2"})

    with serve_asgi(app) as srv:
        idle = srv.client()
        idle.send(b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.response().body == b"part1 part2"
        busy = srv.client()
        busy.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert started.wait(WAIT)
        srv.server.request_stop()
        assert idle.at_eof()  # while the request in flight still runs
        release.set()
        assert busy.response().body == b"part1 part2"
        srv.stop()
        idle.close()
        busy.close()
    # Lifespan shutdown runs after the request in flight has finished.
    assert calls == ["done /warm", "done /slow", "shutdown"]
