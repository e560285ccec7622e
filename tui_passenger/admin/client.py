"""Talk to a running instance's admin API (used by the CLI; plain blocking HTTP), and
where each operation lives in that API (:func:`action_url`, for every client)."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tui_passenger.operations import Action, Done, reply_error

#: The response header of GET /status and /events: milliseconds the instance's event loop
#: spent building the answer (a dashboard counts them in what watching costs the server).
SERVED_HEADER = "X-Served-Ms"


def action_url(action: Action, target: str | int | None = None) -> str:
    """The admin API path that performs ``action`` on an app (by name), for a kill or a
    stack on a worker (by pid), for sampling, reload, reopen-logs and stop on the instance
    (no target)."""
    if action in (Action.SAMPLING, Action.RELOAD, Action.REOPEN_LOGS, Action.STOP):
        return f"/{action.value}"
    if action is Action.KILL or action is Action.STACK:
        return f"/processes/{target}/{action.value}"
    return f"/apps/{quote(str(target), safe='')}/{action.value}"


class AdminUnavailable(Exception):
    """No instance answers on the admin socket."""


class AdminClient:
    """Blocking requests to the admin socket."""

    def __init__(self, path: Path, timeout: float | None = 120.0) -> None:
        self.path = path
        self.timeout = timeout

    def request(self, method: str, url: str,
                body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        """One request; returns the status and body. Raises AdminUnavailable."""
        conn = http.client.HTTPConnection("localhost", timeout=self.timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise AdminUnavailable(f"no tui-passenger instance answers on {self.path} "
                                   f"({exc.strerror}); is it running with this config?") from None
        except OSError as exc:  # e.g. permission denied: another user's instance
            sock.close()
            raise AdminUnavailable(f"cannot reach {self.path}: {exc.strerror or exc}") from None
        conn.sock = sock
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload else {}
            conn.request(method, url, body=payload, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except OSError as exc:  # a timeout, or the instance went away mid-request
            raise RuntimeError(f"no answer from {self.path}: {exc}") from None
        finally:
            conn.close()

    def json(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        """A request whose answer is JSON; a 4xx raises Refused with the instance's reason,
        a 5xx RuntimeError."""
        status, data = self.request(method, url, body)
        try:
            reply = json.loads(data) if data else {}
        except ValueError:
            raise RuntimeError(f"HTTP {status}: {data[:200].decode(errors='replace')}") from None
        if status >= 400:
            raise reply_error(status, reply)
        return reply

    def act(self, action: Action, target: str | int | None = None,
            body: dict[str, Any] | None = None) -> Done:
        """Perform ``action`` on ``target`` (see :func:`action_url`); Refused if refused."""
        return Done(action, self.json("POST", action_url(action, target), body))
