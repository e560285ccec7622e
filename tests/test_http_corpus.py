"""gunicorn's HTTP/1.1 request corpus (and RFC cases of ours) through a running tui-passenger.

Every case is sent on a raw socket of its own: a valid case must reach the echo app as the
expected requests, an invalid one must be refused with a 4xx (the proxy's own page, never
the app's). How each case is judged, and the cases tui-passenger judges differently from
gunicorn or that need a gunicorn option, are in tests/http_corpus/corpus.py. One server
serves the whole module.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http_corpus.corpus import Case, exchange, judge, load, responses
from tests.serving import running

ECHO = Path(__file__).resolve().parent / "apps" / "echo"
CASES = load()
#: Cases tui-passenger still gets wrong: each must keep failing (strict), with the reason.
GAPS: dict[str, str] = {}


class Proxy:
    """tui-passenger serving the echo app, run by an event loop in a thread of its own."""

    def __init__(self, limits: dict[str, int] | None = None) -> None:
        self.limits = limits or {}
        self.address: tuple[str, int] = ("", 0)
        self.server = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        apps = [{"name": "echo", "root": str(ECHO), "entry": "passenger_wsgi:application"}]
        # Short client timeouts: a case cut short gets its 408 at once.
        async with running(apps, client_header_timeout=1, client_body_timeout=1,
                           **self.limits) as server:
            self.server = server
            self.address = server.address
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(60), "the server did not start"
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def served(self) -> int:
        """Requests the echo app's workers have served so far."""
        return sum(p.processed for p in self.server.pool.groups["echo"].processes)


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    running_proxy = Proxy()
    running_proxy.start()
    yield running_proxy
    running_proxy.stop()


@pytest.fixture(scope="module")
def proxies(proxy: Proxy) -> Iterator[dict[tuple[tuple[str, int], ...], Proxy]]:
    """The default server, and one per set of limits a case needs (started when first
    needed)."""
    started = {(): proxy}
    yield started
    for key, other in started.items():
        if key:
            other.stop()


def params() -> list:
    out = []
    for case in CASES:
        marks = []
        if case.skip:
            marks.append(pytest.mark.skip(reason=case.skip))
        elif case.name in GAPS:
            marks.append(pytest.mark.xfail(reason=GAPS[case.name], strict=True))
        out.append(pytest.param(case, id=case.name, marks=marks))
    return out


@pytest.mark.parametrize("case", params())
def test_corpus_case(proxies: dict[tuple[tuple[str, int], ...], Proxy], case: Case) -> None:
    key = tuple(sorted(case.limits.items()))
    proxy = proxies.get(key)
    if proxy is None:
        proxy = proxies[key] = Proxy(case.limits)
        proxy.start()
    before = proxy.served()
    reply = exchange(proxy.address, case)
    problem = judge(case, reply)
    assert not problem, f"{problem} ({case.verdict or case.error or 'valid'})"
    if case.refuse:
        assert proxy.served() == before, "a refused request reached the app"


CHUNKED_HEAD = b"POST /up HTTP/1.1\r\nHost: rfc.test\r\nTransfer-Encoding: chunked\r\n\r\n"


def echoes(reply: bytes) -> list[dict]:
    return [json.loads(body) for status, body in responses(reply) if status == 200]


def test_chunked_body_in_pieces_then_a_pipelined_request(proxy: Proxy) -> None:
    """The proxy's own chunked decoding (whitespace in extensions, a dropped trailer) holds
    whatever the pieces, and the request after it on the connection is served too."""
    wire = (CHUNKED_HEAD + b"5 ; a = b\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n"
            b"GET /after HTTP/1.1\r\nHost: rfc.test\r\nConnection: close\r\n\r\n")
    for cuts in ([], [10, len(CHUNKED_HEAD) - 2, len(CHUNKED_HEAD) + 3], [len(CHUNKED_HEAD)]):
        reply = b""
        with socket.create_connection(proxy.address, timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
                sock.sendall(wire[start:end])
                time.sleep(0.05)  # so that the proxy reads the pieces apart, as cut
            while chunk := sock.recv(65536):
                reply += chunk
        first, second = echoes(reply)
        assert (first["path"], first["body"]) == ("/up", "hello world"), cuts
        assert "HTTP_X_SUM" not in first["headers"]
        assert second["path"] == "/after"


def test_http10_client_is_told_its_version_and_gets_http10_framing(proxy: Proxy) -> None:
    reply = b""
    with socket.create_connection(proxy.address, timeout=10) as sock:
        sock.sendall(b"GET /ten HTTP/1.0\r\nHost: rfc.test\r\n\r\n")
        while chunk := sock.recv(65536):  # HTTP/1.0 without keep-alive: closed after
            reply += chunk
    head = reply.partition(b"\r\n\r\n")[0]
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert echoes(reply)[0]["protocol"] == "HTTP/1.0"
