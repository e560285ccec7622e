"""The pure-Python request parser against httptools (llhttp): the same callbacks for the same
bytes, fed whole and byte by byte, and the same refusals.

The servers' own behaviour with this parser is tested by running tests/test_http_server.py
with both parsers (its ``parser`` fixture) and by tests/test_app_venv.py, where the worker's
interpreter has no httptools at all.
"""

from __future__ import annotations

from typing import Any

import httptools
import pytest

from tui_passenger.runtime import http_parser

PARSERS: dict[str, Any] = {"httptools": httptools, "python": http_parser}


class Trace:
    """Records what a parser reports, with runs of body bytes joined."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.parser: Any = None

    def on_message_begin(self) -> None:
        self.events.append("begin")
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.events.append(("header", name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.events.append(("head", self.url, parser.get_method(), parser.get_http_version(),
                            parser.should_keep_alive(), parser.should_upgrade()))

    def on_body(self, body: bytes) -> None:
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + body)
        else:
            self.events.append(("body", body))

    def on_message_complete(self) -> None:
        self.events.append("complete")


def run(module: Any, data: bytes, *, step: int = 0) -> tuple[list[Any], str]:
    """Feed ``data`` (whole, or ``step`` bytes at a time): the events and how it ended."""
    trace = Trace()
    trace.parser = module.HttpRequestParser(trace)
    pieces = [data[i:i + step] for i in range(0, len(data), step)] if step else [data]
    try:
        for piece in pieces:
            trace.parser.feed_data(piece)
    except module.HttpParserUpgrade as upgrade:
        return trace.events, f"upgrade at {upgrade.args[0] if not step else '?'}"
    except module.HttpParserError:
        return trace.events, "error"
    return trace.events, "ok"


VALID = {
    "get": b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
    "http10": b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
    "http10-keep-alive": b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    "close": b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    "no-headers": b"GET / HTTP/1.1\r\n\r\n",
    "leading-crlf": b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "values": b"GET / HTTP/1.1\r\nX-A:  spaced \t\r\nX-Empty:\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
    "absolute": b"GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "length": b"POST /p HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world",
    "zero-length": b"POST /p HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "chunked": (b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n"),
    "chunked-trailers": (b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                         b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"),
    "pipelined": (b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 2"
                  b"\r\n\r\nokGET /3 HTTP/1.1\r\nConnection: close\r\n\r\n"),
}


@pytest.mark.parametrize("step", [0, 1, 7])
@pytest.mark.parametrize("name", list(VALID))
def test_same_callbacks_as_httptools(name: str, step: int) -> None:
    events, outcome = run(httptools, VALID[name], step=step)
    assert outcome == "ok"  # the corpus itself is valid HTTP
    # The one difference: llhttp reports trailer fields (after the body) as headers; this
    # parser drops them, as RFC 9110 6.5.1 asks (they are never merged into the header).
    body_seen = False
    expected = []
    for event in events:
        body_seen = (body_seen or event[0] == "body") and event != "complete"
        if not (body_seen and event[0] == "header"):
            expected.append(event)
    assert run(http_parser, VALID[name], step=step) == (expected, outcome)


@pytest.mark.parametrize("extension", [b"; a=b", b" ;a", b"\t; a = b", b';a="x \\" y"',
                                       b";a=b ; c"])
def test_chunk_extensions_with_whitespace(extension: bytes) -> None:
    """RFC 9112 7.1.1 allows whitespace around ";" and "=" (llhttp refuses it)."""
    data = (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5" + extension
            + b"\r\nhello\r\n0\r\n\r\n")
    assert run(http_parser, data)[0][-2:] == [("body", b"hello"), "complete"]


@pytest.mark.parametrize("field", [b"Host", b"Content-Length", b"transfer-encoding",
                                   b"Content-Type", b"Authorization"])
def test_trailer_fields_that_must_come_first_are_refused(field: bytes) -> None:
    data = (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n"
            + field + b": x\r\n\r\n")
    assert run(http_parser, data)[1] == "error"


INVALID = {
    "not-http": b"NOT-HTTP\r\n\r\n",
    "length-and-chunked": b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked"
                          b"\r\n\r\n",
    "no-colon": b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
    "bad-length": b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
    "negative-length": b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    "two-lengths": b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "chunked-not-last": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    "bad-chunk-size": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "chunk-without-crlf": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab",
    "space-in-target": b"GET /a b HTTP/1.1\r\n\r\n",
    "bad-method": b"G(T / HTTP/1.1\r\n\r\n",
    "lowercase-version": b"GET / http/1.1\r\n\r\n",
    "unknown-method": b"G / HTTP/1.1\r\n\r\n",
    "relative-target": b"GET x/y HTTP/1.1\r\n\r\n",
    "non-ascii-target": b"GET /\xff HTTP/1.1\r\n\r\n",
    "bad-scheme": b"GET h-ttp://x/ HTTP/1.1\r\n\r\n",
    "chunk-size-whitespace": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\t\r\nabc",
    "chunk-size-trailing-space": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc",
    "bad-chunk-extension": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;e=:1\r\na",
}


@pytest.mark.parametrize("step", [0, 1])
@pytest.mark.parametrize("name", list(INVALID))
def test_same_refusals_as_httptools(name: str, step: int) -> None:
    assert run(httptools, INVALID[name], step=step)[1] == "error"
    assert run(http_parser, INVALID[name], step=step)[1] == "error"


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\nHost: x\n\n", b"GET /path\r\n\r\n"])
def test_stricter_than_llhttp(data: bytes) -> None:
    # Bare LF line ends and HTTP/0.9 request lines (no version), which llhttp lets through:
    # the front proxy never sends either.
    assert run(http_parser, data)[1] == "error"


@pytest.mark.parametrize("data", [
    b"GET /chat HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nrest",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nrest",
])
def test_upgrade_stops_where_the_other_protocol_starts(data: bytes) -> None:
    expected = run(httptools, data)
    assert expected[1] == f"upgrade at {len(data) - 4}"
    assert run(http_parser, data) == expected


def test_head_that_never_ends_is_refused_as_too_large() -> None:
    from tui_passenger.runtime.http_common import HeadTooLarge, parser_error_reason

    parser = http_parser.HttpRequestParser(Trace())
    parser.feed_data(b"GET / HTTP/1.1\r\n")
    with pytest.raises(http_parser.HttpParserError) as info:
        for _ in range(100):
            parser.feed_data(b"X-Filler: " + b"x" * 1000 + b"\r\n")
    assert isinstance(info.value.__context__, HeadTooLarge)
    assert parser_error_reason(info.value)[0] == 431


def test_callback_errors_are_parser_errors_with_the_cause() -> None:
    class Refusing(Trace):
        def on_header(self, name: bytes, value: bytes) -> None:
            raise ValueError("no")

    parser = http_parser.HttpRequestParser(Refusing())
    with pytest.raises(http_parser.HttpParserCallbackError) as info:
        parser.feed_data(VALID["get"])
    assert isinstance(info.value.__context__, ValueError)


@pytest.mark.parametrize("url", [b"http://example.com:8080/p?q=1#f", b"/p?q", b"/p",
                                 b"https://user@[::1]/x"])
def test_parse_url_as_httptools(url: bytes) -> None:
    ours, theirs = http_parser.parse_url(url), httptools.parse_url(url)
    for part in ("schema", "host", "port", "path", "query", "fragment", "userinfo"):
        assert getattr(ours, part) == getattr(theirs, part), part
