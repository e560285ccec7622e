"""What WSGIServer and ASGIServer do alike, run against both: request mapping, framing,
keep-alive and pipelining, bodies, errors, stopping.

Each test runs once per server and request parser (httptools, and the pure-Python one
workers use when the app's interpreter lacks httptools), with the same app written for each
interface (tests/apps/http_probe.py). What only one interface has (environ or scope details, the
``write`` callable, lifespan, concurrency, ...) is tested in test_wsgi_server.py and
test_asgi_server.py. Servers run in a thread on real sockets; tests wait on events, not sleeps.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from tests.apps.http_probe import Probe, asgi_probe, wsgi_probe
from tests.helpers import WAIT
from tests.http_serving import Running, serve
from tui_passenger.runtime import asgi_server, http_common, http_parser, wsgi_server
from tui_passenger.runtime.asgi_server import ASGIServer
from tui_passenger.runtime.wsgi_server import WSGIServer

Start = Callable[..., AbstractContextManager[Running]]

#: Interface -> (server class, probe app factory, options for one request at a time).
KINDS: dict[str, tuple[type[Any], Callable[[Probe], Any], dict[str, Any]]] = {
    "wsgi": (WSGIServer, wsgi_probe, {}),  # always one at a time
    "asgi": (ASGIServer, asgi_probe, {"concurrency": 1}),
}


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    """The interface under test."""
    return str(request.param)


@pytest.fixture
def probe() -> Probe:
    """What the probe app shares with the test."""
    return Probe()


@pytest.fixture(params=["httptools", "python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The request parser under test: the servers' default, or the pure-Python fallback."""
    if request.param == "python":
        for module in (wsgi_server, asgi_server):
            monkeypatch.setattr(module, "_PARSER", http_parser)
        monkeypatch.setattr(http_common, "PARSER", http_parser)
    return str(request.param)


@pytest.fixture
def start(kind: str, probe: Probe, parser: str) -> Start:
    """Start a server of the kind under test with the probe app (options as for the server)."""
    server_class, make_app, _ = KINDS[kind]
    return lambda **options: serve(server_class, make_app(probe), **options)


@pytest.fixture
def srv(start: Start) -> Iterator[Running]:
    """A started server of the kind under test, serving the probe app."""
    with start() as running:
        yield running


