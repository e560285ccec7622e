"""One test app written twice, for WSGI and for ASGI, so that both answer every request alike.

tests/test_http_server.py runs one set of tests against WSGIServer and ASGIServer with it.
The path (below the mount prefix) picks what the app does:

=================  ===========================================================================
``/ignore...``     its path as the body, the request body left unread
``/status/NNN``    status NNN, body ``hello``, the request body left unread
``/stream``        ``abcdef`` in pieces (empty ones among them); ``/cl`` declares its length
``/single``        ``abcdef`` in one piece
``/len``           the length of the request body
``/first?N``       reads what has arrived of the body (WSGI: N bytes), sets ``got_first``,
                   then reads the rest: ``first|rest``
``/wait``          sets ``started``, blocks until ``release``, then logs ``/wait done``
``/boom``          raises ``ValueError("secret detail")``; ``/boom-after-start`` after
                   starting (not yet sending) the response
``/fail-mid``      sends ``partial`` then raises ``RuntimeError("late failure")``
``/split``         a response header with a line break in its value (response splitting)
anything else      echo: ``METHOD PATH BODY``
=================  ===========================================================================

A request with the header ``X-Probe: info``, whatever its path, is answered with the request
as the app saw it: JSON, the same keys and types for both interfaces (see :func:`info`).
Every call logs its path in :attr:`Probe.calls`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from tests.helpers import WAIT

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

PIECES = (b"", b"abc", b"", b"def")
INFO_HEADER = (b"x-probe", b"info")


@dataclass
class Probe:
    """What the test thread and the app (in the server's thread) see of each other."""

    calls: list[str] = field(default_factory=list)
    got_first: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


def info(*, method: str, path: str, raw_path: str, query: str, root: str, scheme: str,
         server: tuple[str, int], client: tuple[str, int], version: str,
         headers: list[tuple[str, str]], body: bytes) -> bytes:
    """The reply to ``X-Probe: info``; ``path`` is the full decoded path, ``root`` the prefix."""
    return json.dumps({
        "method": method, "path": path, "raw_path": raw_path, "query": query, "root": root,
        "scheme": scheme, "server": list(server), "client": list(client),
        "http_version": version, "headers": [list(h) for h in headers],
        "body": body.decode("latin-1")}).encode()


# --- WSGI ------------------------------------------------------------------------------------


def wsgi_probe(probe: Probe) -> Callable[..., Iterable[bytes]]:
    """The probe as a WSGI app."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        probe.calls.append(path)
        stream = environ["wsgi.input"]
        status, headers = "200 OK", [("Content-Type", "text/plain")]
        if environ.get("HTTP_X_PROBE") == "info":
            body = _wsgi_info(environ, stream.read())
        elif path.startswith("/ignore"):
            body = path.encode()
        elif path.startswith("/status/"):
            code = int(path[8:])
            status, body = f"{code} {HTTPStatus(code).phrase}", b"hello"
        elif path in ("/stream", "/cl"):
            if path == "/cl":
                headers.append(("Content-Length", "6"))
            start_response(status, headers)
            return iter(PIECES)  # an iterator, not a list: the server cannot know the length
        elif path == "/single":
            body = b"abcdef"
        elif path == "/len":
            body = str(len(stream.read())).encode()
        elif path == "/first":
            first = stream.read(int(environ["QUERY_STRING"]))
            probe.got_first.set()
            body = first + b"|" + stream.read()
        elif path == "/wait":
            probe.started.set()
            assert probe.release.wait(WAIT)
            probe.calls.append("/wait done")
            body = b"done /wait"
        elif path.startswith("/boom"):
            if path == "/boom-after-start":
                start_response(status, headers)
            raise ValueError("secret detail")
        elif path == "/fail-mid":
            start_response(status, headers)
            return _fail_mid()
        elif path == "/split":
            headers.append(("X-A", "1\r\nX-B: 2"))
            body = b"x"
        else:
            body = f"{environ['REQUEST_METHOD']} {path} ".encode() + stream.read()
        start_response(status, headers)
        return [body]

    return app


def _fail_mid() -> Iterator[bytes]:
    yield b"partial"
    raise RuntimeError("late failure")


def _wsgi_info(environ: dict[str, Any], body: bytes) -> bytes:
    headers = [(key[5:].lower().replace("_", "-"), value) for key, value in environ.items()
               if key.startswith("HTTP_")]
    full = environ["SCRIPT_NAME"] + environ["PATH_INFO"]  # PEP 3333: bytes in a latin-1 str
    return info(method=environ["REQUEST_METHOD"],
                path=full.encode("latin-1").decode("utf-8", "replace"),
                raw_path=environ["RAW_URI"].partition("?")[0],
                query=environ["QUERY_STRING"], root=environ["SCRIPT_NAME"],
                scheme=environ["wsgi.url_scheme"],
                server=(environ["SERVER_NAME"], int(environ["SERVER_PORT"])),
                client=(environ["REMOTE_ADDR"], int(environ["REMOTE_PORT"])),
                version=environ["SERVER_PROTOCOL"].removeprefix("HTTP/"),
                headers=headers, body=body)


# --- ASGI ------------------------------------------------------------------------------------


async def read_body(receive: Receive) -> bytes:
    """The whole request body; fails if the request ends without it (a disconnect)."""
    body = b""
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        chunk: bytes = message.get("body", b"")
        body += chunk
        if not message.get("more_body", False):
            return body


async def respond(send: Send, body: bytes, status: int = 200,
                  headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """A whole response in one body message."""
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


def http_only(app: ASGIApp) -> ASGIApp:
    """Wrap an HTTP-only test app so that lifespan scopes are politely acknowledged."""
    async def wrapper(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            assert (await receive())["type"] == "lifespan.startup"
            await send({"type": "lifespan.startup.complete"})
            assert (await receive())["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        await app(scope, receive, send)
    return wrapper


def asgi_probe(probe: Probe) -> ASGIApp:
    """The probe as an ASGI app."""

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path = scope["path"][len(scope["root_path"]):]
        probe.calls.append(path)
        status, headers = 200, [(b"content-type", b"text/plain")]
        if INFO_HEADER in scope["headers"]:
            body = _asgi_info(scope, await read_body(receive))
        elif path.startswith("/ignore"):
            body = path.encode()
        elif path.startswith("/status/"):
            status, body = int(path[8:]), b"hello"
        elif path in ("/stream", "/cl"):
            if path == "/cl":
                headers.append((b"content-length", b"6"))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            for piece in PIECES:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        elif path == "/single":
            body = b"abcdef"
        elif path == "/len":
            body = str(len(await read_body(receive))).encode()
        elif path == "/first":
            first = await receive()
            assert first["more_body"] is True  # the rest of the body has not been sent yet
            probe.got_first.set()
            body = first["body"] + b"|" + await read_body(receive)
        elif path == "/wait":
            probe.started.set()
            assert await asyncio.to_thread(probe.release.wait, WAIT)
            probe.calls.append("/wait done")
            body = b"done /wait"
        elif path.startswith("/boom"):
            if path == "/boom-after-start":  # not flushed yet: still replaceable by a 500
                await send({"type": "http.response.start", "status": 200, "headers": []})
            raise ValueError("secret detail")
        elif path == "/fail-mid":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise RuntimeError("late failure")
        elif path == "/split":
            headers.append((b"x-a", b"1\r\nx-b: 2"))
            body = b"x"
        else:
            body = f"{scope['method']} {path} ".encode() + await read_body(receive)
        await respond(send, body, status, headers)

    return http_only(app)


def _asgi_info(scope: dict[str, Any], body: bytes) -> bytes:
    return info(method=scope["method"], path=scope["path"],
                raw_path=scope["raw_path"].decode("latin-1"),
                query=scope["query_string"].decode("latin-1"), root=scope["root_path"],
                scheme=scope["scheme"], server=scope["server"], client=scope["client"],
                version=scope["http_version"],
                headers=[(k.decode("latin-1"), v.decode("latin-1"))
                         for k, v in scope["headers"]],
                body=body)
