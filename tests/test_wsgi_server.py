"""WSGIServer over real Unix sockets: environ, framing, keep-alive, streaming, errors, stop.

The server runs in a background thread; clients are raw sockets and ``http.client``.
Tests synchronise on events, never on sleeps.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.helpers import WAIT, Client, UnixHTTPConnection
from tui_passenger.runtime.wsgi_server import WSGIServer


@dataclass
class Running:
    server: WSGIServer
    path: str
    log: io.StringIO
    thread: threading.Thread

    def client(self) -> Client:
        return Client(self.path)

    def http(self) -> UnixHTTPConnection:
        return UnixHTTPConnection(self.path)

    def get(self, url: str = "/", method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        conn = self.http()
        conn.request(method, url, body=body, headers=headers or {})
        response = conn.getresponse()
        response.data = response.read()  # type: ignore[attr-defined]
        conn.close()
        return response


@contextlib.contextmanager
def serve(app: Callable, *, before: Callable[[WSGIServer], None] | None = None,
          **kwargs) -> Iterator[Running]:
    # AF_UNIX paths must stay under 108 bytes, which pytest's tmp_path may not.
    directory = tempfile.mkdtemp(prefix="tp-")
    path = os.path.join(directory, "w.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    log = io.StringIO()
    server = WSGIServer(app, listener, error_log=log, **kwargs)
    server.start()
    if before is not None:
        before(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Running(server, path, log, thread)
    finally:
        server.request_stop()
        thread.join(WAIT)
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)
    assert not thread.is_alive(), "serve_forever did not return after request_stop()"


def environ_app(environ, start_response):
    """Answer with the environ's plain-valued keys as JSON."""
    body = environ["wsgi.input"].read()
    data = {k: v for k, v in environ.items() if isinstance(v, (str, int, bool, tuple))}
    data["body"] = body.decode("latin-1")
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(data).encode()]


def echo_app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["REQUEST_METHOD"].encode() + b" " + environ["PATH_INFO"].encode() + b" "
            + body]


# --- environ -------------------------------------------------------------------------------


def test_get_with_query_and_percent_encoded_path() -> None:
    with serve(environ_app) as srv:
        resp = srv.get("/caf%C3%A9/a%20b%2Fc?x=1&y=%20z", headers={"Host": "example.com:8080"})
        env = json.loads(resp.data)
    assert resp.status == 200
    assert env["REQUEST_METHOD"] == "GET"
    # PEP 3333: decoded bytes carried in a latin-1 str.
    assert env["PATH_INFO"] == "/café/a b/c".encode().decode("latin-1")
    assert env["QUERY_STRING"] == "x=1&y=%20z"
    assert env["RAW_URI"] == "/caf%C3%A9/a%20b%2Fc?x=1&y=%20z"
    assert env["SCRIPT_NAME"] == ""
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "8080")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_environ_keys() -> None:
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [])
        return [b""]

    with serve(app) as srv:
        client = srv.client()
        client.send(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Type: text/x\r\nContent-Length: 0\r\n"
                    b"X-Multi: a\r\nX-Multi: b\r\nCookie: a=1\r\nCookie: b=2\r\n"
                    b"X-Spoof_Me: no\r\nUser-Agent: t\r\n\r\n")
        assert client.response().status == 200
        client.close()
    assert seen["wsgi.version"] == (1, 0)
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["wsgi.multithread"] is False
    assert seen["wsgi.multiprocess"] is True
    assert seen["wsgi.run_once"] is False
    assert seen["wsgi.input_terminated"] is True
    assert seen["wsgi.errors"] is srv.log
    assert callable(seen["wsgi.file_wrapper"])
    assert seen["CONTENT_TYPE"] == "text/x"
    assert seen["CONTENT_LENGTH"] == "0"
    assert "HTTP_CONTENT_TYPE" not in seen and "HTTP_CONTENT_LENGTH" not in seen
    assert seen["HTTP_X_MULTI"] == "a,b"
    assert seen["HTTP_COOKIE"] == "a=1; b=2"
    assert seen["HTTP_USER_AGENT"] == "t"
    assert "HTTP_X_SPOOF_ME" not in seen  # names with "_" are dropped
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("h", "80")
    # A Unix-socket peer without X-Passenger-Remote-Addr is the loopback address.
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("127.0.0.1", "0")
    assert srv.server.requests_served == 1


