"""The proxy's own responses: 404, 413, 502, 503 and the spawn-error page."""

from __future__ import annotations

import html
import logging
import secrets

from aiohttp import web

from tui_passenger.engine import SpawnError

log = logging.getLogger("tui_passenger.proxy")

REASONS = {400: "Bad Request", 404: "Not Found", 408: "Request Timeout",
           413: "Content Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}


def error(status: int, reason: str, *, close: bool = False) -> web.Response:
    """A short plain-text error: the status line, then why."""
    text = f"{status} {REASONS.get(status, '')}: {reason}\n"
    response = web.Response(status=status, text=text)
    if close:
        response.force_close()
    return response


def not_found(request: web.BaseRequest) -> web.Response:
    """No app takes this host and path."""
    return error(404, f"no application is configured for host {request.host!r} "
                      f"and path {request.path!r}")


def spawn_error(exc: SpawnError, environment: str) -> web.Response:
    """HTTP 500 for an app that cannot start.

    In development the page shows the error category, the traceback and what the app
    printed; in production it shows only an error id, which is in the log with the details.
    """
    if environment == "development":
        body = (
            f"<!doctype html><title>{html.escape(exc.app)} could not be started</title>"
            f"<h1>The application {html.escape(exc.app)!s} could not be started</h1>"
            f"<p>Error category: <b>{html.escape(exc.category)}</b></p>"
            f"<p>{html.escape(exc.message)}</p>"
            f"<h2>Traceback</h2><pre>{html.escape(exc.traceback or '(none)')}</pre>"
            f"<h2>Output</h2><pre>{html.escape(chr(10).join(exc.output) or '(none)')}</pre>"
        )
        return web.Response(status=500, text=body, content_type="text/html")
    error_id = secrets.token_hex(6)
    log.error("error id %s: %s", error_id, exc)
    return web.Response(status=500, content_type="text/html", text=(
        "<!doctype html><title>We're sorry, but something went wrong</title>"
        "<h1>We're sorry, but something went wrong.</h1>"
        f"<p>The application could not be started. Error id: <code>{error_id}</code></p>"))
