"""A WSGI app for the refork tests: a cache warmed by requests, hook records, and a client
connection opened during a request (what a mold must not hand on unnoticed)."""

import json
import os
import socket
import time

import tui_passenger

#: Filled by requests: a worker forked from a mold starts with what the mold had.
_cache: dict[int, bytes] = {}
#: (event, pid, forked) for each hook run in this process's ancestry.
_hooks: list[list] = []
_connections: list[socket.socket] = []


@tui_passenger.on_event("starting_worker_process")
def _started(forked):
    _hooks.append(["starting_worker_process", os.getpid(), forked])


@tui_passenger.on_event("starting_mold")
def _mold():
    _hooks.append(["starting_mold", os.getpid(), None])
    if os.environ.get("PROBE_MOLD_HOOK") == "fail":
        raise RuntimeError("mold hook refuses")


def _json(start_response, data):
    body = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/connect":
        # A client connection opened during a request and kept (say, to a cache server).
        host, port = environ["QUERY_STRING"].split(":")
        _connections.append(socket.create_connection((host, int(port))))
        return _json(start_response, {"pid": os.getpid(), "fd": _connections[-1].fileno()})
    if path == "/slow":
        time.sleep(float(environ["QUERY_STRING"]))
    _cache[len(_cache)] = b"x" * 1024
    return _json(start_response, {"pid": os.getpid(), "ppid": os.getppid(),
                                  "cache": len(_cache), "hooks": _hooks})
