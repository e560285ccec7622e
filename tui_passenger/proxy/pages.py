"""The proxy's own responses: 400, 404, 413, 431, 502, 503 and the spawn-error page."""

from __future__ import annotations

import html
import logging
import secrets
from http import HTTPStatus

from tui_passenger.engine import SpawnError

log = logging.getLogger("tui_passenger.proxy")


class Page:
    """A complete response the proxy makes itself."""

    __slots__ = ("status", "content_type", "body", "close", "retry_after")

    def __init__(self, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8",
                 close: bool = False, retry_after: int = 0) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.close = close
        #: Seconds for a ``Retry-After`` header (0 = none): a 503 for overload.
        self.retry_after = retry_after


def reason(status: int) -> str:
    """The standard reason phrase."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def render(page: Page, request_id: bytes, *, keep_alive: bool,
           head_only: bool = False) -> bytes:
    """The bytes of ``page`` as a response (with the request's id, if it has one)."""
    head = [f"HTTP/1.1 {page.status} {reason(page.status)}\r\n".encode(),
            b"Content-Type: ", page.content_type, b"\r\n",
            b"Content-Length: ", str(len(page.body)).encode(), b"\r\n"]
    if request_id:
        head += [b"X-Request-Id: ", request_id, b"\r\n"]
    if page.retry_after:
        head += [b"Retry-After: ", str(page.retry_after).encode(), b"\r\n"]
    head.append(b"\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    if not head_only:
        head.append(page.body)
    return b"".join(head)


def error(status: int, why: str, *, close: bool = False, retry_after: int = 0) -> Page:
    """A short plain-text error: the status, then why (and when to retry, if given)."""
    return Page(status, f"{status} {reason(status)}: {why}\n".encode(), close=close,
                retry_after=retry_after)


def not_found(host: str, path: str) -> Page:
    """No app takes this host and path."""
    return error(404, f"no application is configured for host {host!r} and path {path!r}")


def spawn_error(exc: SpawnError, environment: str) -> Page:
    """HTTP 500 for an app that cannot start.

    In development the page shows the error category, the traceback and what the app
    printed; in production only an error id, which is logged with the details.
    """
    if environment == "development":
        text = (
            f"<!doctype html><title>{html.escape(exc.app)} could not be started</title>"
            f"<h1>The application {html.escape(exc.app)} could not be started</h1>"
            f"<p>Error category: <b>{html.escape(exc.category)}</b></p>"
            f"<p>{html.escape(exc.message)}</p>"
            f"<h2>Traceback</h2><pre>{html.escape(exc.traceback or '(none)')}</pre>"
            f"<h2>Output</h2><pre>{html.escape(chr(10).join(exc.output) or '(none)')}</pre>")
    else:
        error_id = secrets.token_hex(6)
        log.error("error id %s: %s", error_id, exc)
        text = ("<!doctype html><title>We're sorry, but something went wrong</title>"
                "<h1>We're sorry, but something went wrong.</h1>"
                "<p>The application could not be started. "
                f"Error id: <code>{error_id}</code></p>")
    return Page(500, text.encode(), b"text/html; charset=utf-8")