@pytest.mark.parametrize(("path", "script_name", "path_info"), [
    ("/api/users/1", "/api", "/users/1"),
    ("/api", "/api", ""),
    ("/api/", "/api", "/"),
    ("/apix/y", "", "/apix/y"),  # not at a segment boundary
    ("/other", "", "/other"),
])
def test_passenger_script_name(path: str, script_name: str, path_info: str) -> None:
    with serve(environ_app) as srv:
        env = json.loads(srv.get(path, headers={"X-Passenger-Script-Name": "/api/"}).data)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == (script_name, path_info)
    assert not any(k.startswith("HTTP_X_PASSENGER") for k in env)


@pytest.mark.parametrize(("value", "addr", "port"), [
    ("203.0.113.9:4321", "203.0.113.9", "4321"),
    ("203.0.113.9", "203.0.113.9", "0"),
    ("[2001:db8::1]:8443", "2001:db8::1", "8443"),
    ("2001:db8::2", "2001:db8::2", "0"),
])
def test_passenger_remote_addr_and_scheme(value: str, addr: str, port: str) -> None:
    with serve(environ_app) as srv:
        env = json.loads(srv.get("/", headers={
            "X-Passenger-Remote-Addr": value, "X-Passenger-Scheme": "https",
            "Host": "example.org"}).data)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == (addr, port)
    assert env["wsgi.url_scheme"] == "https"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.org", "443")
    assert not any(k.startswith("HTTP_X_PASSENGER") for k in env)


# --- connections and framing ----------------------------------------------------------------------


def test_keep_alive_two_requests_on_one_connection() -> None:
    with serve(echo_app) as srv:
        conn = srv.http()
        for path in ("/one", "/two"):
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.read() == f"GET {path} ".encode()
            assert resp.getheader("Connection") is None
        sock = conn.sock
        conn.request("GET", "/three")
        assert conn.getresponse().read() == b"GET /three "
        assert conn.sock is sock  # still the first connection
        conn.close()


def test_pipelined_requests_answered_in_order() -> None:
    with serve(echo_app) as srv:
        client = srv.client()
        client.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz"
                    b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
        assert [client.response().body for _ in range(3)] == [b"GET /a ", b"POST /b xyz",
                                                               b"GET /c "]
        client.close()
    assert srv.server.requests_served == 3


def test_connection_close() -> None:
    with serve(echo_app) as srv:
        client = srv.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        resp = client.response()
        assert resp.headers["connection"] == "close"
        assert client.at_eof()
        client.close()


