"""The article's example: a memcached connection opened while the app is imported.

At import time this app connects one TCP socket to memcached (``MEMCACHED_ADDR``, default
``127.0.0.1:11211``) and talks the memcached text protocol over it by hand. Under direct
spawning every worker imports the app itself, so every worker has its own connection.
Under smart spawning the preloader imports it once and forks: every worker inherits the
*same* connection (one kernel socket, one local port), so concurrent workers write their
commands into one stream and read each other's replies.

``GET /`` stores a value unique to this request under a key unique to this request, reads it
back and reports whether the reply was the one it asked for, with the pid and the local port
of the connection it used. Hammer it under smart spawning (``wrk -c 8 ...``) and
``mismatches``/``errors`` start counting; the ports of all workers are the same.

The fix is the ``starting_worker_process`` hook: with ``MEMCACHE_RECONNECT_IN_HOOK=1`` in the
environment (read at import) the hook, when ``forked`` is true, closes the inherited socket
and opens a connection of the worker's own. ``sample_apps/memcache_fixed`` is this app with
the switch on.

If memcached cannot be reached while importing, the import fails with a clear error: a
spawn error the manager shows (with the traceback in ``environment = "development"``).
"""

import itertools
import json
import os
import secrets
import socket

import tui_passenger

MEMCACHED_ADDR = os.environ.get("MEMCACHED_ADDR", "127.0.0.1:11211")
RECONNECT_IN_HOOK = os.environ.get("MEMCACHE_RECONNECT_IN_HOOK", "").lower() in (
    "1", "true", "yes", "on")
#: Seconds to wait for memcached's reply; a reply another process read never comes.
REPLY_TIMEOUT = 1.0


class MemcacheError(Exception):
    """memcached answered something unexpected (or nothing at all)."""


class Memcache:
    """One TCP connection to memcached, text protocol, no client library."""

    def __init__(self, addr: str) -> None:
        host, _, port = addr.rpartition(":")
        self.addr = addr
        try:
            self.sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=2.0)
            self.sock.settimeout(REPLY_TIMEOUT)
            self.version = self._command(b"version\r\n", b"\r\n").decode().strip()
        except (OSError, ValueError, MemcacheError) as exc:
            raise RuntimeError(
                f"memcache_shared: cannot reach memcached at MEMCACHED_ADDR={addr!r}: {exc}. "
                "Start one (e.g. `memcached -l 127.0.0.1 -p 11211`) or point "
                "MEMCACHED_ADDR at it in the app's env.") from exc
        if not self.version.startswith("VERSION "):
            raise RuntimeError(f"memcache_shared: {addr} is not memcached "
                               f"(answered {self.version!r} to 'version')")
        self.opened_by = os.getpid()

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def _command(self, request: bytes, terminator: bytes) -> bytes:
        """Send ``request``; read until the reply ends with ``terminator``."""
        self.sock.sendall(request)
        reply = b""
        while not reply.endswith(terminator):
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise MemcacheError(f"no complete reply within {REPLY_TIMEOUT} s "
                                    f"(got {reply[:80]!r}); did another process read it?") from None
            if not chunk:
                raise MemcacheError("memcached closed the connection")
            reply += chunk
        return reply

    def set(self, key: str, value: bytes) -> None:
        header = f"set {key} 0 300 {len(value)}\r\n".encode()
        reply = self._command(header + value + b"\r\n", b"\r\n")
        if reply != b"STORED\r\n":
            raise MemcacheError(f"set {key}: expected STORED, got {reply[:80]!r}")

    def get(self, key: str) -> bytes | None:
        """The value stored under ``key`` as the reply says it; None if not found."""
        reply = self._command(f"get {key}\r\n".encode(), b"END\r\n")
        if reply == b"END\r\n":
            return None
        header, _, rest = reply.partition(b"\r\n")
        parts = header.split()
        if len(parts) < 4 or parts[0] != b"VALUE":
            raise MemcacheError(f"get {key}: unexpected reply {reply[:80]!r}")
        if parts[1].decode() != key:
            # Someone else's reply: the connection is shared.
            return b"<reply for " + parts[1] + b">"
        return rest[:int(parts[3])]

    def close(self) -> None:
        # close(), never shutdown(): shutdown would end the connection for every process
        # sharing it, close() only drops this process's descriptor.
        self.sock.close()


cache = Memcache(MEMCACHED_ADDR)
stats = {"requests": 0, "matched": 0, "mismatches": 0, "errors": 0, "reconnected": False}
_sequence = itertools.count(1)

if RECONNECT_IN_HOOK:
    @tui_passenger.on_event("starting_worker_process")
    def reconnect(forked: bool) -> None:
        global cache
        if forked:
            # A fresh fork: the socket is the preloader's (and every sibling's). Get our own.
            inherited_port = cache.local_port
            cache.close()
            cache = Memcache(MEMCACHED_ADDR)
            stats["reconnected"] = True
            print(f"memcache: pid {os.getpid()} dropped inherited connection "
                  f"(port {inherited_port}), now on port {cache.local_port}", flush=True)


def round_trip() -> dict:
    """Set a value unique to this request, get it back, report what happened."""
    key = f"tp-demo:{os.getpid()}:{next(_sequence)}"
    value = secrets.token_hex(8).encode()
    result = {"key": key, "sent": value.decode()}
    try:
        cache.set(key, value)
        got = cache.get(key)
    except MemcacheError as exc:
        stats["errors"] += 1
        return {**result, "matched": False, "error": str(exc)}
    matched = got == value
    stats["matched" if matched else "mismatches"] += 1
    return {**result, "got": None if got is None else got.decode("latin-1"), "matched": matched}


def application(environ, start_response):
    stats["requests"] += 1
    reply = {
        "pid": os.getpid(),
        "local_port": cache.local_port,
        "connection_opened_by": cache.opened_by,
        "reconnect_in_hook": RECONNECT_IN_HOOK,
        "memcached": f"{MEMCACHED_ADDR} ({cache.version})",
        **round_trip(),
        "stats": stats,
    }
    body = json.dumps(reply).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
