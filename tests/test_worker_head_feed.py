"""Request heads cut out whole and split in one go (runtime/http_head.py), against both
worker servers and both parsers: where heads and bodies meet within one read or across reads,
field values as llhttp reports them, and oversized heads."""

from __future__ import annotations

import contextlib
import json

import pytest

from tests import test_http_server
from tests.http_serving import Running
from tui_passenger.runtime.wsgi_server import WSGIServer

# The servers of both kinds, with both parsers (the fixtures of test_http_server).
kind, parser, probe, start, srv = (test_http_server.kind, test_http_server.parser,
                                   test_http_server.probe, test_http_server.start,
                                   test_http_server.srv)

H = b"Host: x\r\n"
INFO = b"X-Probe: info\r\n"
#: A chunked body whose data holds CRLF CRLF (where a chunked body may end) and blank lines.
CHUNKED = (b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
           b"6\r\n\r\n\r\nab\r\n4\r\n\r\n\r\n\r\n0\r\nX-Trailer: t\r\n\r\n")
NEXT = b"GET /next HTTP/1.1\r\n" + H + b"\r\n"


def send_in_pieces(srv: Running, data: bytes, size: int) -> list[bytes]:
    """Send ``data`` ``size`` bytes at a time, waiting for nothing: the response bodies."""
    client = srv.client()
    for i in range(0, len(data), size):
        client.send(data[i:i + size])
    bodies = [client.response().body, client.response().body]
    client.close()
    return bodies


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_pipelined_request_after_a_chunked_body(srv: Running, size: int) -> None:
    assert send_in_pieces(srv, CHUNKED + NEXT, size) == [
        b"POST /c \r\n\r\nab\r\n\r\n", b"GET /next "]


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_pipelined_request_after_a_sized_body(srv: Running, size: int) -> None:
    body = b"x\r\n\r\nGET /no HTTP/1.1\r\n\r\n"
    data = b"POST /s HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % len(body) + body
    assert send_in_pieces(srv, data + NEXT, size) == [b"POST /s " + body, b"GET /next "]


def test_blank_lines_before_a_request_line_are_skipped(srv: Running) -> None:
    assert send_in_pieces(srv, b"\r\n\r\n" + NEXT + b"\r\n" + NEXT, 1000) == [b"GET /next "] * 2


def test_field_values_and_target_as_llhttp_reports_them(srv: Running) -> None:
    client = srv.client()
    client.send(b"GET /p?q=1 HTTP/1.1\r\nHost:example.com\r\n" + INFO
                + b"X-Tabs:\t\t v\r\nX-Trail: w \t \r\nX-Empty:\r\nX-Blank:   \r\n"
                b"X-Rep: 1\r\nx-rep: 2\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n")
    req = json.loads(client.response().body)
    client.close()
    assert (req["path"], req["query"], req["server"]) == ("/p", "q=1", ["example.com", 80])
    headers = dict(map(tuple, req["headers"]))
    assert headers["x-tabs"] == "v"
    assert headers["x-trail"] == "w \t "  # trailing whitespace is part of the value
    assert headers["x-empty"] == headers["x-blank"] == ""
    if srv.server.__class__ is WSGIServer:  # one environ key: the values joined as in CGI
        assert headers["x-rep"] == "1,2"
        assert headers["cookie"] == "a=1; b=2"


def test_head_without_its_blank_line_beyond_the_limit_gives_431(srv: Running,
                                                                parser: str) -> None:
    if parser == "httptools" and srv.server.__class__ is not WSGIServer:
        pytest.skip("the ASGI server takes a head field by field from httptools")
    client = srv.client()
    client.send(b"GET / HTTP/1.1\r\n" + H)
    with contextlib.suppress(OSError):  # the server may answer and close before the end
        for _ in range(4):  # one endless field value, 200 KiB and no end of head in sight
            client.send(b"X-Big: " + b"a" * 50 * 1024)
    assert client.response().status == 431
    client.close()


@pytest.mark.parametrize("fields, status", [
    (b"X-Big: " + b"a" * (64 * 1024) + b"\r\n", 431),  # over MAX_HEAD_SIZE
    (b"".join(b"X-%d:      %s\r\n" % (i, b"a" * 1000) for i in range(60)), 200),  # under it
])
def test_field_bytes_limit_counts_names_and_values(srv: Running, fields: bytes,
                                                   status: int) -> None:
    client = srv.client()
    client.send(b"GET / HTTP/1.1\r\n" + H + fields + b"\r\n")
    assert client.response().status == status
    client.close()