def test_http10_closes_unless_keep_alive() -> None:
    def gen_app(environ, start_response):
        start_response("200 OK", [])
        yield b"a"
        yield b"b"

    with serve(gen_app) as srv:
        client = srv.client()
        client.send(b"GET / HTTP/1.0\r\n\r\n")
        resp = client.response()
        # No chunked encoding for HTTP/1.0: the body ends at EOF.
        assert "transfer-encoding" not in resp.headers
        assert resp.headers["connection"] == "close"
        assert resp.body == b"ab"
        client.close()
    with serve(echo_app) as srv:
        client = srv.client()
        client.send(b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        resp = client.response()
        assert resp.headers["connection"] == "keep-alive"
        assert resp.body == b"GET /1 "
        client.send(b"GET /2 HTTP/1.0\r\n\r\n")
        assert client.response().body == b"GET /2 "
        assert client.at_eof()
        client.close()


def test_post_with_content_length_and_chunked_body() -> None:
    def app(environ, start_response):
        stream = environ["wsgi.input"]
        first = stream.readline()
        rest = list(stream)
        start_response("200 OK", [])
        return [b"|".join([first, *rest])]

    with serve(app) as srv:
        resp = srv.get("/", "POST", body=b"l1\nl2\nl3", headers={"Content-Length": "8"})
        assert resp.data == b"l1\n|l2\n|l3"
        client = srv.client()
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nab\n\r\n5\r\ncd\nef\r\n0\r\n\r\n")
        assert client.response().body == b"ab\n|cd\n|ef"
        client.close()


def test_wsgi_input_streams_while_the_client_is_sending() -> None:
    got_first = threading.Event()
    pieces = []

    def app(environ, start_response):
        stream = environ["wsgi.input"]
        pieces.append(stream.read(5))
        got_first.set()  # the rest of the body has not been sent yet
        pieces.append(stream.read(3))
        pieces.append(stream.read())
        start_response("200 OK", [])
        return [b"".join(pieces)]

    with serve(app) as srv:
        client = srv.client()
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nhello")
        assert got_first.wait(WAIT)
        client.send(b" world!")
        resp = client.response()
        assert resp.body == b"hello world!"
        assert pieces == [b"hello", b" wo", b"rld!"]
        client.close()


def test_unread_body_is_drained_before_the_next_request() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        return [environ["PATH_INFO"].encode()]

    with serve(app) as srv:
        client = srv.client()
        body = b"x" * 300_000
        client.send(b"POST /ignored HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        # Send the body from a thread: the server only reads it after answering.
        sender = threading.Thread(target=client.send, args=(body + b"GET /next HTTP/1.1\r\n\r\n",))
        sender.start()
        assert client.response().body == b"/ignored"
        assert client.response().body == b"/next"
        sender.join(WAIT)
        client.close()


def test_huge_unread_body_closes_the_connection() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    with serve(app) as srv:
        client = srv.client()
        size = 8 * 1024 * 1024
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)

        def send_body() -> None:
            with contextlib.suppress(OSError):
                client.sock.sendall(b"x" * size)

        sender = threading.Thread(target=send_body)
        sender.start()
        assert client.response().body == b"ok"
        assert client.at_eof()
        client.close()
        sender.join(WAIT)


def test_expect_100_continue() -> None:
    with serve(echo_app) as srv:
        client = srv.client()
        client.send(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                    b"Expect: 100-continue\r\n\r\n")
        interim = client.response()  # sent when the app first reads the body
        assert interim.status == 100
        client.send(b"data")
        assert client.response().body == b"POST /e data"
        client.close()


def test_expect_100_continue_not_sent_if_the_body_is_never_read() -> None:
    def app(environ, start_response):
        start_response("413 Content Too Large", [])
        return [b"no"]

    with serve(app) as srv:
        client = srv.client()
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                    b"Expect: 100-continue\r\n\r\n")
        resp = client.response()
        assert (resp.status, resp.body) == (413, b"no")
        # The client may never send the body: the connection cannot be reused.
        assert resp.headers["connection"] == "close"
        assert client.at_eof()
        client.close()


def test_write_callable() -> None:
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"Hello, ")
        write(b"")
        write(b"world")
        return [b"!"]

    with serve(app) as srv:
        client = srv.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = client.response()
        assert resp.headers["transfer-encoding"] == "chunked"
        assert resp.body == b"Hello, world!"
        client.close()


def test_generator_response_is_chunked_and_content_length_respected() -> None:
    def app(environ, start_response):
        headers = [("Content-Length", "6")] if environ["PATH_INFO"] == "/cl" else []
        start_response("200 OK", headers)
        yield b""
        yield b"abc"
        yield b"def"

    with serve(app) as srv:
        client = srv.client()
        client.send(b"GET /gen HTTP/1.1\r\nHost: x\r\n\r\nGET /cl HTTP/1.1\r\nHost: x\r\n\r\n")
        chunked = client.response()
        assert chunked.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in chunked.headers
        assert chunked.body == b"abcdef"
        sized = client.response()
        assert sized.headers["content-length"] == "6"
        assert "transfer-encoding" not in sized.headers
        assert sized.body == b"abcdef"
        client.close()