def info(srv: Running, url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """GET ``url``: the request as the app saw it."""
    response, data = srv.get(url, headers={"X-Probe": "info", **(headers or {})})
    assert response.status == 200, data
    return dict(json.loads(data))


# --- the request as the app sees it ---------------------------------------------------------


def test_request_target_and_headers(srv: Running) -> None:
    req = info(srv, "/caf%C3%A9/a%20b%2Fc?x=1&y=%20z",
               headers={"Host": "example.com:8080", "X-Multi": "a"})
    assert req["method"] == "GET"
    assert req["path"] == "/café/a b/c"  # percent-decoded, then UTF-8
    assert req["raw_path"] == "/caf%C3%A9/a%20b%2Fc"
    assert req["query"] == "x=1&y=%20z"
    assert req["root"] == ""
    assert req["http_version"] == "1.1"
    assert req["scheme"] == "http"
    assert req["server"] == ["example.com", 8080]
    # A Unix-socket peer without X-Passenger-Remote-Addr is the loopback address.
    assert req["client"] == ["127.0.0.1", 0]
    assert ["host", "example.com:8080"] in req["headers"]
    assert ["x-multi", "a"] in req["headers"]
    assert req["body"] == ""


@pytest.mark.parametrize(("path", "root"), [
    ("/api/users/1", "/api"),
    ("/api", "/api"),  # WSGI: PATH_INFO ""
    ("/api/", "/api"),
    ("/apix/y", ""),  # not at a segment boundary
    ("/other", ""),
])
def test_passenger_script_name(srv: Running, path: str, root: str) -> None:
    for prefix in ("/api/", "/api"):  # a trailing slash is not part of the prefix
        req = info(srv, path, {"X-Passenger-Script-Name": prefix})
        # The probe reports WSGI's SCRIPT_NAME + PATH_INFO, ASGI's path: both the full path.
        assert (req["root"], req["path"]) == (root, path)
        assert not any(name.startswith("x-passenger") for name, _ in req["headers"])


@pytest.mark.parametrize(("value", "addr", "port"), [
    ("203.0.113.9:4321", "203.0.113.9", 4321),
    ("203.0.113.9", "203.0.113.9", 0),
    ("[2001:db8::1]:8443", "2001:db8::1", 8443),
    ("2001:db8::2", "2001:db8::2", 0),
])
def test_passenger_remote_addr_and_scheme(srv: Running, value: str, addr: str,
                                          port: int) -> None:
    req = info(srv, "/", {"X-Passenger-Remote-Addr": value, "X-Passenger-Scheme": "https",
                              "Host": "example.org"})
    assert req["client"] == [addr, port]
    assert req["scheme"] == "https"
    assert req["server"] == ["example.org", 443]
    assert not any(name.startswith("x-passenger") for name, _ in req["headers"])


def test_tcp_listener_reports_the_peer_address(start: Start) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with start(listener=listener):
        host, port = listener.getsockname()[:2]
        conn = http.client.HTTPConnection(host, port, timeout=WAIT)
        conn.request("GET", "/tcp", headers={"X-Probe": "info"})
        req = json.loads(conn.getresponse().read())
        assert req["client"] == ["127.0.0.1", conn.sock.getsockname()[1]]
        conn.close()


# --- connections ----------------------------------------------------------------------------


def test_keep_alive_requests_on_one_connection(srv: Running) -> None:
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


def test_pipelined_requests_answered_in_order(srv: Running) -> None:
    client = srv.client()
    client.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
    assert client.response().body == b"GET /one "
    client.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz"
                b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [client.response().body for _ in range(3)] == [b"GET /a ", b"POST /b xyz",
                                                           b"GET /c "]
    client.close()
    srv.stop()  # a server counts a request after its response is out
    assert srv.server.requests_served == 4


def test_connection_close(srv: Running) -> None:
    client = srv.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert client.response().headers["connection"] == "close"
    assert client.at_eof()
    client.close()


def test_http10_closes_unless_keep_alive(srv: Running) -> None:
    client = srv.client()
    client.send(b"GET /stream HTTP/1.0\r\n\r\n")
    resp = client.response()
    # No chunked encoding for HTTP/1.0: the body ends at EOF.
    assert "transfer-encoding" not in resp.headers
    assert resp.headers["connection"] == "close"
    assert resp.body == b"abcdef"
    client.close()
    client = srv.client()
    client.send(b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    resp = client.response()
    assert (resp.headers["connection"], resp.body) == ("keep-alive", b"GET /1 ")
    client.send(b"GET /2 HTTP/1.0\r\n\r\n")
    assert client.response().body == b"GET /2 "
    assert client.at_eof()
    client.close()


def test_one_request_at_a_time_queues_the_next_connection(start: Start, kind: str,
                                                          probe: Probe) -> None:
    with start(**KINDS[kind][2]) as srv:
        first, second = srv.client(), srv.client()
        first.send(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        assert probe.started.wait(WAIT)
        second.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        probe.release.set()
        assert second.response().body == b"GET /b "
        assert first.response().body == b"done /wait"
        first.close()
        second.close()
    assert probe.calls == ["/wait", "/wait done", "/b"]


def test_request_stop_finishes_the_request_in_flight(srv: Running, probe: Probe) -> None:
    idle = srv.client()
    idle.send(b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.response().body == b"GET /warm "
    busy = srv.client()
    busy.send(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
    assert probe.started.wait(WAIT)
    srv.server.request_stop()
    probe.release.set()
    resp = busy.response()
    assert resp.body == b"done /wait"
    assert resp.headers["connection"] == "close"
    srv.thread.join(WAIT)
    assert not srv.thread.is_alive()
    assert busy.at_eof()
    assert idle.at_eof()  # idle keep-alive connections are closed too
    busy.close()
    idle.close()
    assert srv.server.requests_served == 2


def test_watch_fd_callback_fires(start: Start) -> None:
    r, w = os.pipe()
    fired = threading.Event()

    def on_readable() -> None:
        os.read(r, 100)
        fired.set()

    try:
        with start(before=lambda server: server.watch_fd(r, on_readable)) as srv:
            os.write(w, b"x")
            assert fired.wait(WAIT)
            assert srv.get("/still")[1] == b"GET /still "  # and requests still work
    finally:
        os.close(r)
        os.close(w)


# --- request bodies -------------------------------------------------------------------------


def test_post_with_content_length_and_chunked_body(srv: Running) -> None:
    assert srv.post_both_ways("/c", [b"abc", b"defg"]) == (b"POST /c abcdefg",) * 2


def test_request_body_streams_while_the_client_is_sending(srv: Running, probe: Probe) -> None:
    client = srv.client()
    client.send(b"POST /first?5 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nhello")
    assert probe.got_first.wait(WAIT)  # the rest of the body has not been sent yet
    client.send(b" world!")
    assert client.response().body == b"hello| world!"
    client.close()


def test_large_body_is_read_whole(srv: Running) -> None:
    body = os.urandom(3 * 1024 * 1024)
    _, data = srv.get("/len", "POST", body=body)
    assert data == str(len(body)).encode()


def test_unread_body_is_drained_before_the_next_request(srv: Running) -> None:
    client = srv.client()
    body = b"x" * 300_000
    client.send(b"POST /ignored HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
    # Send the body from a thread: the server may read it only after answering.
    sender = threading.Thread(target=client.send, args=(body + b"GET /next HTTP/1.1\r\n\r\n",))
    sender.start()
    assert client.response().body == b"/ignored"
    assert client.response().body == b"GET /next "
    sender.join(WAIT)
    client.close()


def test_huge_unread_body_closes_the_connection(srv: Running) -> None:
    client = srv.client()
    size = 8 * 1024 * 1024
    client.send(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)

    def send_body() -> None:
        with contextlib.suppress(OSError):
            client.sock.sendall(b"x" * size)

    sender = threading.Thread(target=send_body)
    sender.start()
    assert client.response().body == b"/ignore"
    assert client.at_eof()
    client.close()
    sender.join(WAIT)


def test_expect_100_continue(srv: Running) -> None:
    client = srv.client()
    client.send(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                b"Expect: 100-continue\r\n\r\n")
    assert client.response().status == 100  # sent when the app first reads the body
    client.send(b"data")
    assert client.response().body == b"POST /e data"
    client.close()


def test_expect_100_continue_not_sent_if_the_body_is_never_read(srv: Running) -> None:
    client = srv.client()
    client.send(b"POST /status/413 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                b"Expect: 100-continue\r\n\r\n")
    resp = client.response()
    assert (resp.status, resp.body) == (413, b"hello")
    # The client may never send the body: the connection cannot be reused.
    assert resp.headers["connection"] == "close"
    assert client.at_eof()
    client.close()


# --- response framing -----------------------------------------------------------------------


def test_response_framing(srv: Running) -> None:
    client = srv.client()
    client.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /single HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /cl HTTP/1.1\r\nHost: x\r\n\r\n")
    streamed, single, sized = (client.response() for _ in range(3))
    client.close()
    assert streamed.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in streamed.headers
    assert single.headers["content-length"] == "6" and "transfer-encoding" not in single.headers
    assert single.headers["date"].endswith(" GMT")
    assert sized.headers["content-length"] == "6" and "transfer-encoding" not in sized.headers
    assert streamed.body == single.body == sized.body == b"abcdef"


def test_head_and_no_body_statuses(srv: Running) -> None:
    client = srv.client()
    client.send(b"HEAD /status/200 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /status/304 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
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


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("development", [False, True])
def test_app_exception_gives_500(start: Start, development: bool) -> None:
    with start(development=development) as srv:
        for path in ("/boom", "/boom-after-start"):  # the head not sent yet: still a 500
            resp, data = srv.get(path)
            assert resp.status == 500
            assert data.startswith(b"Internal Server Error")
            assert (b"secret detail" in data) is development
            assert (b"Traceback" in data) is development
        assert "ValueError: secret detail" in srv.log.getvalue()
        assert srv.get("/after")[1] == b"GET /after "  # the server carries on


def test_app_exception_after_the_body_started_closes_the_connection(srv: Running) -> None:
    client = srv.client()
    client.send(b"GET /fail-mid HTTP/1.1\r\nHost: x\r\n\r\n")
    data = client.file.read()  # up to EOF
    assert data.startswith(b"HTTP/1.1 200") and b"partial" in data
    assert not data.endswith(b"0\r\n\r\n")  # truncated: no last chunk
    client.close()
    assert "late failure" in srv.log.getvalue()


def test_line_break_in_a_response_header_is_an_app_error(srv: Running) -> None:
    resp, _ = srv.get("/split")
    assert resp.status == 500
    assert resp.getheader("X-B") is None


@pytest.mark.parametrize("request_bytes", [
    b"NOT-HTTP\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
])
def test_malformed_request_gives_400(srv: Running, probe: Probe, request_bytes: bytes) -> None:
    client = srv.client()
    client.send(request_bytes)
    resp = client.response()
    assert resp.status == 400
    assert resp.body.startswith(b"Bad Request")
    assert client.at_eof()
    client.close()
    srv.stop()
    assert probe.calls == []
    assert srv.server.requests_served == 0


def test_malformed_chunked_body_gives_400(srv: Running, probe: Probe) -> None:
    client = srv.client()
    client.send(b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    resp = client.response()
    assert resp.status == 400
    assert client.at_eof()
    client.close()
    assert probe.calls == ["/p"]  # the app was reading the body


def test_malformed_body_after_the_response_closes_the_connection(srv: Running) -> None:
    client = srv.client()
    client.send(b"POST /ignore HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n")
    assert client.response().body == b"/ignore"
    client.send(b"zz\r\n")  # not a chunk size
    assert client.at_eof()
    client.close()


def test_passenger_protocol_is_the_version_the_app_sees(srv: Running) -> None:
    """The proxy speaks HTTP/1.1 to the worker and names an HTTP/1.0 client's version in
    X-Passenger-Protocol: the app sees HTTP/1.0, the worker link stays keep-alive."""
    response, data = srv.get("/", headers={"X-Probe": "info",
                                           "X-Passenger-Protocol": "HTTP/1.0"})
    req = json.loads(data)
    assert req["http_version"] == "1.0"
    assert response.version == 11 and not response.will_close
    assert not any(name.startswith("x-passenger") for name, _ in req["headers"])
    assert info(srv, "/")["http_version"] == "1.1"  # absent: the request line's version
