"""Small real-socket clients shared by the tests."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import tempfile
from dataclasses import dataclass, field
from typing import Any

WAIT = 5.0  # upper bound for anything to happen; only reached when a test fails


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix socket, as ``curl --unix-socket`` does."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def unix_request(path: str, method: str = "GET", url: str = "/", body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; returns status, headers and body."""
    conn = UnixHTTPConnection(path)
    try:
        conn.request(method, url, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def unix_json(path: str, url: str = "/") -> Any:
    """GET ``url`` and decode the JSON body."""
    status, _, body = unix_request(path, url=url)
    assert status == 200, body
    return json.loads(body)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_headers: list[tuple[str, str]] = field(default_factory=list)


def read_response(f: io.BufferedReader, *, head: bool = False) -> Response:
    """Read one response from a socket file, honouring its framing exactly."""
    line = f.readline()
    assert line.startswith(b"HTTP/1.1 "), line
    status = int(line.split()[1])
    raw = []
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        raw.append((name.strip(), value.strip()))
    headers = {k.lower(): v for k, v in raw}
    if head or status in (204, 304) or status < 200:
        body = b""
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int(f.readline().split(b";")[0], 16):
            body += f.read(size)
            assert f.read(2) == b"\r\n"
        assert f.readline() == b"\r\n"
    elif "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    else:
        body = f.read()
    return Response(status, headers, body, raw)


class Client:
    """A raw socket connection with a buffered reader for responses."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, *, head: bool = False) -> Response:
        return read_response(self.file, head=head)

    def at_eof(self) -> bool:
        """Whether the server closed the connection (a reset counts: the server closed it
        with request bytes unread, which Linux reports after the data that was sent)."""
        try:
            return self.file.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def make_listener() -> tuple[socket.socket, str, str]:
    """A listening Unix socket in a fresh short directory: (socket, path, directory)."""
    # AF_UNIX paths must stay under 108 bytes, which pytest's tmp_path may not.
    directory = tempfile.mkdtemp(prefix="tp-")
    path = os.path.join(directory, "a.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    return listener, path, directory