def test_single_item_list_gets_content_length_and_date() -> None:
    with serve(echo_app) as srv:
        resp = srv.get("/x")
    assert resp.getheader("Content-Length") == str(len(b"GET /x "))
    assert resp.getheader("Date", "").endswith(" GMT")
    assert resp.getheader("Transfer-Encoding") is None


def test_head_sends_headers_but_no_body() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    with serve(app) as srv:
        client = srv.client()
        client.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = client.response(head=True)
        assert head.headers["content-length"] == "5"
        # If the HEAD response had carried a body, this would read it as the next response.
        assert client.response().body == b"hello"
        client.close()


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses(status: str) -> None:
    def app(environ, start_response):
        start_response(status, [])
        return [b"ignored"]

    with serve(app) as srv:
        client = srv.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(2):
            resp = client.response()
            assert resp.status == int(status[:3])
            assert "content-length" not in resp.headers
            assert "transfer-encoding" not in resp.headers
        client.close()


# --- errors --------------------------------------------------------------------------------------


class Closing:
    """A response iterable that records close()."""

    def __init__(self, chunks: list[bytes], fail_at: int | None = None) -> None:
        self.chunks, self.fail_at, self.closed = chunks, fail_at, False

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("boom in the middle")
            yield chunk

    def close(self) -> None:
        self.closed = True


def test_iterable_close_is_called() -> None:
    made: list[Closing] = []

    def app(environ, start_response):
        start_response("200 OK", [])
        made.append(Closing([b"a", b"b"]))
        return made[-1]

    with serve(app) as srv:
        assert srv.get().data == b"ab"
    assert made[0].closed


def test_app_raising_mid_iteration_closes_connection_and_iterable() -> None:
    made: list[Closing] = []

    def app(environ, start_response):
        start_response("200 OK", [])
        made.append(Closing([b"a", b"b", b"c"], fail_at=2))
        return made[-1]

    with serve(app) as srv:
        client = srv.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        line = client.file.readline()
        assert line.startswith(b"HTTP/1.1 200")
        rest = client.file.read()  # truncated: no last chunk, then EOF
        assert not rest.endswith(b"0\r\n\r\n")
        client.close()
    assert made[0].closed
    assert "boom in the middle" in srv.log.getvalue()


@pytest.mark.parametrize("development", [False, True])
def test_app_exception_gives_500(development: bool) -> None:
    def app(environ, start_response):
        raise ValueError("secret detail")

    with serve(app, development=development) as srv:
        resp = srv.get()
        assert resp.status == 500
        assert resp.data.startswith(b"Internal Server Error")
        assert (b"secret detail" in resp.data) is development
        assert (b"Traceback" in resp.data) is development
        assert "ValueError: secret detail" in srv.log.getvalue()
        assert srv.get().status == 500  # the server carries on


def test_exc_info_replaces_headers_not_yet_sent() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("X-First", "1")])
        try:
            raise KeyError("oops")
        except KeyError:
            start_response("503 Service Unavailable", [("X-Second", "2")], sys.exc_info())
        return [b"sorry"]

    with serve(app) as srv:
        resp = srv.get()
    assert (resp.status, resp.data) == (503, b"sorry")
    assert resp.getheader("X-Second") == "2" and resp.getheader("X-First") is None


def test_exc_info_reraises_once_headers_are_sent() -> None:
    reraised = []

    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"partial")
        try:
            raise KeyError("late failure")
        except KeyError:
            try:
                start_response("500 Internal Server Error", [], sys.exc_info())
            except KeyError as exc:
                reraised.append(exc)
                raise
        return [b""]

    with serve(app) as srv:
        client = srv.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = client.file.read()  # the connection is closed mid-response
        assert data.startswith(b"HTTP/1.1 200") and b"partial" in data
        client.close()
    assert len(reraised) == 1
    assert "late failure" in srv.log.getvalue()


def test_start_response_twice_without_exc_info_is_an_error() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b""]

    with serve(app) as srv:
        assert srv.get().status == 500
    assert "start_response() called again" in srv.log.getvalue()


