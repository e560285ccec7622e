"""WSGIServer over real Unix sockets: what only WSGI has (environ, ``wsgi.input``, the
``write`` callable, ``close()`` on the response iterable, ``exc_info``, the file wrapper).

What the WSGI and ASGI servers do alike is tested against both in test_http_server.py.
The server runs in a background thread; clients are raw sockets and ``http.client``.
Tests synchronise on events, never on sleeps.
"""

from __future__ import annotations

import functools
import io
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.http_serving import serve
from tui_passenger.runtime.wsgi_server import WSGIServer

serve_wsgi = functools.partial(serve, WSGIServer)


# --- environ and wsgi.input -----------------------------------------------------------------


def test_environ_keys() -> None:
    seen: dict[str, Any] = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [])
        return [b""]

    with serve_wsgi(app) as srv:
        client = srv.client()
        client.send(b"POST /caf%C3%A9/a%20b%2Fc?x=1 HTTP/1.1\r\nHost: h\r\n"
                    b"Content-Type: text/x\r\nContent-Length: 0\r\n"
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
    # PEP 3333: decoded bytes carried in a latin-1 str.
    assert seen["PATH_INFO"] == "/café/a b/c".encode().decode("latin-1")
    assert seen["RAW_URI"] == "/caf%C3%A9/a%20b%2Fc?x=1"
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert seen["SCRIPT_NAME"] == ""
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


def test_trailers_stay_out_of_the_environ() -> None:
    """Trailer fields of a chunked body come after the head: they reach no environ (neither
    this request's nor the next one's on the same connection)."""
    seen: list[dict[str, Any]] = []

    def app(environ, start_response):
        environ["wsgi.input"].read()
        seen.append(dict(environ))
        start_response("200 OK", [])
        return [b""]

    request = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n")
    with serve_wsgi(app) as srv:
        client = srv.client()
        for _ in range(2):
            client.send(request)
            assert client.response().status == 200
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert client.response().status == 200
        client.close()
    assert len(seen) == 3
    assert not any("HTTP_X_TRAILER" in env for env in seen), seen
    # ... nor the placeholder a connection holds between heads (shared by every connection)
    from tui_passenger.runtime import wsgi_server

    assert wsgi_server._NO_ENV == {}


def test_a_finished_request_is_freed_without_the_garbage_collector() -> None:
    """The environ and wsgi.input refer to each other; once answered, the pair must go
    by reference counting alone (a cycle per request would leave it to the collector)."""
    import gc

    from tui_passenger.runtime.wsgi_request import WSGIRequest

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    def alive() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is WSGIRequest)

    gc.collect()
    gc.disable()
    try:
        with serve_wsgi(app) as srv:
            client = srv.client()
            for _ in range(20):
                client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                assert client.response().status == 200
            client.close()
        assert alive() == 0
    finally:
        gc.enable()


def test_wsgi_input_readline_and_iteration() -> None:
    def app(environ, start_response):
        stream = environ["wsgi.input"]
        first = stream.readline()
        rest = list(stream)
        start_response("200 OK", [])
        return [b"|".join([first, *rest])]

    with serve_wsgi(app) as srv:
        # One chunk ends inside a line.
        assert srv.post_both_ways("/", [b"l1\nl", b"2\nl3"]) == (b"l1\n|l2\n|l3",) * 2


def test_wsgi_input_read_sizes_across_sends() -> None:
    pieces = []

    def app(environ, start_response):
        stream = environ["wsgi.input"]
        pieces.extend([stream.read(5), stream.read(3), stream.read(), stream.read()])
        start_response("200 OK", [])
        return [b"".join(pieces)]

    with serve_wsgi(app) as srv:
        client = srv.client()
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nhello")
        client.send(b" world!")
        assert client.response().body == b"hello world!"
        client.close()
    assert pieces == [b"hello", b" wo", b"rld!", b""]


# --- the response ---------------------------------------------------------------------------


def test_write_callable() -> None:
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"Hello, ")
        write(b"")
        write(b"world")
        return [b"!"]

    with serve_wsgi(app) as srv:
        client = srv.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = client.response()
        assert resp.headers["transfer-encoding"] == "chunked"
        assert resp.body == b"Hello, world!"
        client.close()


def test_file_wrapper() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"0123456789"), 4)

    with serve_wsgi(app) as srv:
        assert srv.get()[1] == b"0123456789"


class Closing:
    """A response iterable that records close()."""

    def __init__(self, chunks: list[bytes], fail_at: int | None = None) -> None:
        self.chunks, self.fail_at, self.closed = chunks, fail_at, False

    def __iter__(self) -> Iterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("boom in the middle")
            yield chunk

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("fail_at", [None, 2])
def test_iterable_close_is_called(fail_at: int | None) -> None:
    made: list[Closing] = []

    def app(environ, start_response):
        start_response("200 OK", [])
        made.append(Closing([b"a", b"b", b"c"], fail_at))
        return made[-1]

    with serve_wsgi(app) as srv:
        client = srv.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = client.file.read() if fail_at else client.response().body
        client.close()
    assert made[0].closed
    if fail_at:  # the connection was cut short: headers and the chunks before the failure
        assert data.startswith(b"HTTP/1.1 200") and not data.endswith(b"0\r\n\r\n")
        assert "boom in the middle" in srv.log.getvalue()
    else:
        assert data == b"abc"


def test_exc_info_replaces_headers_not_yet_sent() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("X-First", "1")])
        try:
            raise KeyError("oops")
        except KeyError:
            start_response("503 Service Unavailable", [("X-Second", "2")], sys.exc_info())
        return [b"sorry"]

    with serve_wsgi(app) as srv:
        resp, data = srv.get()
    assert (resp.status, data) == (503, b"sorry")
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

    with serve_wsgi(app) as srv:
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

    with serve_wsgi(app) as srv:
        assert srv.get()[0].status == 500
    assert "start_response() called again" in srv.log.getvalue()


def test_hop_by_hop_response_header_is_an_app_error() -> None:
    # PEP 3333 forbids them (ASGI apps may send "connection: close": see its tests).
    def app(environ, start_response):
        start_response("200 OK", [("Connection", "close")])
        return [b"x"]

    with serve_wsgi(app) as srv:
        resp, data = srv.get()
    assert (resp.status, data) == (500, b"Internal Server Error\n")
