"""c=1 through tui-passenger's proxy against straight to one worker's Unix socket: sequential
keep-alive GETs from a small Python client on both, and the difference of the p50s is the
latency the proxy adds (bench/throughput.py runs it after the rounds)."""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from servers import Server, Skip
from wrkrun import wrk

# ------------------------------------------------------------------ c=1: proxy vs worker

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n\r\n"


def get_once(sock: socket.socket) -> bool:
    """Send one GET on a keep-alive connection, read the whole response; True if 200 and the
    connection can be reused."""
    sock.sendall(REQUEST)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = int(headers.get("content-length", "-1"))
    if length < 0:
        raise ConnectionError("response without Content-Length")
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    if lines[0].split()[1] != "200":
        raise ConnectionError(f"answered {lines[0]!r}")
    return headers.get("connection", "").lower() != "close"


def sequential(connect: Callable[[], socket.socket], duration: float) -> dict[str, Any]:
    """Sequential keep-alive GETs for ``duration`` seconds (after a short warm-up): p50/p99."""
    times: list[float] = []
    reconnects = errors = 0
    sock = connect()
    try:
        end_warm = time.monotonic() + min(1.0, duration / 3)
        end = end_warm + duration
        while (now := time.monotonic()) < end:
            t0 = time.perf_counter()
            try:
                reusable = get_once(sock)
            except OSError as exc:
                errors += 1
                if errors > 10:
                    raise Skip(f"too many errors ({exc})") from exc
                reusable = False
            else:
                if now >= end_warm:
                    times.append(time.perf_counter() - t0)
            if not reusable:
                sock.close()
                sock, reconnects = connect(), reconnects + 1
    finally:
        sock.close()
    if len(times) < 10:
        raise Skip(f"only {len(times)} requests completed")
    q = statistics.quantiles(times, n=100, method="inclusive")
    return {"requests": len(times), "p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3,
            "errors": errors, "reconnects": reconnects}


def tcp_connector(port: int) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    return connect


def unix_connector(path: str) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(path)
        return sock
    return connect


def worker_socket(pid: int) -> str:
    """The Unix socket ``w<pid>.sock`` one of tui-passenger's worker processes listens on."""
    try:
        import psutil
    except ImportError as exc:
        raise Skip("psutil is not importable") from exc
    for child in psutil.Process(pid).children(recursive=True):
        try:
            conns = (child.net_connections("unix") if hasattr(child, "net_connections")
                     else child.connections("unix"))
        except psutil.Error:
            continue
        for conn in conns:
            if isinstance(conn.laddr, str) and os.path.basename(conn.laddr) == f"w{child.pid}.sock":
                return conn.laddr
    raise Skip(f"no worker socket w<pid>.sock found among the children of pid {pid}")


def wrk_c1(port: int, duration: float) -> dict[str, Any]:
    """``wrk -c1`` as a dict, or the reason it failed."""
    run = wrk(port, 1, duration)
    return asdict(run) if run.ok else {"skipped": f"wrk: {run.problem}"}


def latency_c1(tp: Server, ready: bool, duration: float) -> dict[str, Any]:
    """c=1 through the proxy (wrk and the python client) and straight to one worker."""
    out: dict[str, Any] = {}
    parts: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("worker_unix_python", lambda: sequential(unix_connector(worker_socket(tp.proc.pid)),
                                                  duration))]
    if ready:
        parts += [("proxy_tcp_python", lambda: sequential(tcp_connector(tp.port), duration)),
                  ("proxy_wrk_c1", lambda: wrk_c1(tp.port, duration))]
    else:
        out["proxy_tcp_python"] = out["proxy_wrk_c1"] = {"skipped": "proxy not answering"}
    for name, measure in parts:
        try:
            out[name] = measure()
        except (Skip, OSError) as exc:
            why = str(exc) if isinstance(exc, Skip) else f"{type(exc).__name__}: {exc}"
            out[name] = {"skipped": why}
    proxy, worker = out["proxy_tcp_python"], out["worker_unix_python"]
    if "p50_ms" in proxy and "p50_ms" in worker:
        out["added_p50_ms"] = proxy["p50_ms"] - worker["p50_ms"]
    return out