@pytest.mark.parametrize("headers", [[("Connection", "close")], [("X-A", "1\r\nX-B: 2")]])
def test_forbidden_response_headers_are_app_errors(headers: list) -> None:
    def app(environ, start_response):
        start_response("200 OK", headers)
        return [b"x"]

    with serve(app) as srv:
        resp = srv.get()
    assert resp.status == 500
    assert resp.getheader("X-B") is None


@pytest.mark.parametrize("request_bytes", [
    b"NOT-HTTP\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
])
def test_malformed_request_gives_400(request_bytes: bytes) -> None:
    calls = []

    def app(environ, start_response):
        calls.append(1)
        start_response("200 OK", [])
        return [b""]

    with serve(app) as srv:
        client = srv.client()
        client.send(request_bytes)
        resp = client.response()
        assert resp.status == 400
        assert resp.body.startswith(b"Bad Request")
        assert client.at_eof()
        client.close()
    assert calls == []


def test_malformed_chunked_body_gives_400() -> None:
    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b"not reached"]

    with serve(app) as srv:
        client = srv.client()
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        resp = client.response()
        assert resp.status == 400
        assert client.at_eof()
        client.close()


# --- one at a time, stopping, watched fds ---------------------------------------------------------


def test_two_connections_are_served_one_after_the_other() -> None:
    events: list[str] = []
    a_started, release_a = threading.Event(), threading.Event()

    def app(environ, start_response):
        name = environ["PATH_INFO"]
        events.append(f"start {name}")
        if name == "/a":
            a_started.set()
            assert release_a.wait(WAIT)
        events.append(f"end {name}")
        start_response("200 OK", [])
        return [name.encode()]

    with serve(app) as srv:
        first, second = srv.client(), srv.client()
        first.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert a_started.wait(WAIT)
        second.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        release_a.set()
        assert second.response().body == b"/b"
        assert first.response().body == b"/a"
        first.close()
        second.close()
    assert events == ["start /a", "end /a", "start /b", "end /b"]


def test_request_stop_finishes_the_request_in_flight() -> None:
    started, release = threading.Event(), threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            started.set()
            assert release.wait(WAIT)
        start_response("200 OK", [])
        return [b"done " + environ["PATH_INFO"].encode()]

    with serve(app) as srv:
        idle = srv.client()
        idle.send(b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.response().body == b"done /warm"
        busy = srv.client()
        busy.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert started.wait(WAIT)
        srv.server.request_stop()
        release.set()
        resp = busy.response()
        assert resp.body == b"done /slow"
        assert resp.headers["connection"] == "close"
        srv.thread.join(WAIT)
        assert not srv.thread.is_alive()
        assert busy.at_eof()
        assert idle.at_eof()  # idle keep-alive connections are closed too
        busy.close()
        idle.close()
        assert srv.server.requests_served == 2


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
            assert srv.get("/still").data == b"GET /still "  # and requests still work
    finally:
        os.close(r)
        os.close(w)


def test_file_wrapper() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"0123456789"), 4)

    with serve(app) as srv:
        assert srv.get().data == b"0123456789"


def test_malformed_body_while_draining_closes_the_connection() -> None:
    def app(environ, start_response):  # answers without reading the body
        start_response("200 OK", [])
        return [b"ok"]

    with serve(app) as srv:
        client = srv.client()
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        assert client.response().body == b"ok"
        client.send(b"zz\r\n")  # not a chunk size
        assert client.at_eof()
        client.close()


def test_tcp_listener_reports_the_peer_address() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    server = WSGIServer(environ_app, listener, error_log=io.StringIO())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection(*listener.getsockname(), timeout=WAIT)
        conn.request("GET", "/tcp")
        env = json.loads(conn.getresponse().read())
        assert env["REMOTE_ADDR"] == "127.0.0.1"
        assert env["REMOTE_PORT"] == str(conn.sock.getsockname()[1])
        conn.close()
    finally:
        server.request_stop()
        thread.join(WAIT)
        listener.close()
    assert not thread.is_alive()
