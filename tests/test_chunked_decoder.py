"""The proxy's own chunked body decoder (proxy/chunked.py), fed in every possible split."""

from __future__ import annotations

import pytest

from tui_passenger.proxy import chunked
from tui_passenger.proxy.headers import FORBIDDEN_TRAILERS
from tui_passenger.runtime.http_parser import HttpParserError

NEXT = b"GET /next HTTP/1.1\r\n"


def decode(pieces: list[bytes]) -> tuple[bytes, bytes]:
    """The body decoded from ``pieces``, and what followed its end."""
    body: list[bytes] = []
    decoder = chunked.ChunkedDecoder(body.append, FORBIDDEN_TRAILERS)
    for n, piece in enumerate(pieces):
        used = decoder.feed(piece)
        if used >= 0:
            return b"".join(body), piece[used:] + b"".join(pieces[n + 1:])
    raise AssertionError("the body did not end")


@pytest.mark.parametrize("wire, body", [
    (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    (b"5; a = b\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5 ;a\r\nhello\r\n0;last\r\n\r\n", b"hello"),
    (b'5;a="q \\" ;"\r\nhello\r\n0\r\n\r\n', b"hello"),
    (b"000A\r\n0123456789\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n", b"0123456789"),
])
def test_every_split_decodes_the_same(wire: bytes, body: bytes) -> None:
    data = wire + NEXT
    assert decode([data]) == (body, NEXT)
    for cut in range(1, len(data)):
        assert decode([data[:cut], data[cut:]]) == (body, NEXT), cut
    assert decode([data[i:i + 1] for i in range(len(data))]) == (body, NEXT)


@pytest.mark.parametrize("wire", [
    b"5 \r\nhello\r\n0\r\n\r\n",  # whitespace without an extension
    b" 5\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the data
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"fffffffffffffffff\r\n",  # too large
    b"5\nhello\r\n0\r\n\r\n",  # bare LF
    b"5\r\nhello\r\n0\r\nHost: evil.example\r\n\r\n",
    b"5\r\nhello\r\n0\r\nContent-Type: text/html\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",  # set by the proxy itself
    b"5\r\nhello\r\n0\r\nBad Trailer\r\n\r\n",
])
def test_malformed_bodies_and_forbidden_trailers_are_refused(wire: bytes) -> None:
    with pytest.raises(HttpParserError):
        decode([wire])


HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("data, mode, offset", [
    (HEAD + b"5\r\n", chunked.FIRST, len(HEAD)),
    (b"\r\n\r\n" + HEAD, chunked.FIRST, len(HEAD) + 4),  # empty lines before the request line
    (b"ked\r\n\r\n5\r\n", chunked.MID_HEAD, 7),  # the head began in earlier bytes
    (b"\r\n5\r\nhello", chunked.MID_HEAD, -1),  # its end may be cut in two: unknown
    (b"\n5\r\n", chunked.MID_HEAD, -1),
    (b"GET / HTTP/1.1\r\n\r\n" + HEAD, chunked.LATER, -1),  # a request before it in the same bytes
    (HEAD, chunked.MID_BODY, -1),
    (HEAD, chunked.CLEAN, -1),
])
def test_where_the_body_starts(data: bytes, mode: int, offset: int) -> None:
    assert chunked.body_offset(data, mode) == offset


@pytest.mark.parametrize("tail, data, offset", [
    (b"x\r\n", b"\r\n5 ; a = b\r\n", 2),  # the blank line cut after its first CRLF
    (b"\r\n\r", b"\n5\r\n", 1),
    (b"d\r\n", b"\r\n\r\n5\r\n", 2),  # the body's first bytes look like a blank line
    (b": x", b"\r\nX-A: 1\r\n\r\n5\r\n", 12),  # a CRLF that ends a field line
    (b"", b"\r\n5\r\n", -1),  # nothing known of what came before: unknown
])
def test_where_the_body_starts_when_the_read_cut_the_head(tail: bytes, data: bytes,
                                                          offset: int) -> None:
    assert chunked.body_offset(data, chunked.MID_HEAD, tail) == offset

