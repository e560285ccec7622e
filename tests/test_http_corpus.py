"""gunicorn's HTTP/1.1 request corpus through a running tui-passenger, to an echo app.

Every case is sent on a raw socket of its own (then the sending side is closed): a valid case
must reach the app as the expected requests, an invalid one must be refused with a 4xx (the
proxy's own page, never the app's). How each case is judged, and the cases tui-passenger
judges differently from gunicorn or that need a gunicorn option, are in
tests/http_corpus/corpus.py. One server serves the whole module.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http_corpus.corpus import Case, judge, load
from tests.serving import running

ECHO = Path(__file__).resolve().parent / "apps" / "echo"
CASES = load()
#: Cases tui-passenger still gets wrong: each must keep failing (strict), with the reason.
GAPS: dict[str, str] = {
    "valid/013": "llhttp refuses whitespace around ';' in chunk extensions (RFC 9112 7.1.1 "
                 "allows it) and has no leniency flag for it: 400",
}


class Proxy:
    """tui-passenger serving the echo app, run by an event loop in a thread of its own."""

    def __init__(self) -> None:
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
        async with running(apps, client_header_timeout=5) as server:
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


def send(address: tuple[str, int], data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection, close the sending side, read until the end."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
        return reply


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
def test_corpus_case(proxy: Proxy, case: Case) -> None:
    before = proxy.served()
    reply = send(proxy.address, case.data)
    problem = judge(case, reply)
    assert not problem, f"{problem} ({case.verdict or case.error or 'valid'})"
    if case.refuse:
        assert proxy.served() == before, "a refused request reached the app"
