"""ASGIServer over real Unix sockets: scope, framing, streaming, concurrency, lifespan, stop.

The server (its own event loop) runs in a background thread; clients are raw sockets and
``http.client``. Tests synchronise on events, never on sleeps. Apps wait for the test
thread with ``asyncio.to_thread(event.wait)`` so the server's loop keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import json
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.helpers import WAIT, Client, UnixHTTPConnection, make_listener
from tui_passenger.runtime.asgi_server import ASGIServer, LifespanError


@dataclass
class Running:
    server: ASGIServer
    path: str
    log: io.StringIO
    thread: threading.Thread

    def client(self) -> Client:
        return Client(self.path)

    def get(self, url: str = "/", method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, bytes]:
        conn = UnixHTTPConnection(self.path)
        conn.request(method, url, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response, data




@contextlib.contextmanager
def serve(app: Callable, *, before: Callable[[ASGIServer], None] | None = None,
          **kwargs) -> Iterator[Running]:
    listener, path, directory = make_listener()
    log = io.StringIO()
    server = ASGIServer(app, listener, error_log=log, **kwargs)
    if before is not None:
        before(server)
    started = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:  # start() and serve_forever() in the thread that owns the loop
        try:
            server.start()
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            failures.append(exc)
            return
        finally:
            started.set()
        server.serve_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert started.wait(WAIT)
        if failures:
            raise failures[0]
        yield Running(server, path, log, thread)
    finally:
        server.request_stop()
        thread.join(WAIT)
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)
    assert not thread.is_alive(), "serve_forever did not return after request_stop()"


async def read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def respond(send, body: bytes, status: int = 200, headers=()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


def http_only(app):
    """Wrap an HTTP-only test app so lifespan scopes are politely ignored."""
    async def wrapper(scope, receive, send):
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        await app(scope, receive, send)
    return wrapper


@http_only
async def scope_app(scope, receive, send):
    body = await read_body(receive)
    data = {k: v for k, v in scope.items() if k not in ("headers", "raw_path", "query_string",
                                                       "state")}
    data["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    data["raw_path"] = scope["raw_path"].decode("latin-1")
    data["query_string"] = scope["query_string"].decode("latin-1")
    data["body"] = body.decode("latin-1")
    await respond(send, json.dumps(data).encode(), headers=[(b"content-type", b"application/json")])


@http_only
async def echo_app(scope, receive, send):
    body = await read_body(receive)
    await respond(send, f"{scope['method']} {scope['path']} ".encode() + body)


# --- scope ---------------------------------------------------------------------------------------


def test_scope_for_get_with_query_and_percent_encoded_path() -> None:
    with serve(scope_app) as srv:
        resp, data = srv.get("/caf%C3%A9/a%20b?x=1&y=%20z",
                             headers={"Host": "example.com:8080", "X-Multi": "a"})
    scope = json.loads(data)
    assert resp.status == 200
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/a b"
    assert scope["raw_path"] == "/caf%C3%A9/a%20b"
    assert scope["query_string"] == "x=1&y=%20z"
    assert scope["root_path"] == ""
    assert ["host", "example.com:8080"] in scope["headers"]
    assert ["x-multi", "a"] in scope["headers"]
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert scope["client"] == ["127.0.0.1", 0]
    assert scope["server"] == ["example.com", 8080]


def test_passenger_headers_root_path_client_scheme() -> None:
    with serve(scope_app) as srv:
        _, data = srv.get("/api/users", headers={
            "X-Passenger-Script-Name": "/api", "X-Passenger-Remote-Addr": "[2001:db8::1]:8443",
            "X-Passenger-Scheme": "https", "Host": "example.org"})
        scope = json.loads(data)
        _, other = srv.get("/apix", headers={"X-Passenger-Script-Name": "/api"})
    # ASGI: path is the full path; root_path is the mount prefix.
    assert (scope["path"], scope["root_path"]) == ("/api/users", "/api")
    assert scope["client"] == ["2001:db8::1", 8443]
    assert scope["scheme"] == "https"
    assert scope["server"] == ["example.org", 443]
    assert not any(name.startswith("x-passenger") for name, _ in scope["headers"])
    assert json.loads(other)["root_path"] == ""  # not at a segment boundary


# --- connections and framing ----------------------------------------------------------------------


def test_keep_alive_and_pipelining() -> None:
    with serve(echo_app) as srv:
        client = srv.client()
        client.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.response().body == b"GET /one "
        client.send(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"POST /three HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                    b"GET /four HTTP/1.1\r\nHost: x\r\n\r\n")
        bodies = [client.response().body for _ in range(3)]
        assert bodies == [b"GET /two ", b"POST /three abc", b"GET /four "]
        client.close()
    assert srv.server.requests_served == 4


def test_connection_close_and_http10() -> None:
    with serve(echo_app) as srv:
        client = srv.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert client.response().headers["connection"] == "close"
        assert client.at_eof()
        client.close()
        client = srv.client()
        client.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        resp = client.response()
        assert (resp.headers["connection"], resp.body) == ("keep-alive", b"GET /a ")
        client.send(b"GET /b HTTP/1.0\r\n\r\n")
        assert client.response().body == b"GET /b "
        assert client.at_eof()
        client.close()


def test_post_with_content_length_and_chunked_body() -> None:
    with serve(echo_app) as srv:
        _, data = srv.get("/p", "POST", body=b"hello", headers={"Content-Length": "5"})
        assert data == b"POST /p hello"
        client = srv.client()
        client.send(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        assert client.response().body == b"POST /c abcdefg"
        client.close()


def test_request_body_streams_while_the_client_is_sending() -> None:
    got_first = threading.Event()

    @http_only
    async def app(scope, receive, send):
        first = await receive()
        assert first["more_body"] is True
        got_first.set()  # the rest has not been sent yet
        rest = await read_body(receive)
        await respond(send, first["body"] + b"|" + rest)

    with serve(app) as srv:
        client = srv.client()
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello")
        assert got_first.wait(WAIT)
        client.send(b" world")
        assert client.response().body == b"hello| world"
        client.close()


def test_large_body_is_flow_controlled() -> None:
    @http_only
    async def app(scope, receive, send):
        body = await read_body(receive)
        await respond(send, str(len(body)).encode())

    with serve(app) as srv:
        body = os.urandom(3 * 1024 * 1024)
        _, data = srv.get("/", "POST", body=body)
        assert data == str(len(body)).encode()


def test_unread_body_is_drained_before_the_next_request() -> None:
    @http_only
    async def app(scope, receive, send):
        await respond(send, scope["path"].encode())

    with serve(app) as srv:
        client = srv.client()
        body = b"x" * 300_000
        client.send(b"POST /ignored HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        sender = threading.Thread(target=client.send, args=(body + b"GET /next HTTP/1.1\r\n\r\n",))
        sender.start()
        assert client.response().body == b"/ignored"
        assert client.response().body == b"/next"
        sender.join(WAIT)
        client.close()


def test_expect_100_continue() -> None:
    with serve(echo_app) as srv:
        client = srv.client()
        client.send(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                    b"Expect: 100-continue\r\n\r\n")
        assert client.response().status == 100  # on the app's first receive()
        client.send(b"data")
        assert client.response().body == b"POST /e data"
        client.close()


def test_response_framing() -> None:
    @http_only
    async def app(scope, receive, send):
        path = scope["path"]
        headers = [(b"content-length", b"6")] if path == "/cl" else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if path == "/single":
            await send({"type": "http.response.body", "body": b"abcdef"})
            return
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        await send({"type": "http.response.body", "body": b"def", "more_body": False})

    with serve(app) as srv:
        client = srv.client()
        client.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /single HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /cl HTTP/1.1\r\nHost: x\r\n\r\n")
        streamed, single, sized = (client.response() for _ in range(3))
        client.close()
    assert streamed.headers["transfer-encoding"] == "chunked"
    assert streamed.body == b"abcdef"
    assert single.headers["content-length"] == "6" and "transfer-encoding" not in single.headers
    assert single.headers["date"].endswith(" GMT")
    assert sized.headers["content-length"] == "6" and "transfer-encoding" not in sized.headers
    assert streamed.body == single.body == sized.body


def test_head_and_no_body_statuses() -> None:
    @http_only
    async def app(scope, receive, send):
        status = int(scope["path"][1:] or 200)
        await respond(send, b"hello", status=status)

    with serve(app) as srv:
        client = srv.client()
        client.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /204 HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /304 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = client.response(head=True)
        assert head.headers["content-length"] == "5"
        for status in (204, 304):
            resp = client.response()
            assert resp.status == status
            assert "content-length" not in resp.headers
            assert "transfer-encoding" not in resp.headers
        # Had any of those carried body bytes, this would not parse as the last response.
        assert client.response().body == b"hello"
        client.close()


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("development", [False, True])
def test_app_exception_gives_500(development: bool) -> None:
    @http_only
    async def app(scope, receive, send):
        if scope["path"] == "/after-start":  # not flushed yet: still replaceable by a 500
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ValueError("secret detail")

    with serve(app, development=development) as srv:
        for path in ("/", "/after-start"):
            resp, data = srv.get(path)
            assert resp.status == 500
            assert data.startswith(b"Internal Server Error")
            assert (b"secret detail" in data) is development
        assert "ValueError: secret detail" in srv.log.getvalue()


def test_app_exception_after_body_started_closes_the_connection() -> None:
    @http_only
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("late failure")

    with serve(app) as srv:
        client = srv.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = client.file.read()
        assert data.startswith(b"HTTP/1.1 200") and b"partial" in data
        assert not data.endswith(b"0\r\n\r\n")  # truncated
        client.close()
    assert "late failure" in srv.log.getvalue()


def test_app_returning_without_a_response_gives_500() -> None:
    @http_only
    async def app(scope, receive, send):
        return

    with serve(app) as srv:
        assert srv.get()[0].status == 500
    assert "without starting the response" in srv.log.getvalue()


@pytest.mark.parametrize("request_bytes", [
    b"NOT-HTTP\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
])
def test_malformed_request_gives_400(request_bytes: bytes) -> None:
    with serve(echo_app) as srv:
        client = srv.client()
        client.send(request_bytes)
        resp = client.response()
        assert resp.status == 400
        assert client.at_eof()
        client.close()
        assert srv.server.requests_served == 0


def test_websocket_upgrade_is_refused() -> None:
    with serve(echo_app) as srv:
        client = srv.client()
        client.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert client.response().status == 400
        assert client.at_eof()
        client.close()
        assert srv.server.requests_served == 0


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

    with serve(app) as srv:
        a, b = srv.client(), srv.client()
        a.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        b.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (a.response().body, b.response().body) == (b"/a", b"/b")
        a.close()
        b.close()


def test_concurrency_limit_queues_requests() -> None:
    events: list[str] = []
    a_started, release_a = threading.Event(), threading.Event()

    @http_only
    async def app(scope, receive, send):
        events.append("start " + scope["path"])
        if scope["path"] == "/a":
            a_started.set()
            assert await asyncio.to_thread(release_a.wait, WAIT)
        events.append("end " + scope["path"])
        await respond(send, b"ok")

    with serve(app, concurrency=1) as srv:
        a, b = srv.client(), srv.client()
        a.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert a_started.wait(WAIT)
        b.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        release_a.set()
        assert b.response().status == a.response().status == 200
        a.close()
        b.close()
    assert events == ["start /a", "end /a", "start /b", "end /b"]


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

    with serve(app) as srv:
        client = srv.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert got_body.wait(WAIT)
        client.close()
        assert disconnected.wait(WAIT)
        assert srv.get("/after-response")[1] == b"done"
    assert messages == [{"type": "http.disconnect"}, {"type": "http.disconnect"}]


# --- lifespan, stopping, watched fds --------------------------------------------------------------


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

    with serve(app) as srv:
        assert calls == ["startup"]
        assert srv.get()[1] == b"connected"
        srv.server.request_stop()
        srv.thread.join(WAIT)
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

    with serve(app) as srv:
        assert srv.get()[1] == b"plain"
    assert "lifespan" in srv.log.getvalue()


def test_request_stop_finishes_the_request_in_flight() -> None:
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

    with serve(app) as srv:
        idle = srv.client()
        idle.send(b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.response().body == b"part1 part2"
        busy = srv.client()
        busy.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert started.wait(WAIT)
        srv.server.request_stop()
        assert idle.at_eof()  # idle keep-alive connections close at once
        release.set()
        resp = busy.response()
        assert resp.body == b"part1 part2"
        assert resp.headers["connection"] == "close"
        assert busy.at_eof()
        srv.thread.join(WAIT)
        assert not srv.thread.is_alive()
        idle.close()
        busy.close()
    # Lifespan shutdown runs after the request in flight has finished.
    assert calls == ["done /warm", "done /slow", "shutdown"]


def test_watch_fd_callback_fires() -> None:
    r, w = os.pipe()
    fired = threading.Event()

    def on_readable() -> None:
        os.read(r, 100)
        fired.set()

    try:
        with serve(echo_app, before=lambda server: server.watch_fd(r, on_readable)) as srv:
            os.write(w, b"x")
            assert fired.wait(WAIT)
            assert srv.get("/still")[1] == b"GET /still "
    finally:
        os.close(r)
        os.close(w)


def test_malformed_body_after_the_response_closes_the_connection() -> None:
    @http_only
    async def app(scope, receive, send):  # answers without reading the body
        await respond(send, b"ok")

    with serve(app) as srv:
        client = srv.client()
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        assert client.response().body == b"ok"
        client.send(b"zz\r\n")  # not a chunk size
        assert client.at_eof()
        client.close()


def test_tcp_listener_reports_the_peer_address() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    server = ASGIServer(scope_app, listener, error_log=io.StringIO())

    def run() -> None:
        server.start()
        server.serve_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection(*listener.getsockname(), timeout=WAIT)
        conn.request("GET", "/tcp")
        scope = json.loads(conn.getresponse().read())
        assert scope["client"] == ["127.0.0.1", conn.sock.getsockname()[1]]
        conn.close()
    finally:
        server.request_stop()
        thread.join(WAIT)
        listener.close()
    assert not thread.is_alive()
