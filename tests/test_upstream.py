"""The proxy's side of a worker connection: a response head cut up from the bytes received,
whatever the chunk boundaries, interim responses skipped, hop-by-hop fields detected."""

from __future__ import annotations

import pytest

from tui_passenger.proxy.upstream import UpstreamConnection

RESPONSE = (b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
            b"HTTP/1.1 299 Fine Indeed\r\nContent-Type: text/plain\r\nConnection: X-Hop\r\n"
            b"X-Hop: dropped by the proxy\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"Content-Length: 5\r\n\r\nhello")


class Transport:
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: return False
    def close(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class Sink:
    def __init__(self) -> None:
        self.head: tuple | None = None
        self.body = b""
        self.done = False
        self.failed = ""

    def on_response(self, c: UpstreamConnection) -> bool:
        return False  # reported as head and end, to look at both

    def on_response_head(self, c: UpstreamConnection) -> None:
        self.head = (c.status, c.reason, c.headers, c.plain, c.has_length)
        self.body += b"".join(c.body)

    def on_response_body(self, chunk: bytes) -> None:
        self.body += chunk

    def on_response_end(self, c: UpstreamConnection) -> None:
        self.done = True

    def on_upstream_failed(self, c: UpstreamConnection, reason: str) -> None:
        self.failed = reason


def exchange(*chunks: bytes) -> Sink:
    connection, sink = UpstreamConnection(), Sink()
    connection.connection_made(Transport())  # type: ignore[arg-type]
    connection.send(sink, b"GET / HTTP/1.1\r\n\r\n")  # type: ignore[arg-type]
    for chunk in chunks:
        connection.data_received(chunk)
    return sink


@pytest.mark.parametrize("cut", range(1, len(RESPONSE)))
def test_response_head_is_the_same_whatever_the_chunk_boundary(cut):
    sink = exchange(RESPONSE[:cut], RESPONSE[cut:])
    assert not sink.failed and sink.done and sink.body == b"hello"
    status, reason, headers, plain, has_length = sink.head
    assert (status, reason, plain, has_length) == (299, b"Fine Indeed", False, True)
    assert headers == [(b"Content-Type", b"text/plain"), (b"Connection", b"X-Hop"),
                       (b"X-Hop", b"dropped by the proxy"), (b"Set-Cookie", b"a=1"),
                       (b"Set-Cookie", b"b=2"), (b"Content-Length", b"5")]


def test_plain_response_and_missing_reason_phrase():
    sink = exchange(b"HTTP/1.1 204\r\nDate: x\r\n\r\n")
    assert sink.head == (204, b"", [(b"Date", b"x")], True, False) and sink.done


def test_byte_by_byte_chunked_response_streams_its_body():
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    sink = exchange(*(data[i:i + 1] for i in range(len(data))))
    assert sink.head[0] == 200 and sink.head[3] is False  # chunked framing is hop-by-hop
    assert sink.body == b"abc" and sink.done
