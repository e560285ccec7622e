"""WebSockets end to end: a real client (``websockets``) through the proxy to ASGI workers.

Apps: tests/apps/ws_raw (raw ASGI) and tests/apps/ws_starlette (Starlette), each mounted
under its own base_uri; the WSGI proxy_probe app for the refusals.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import connect

from tests.serving import PROBE_APP, get, running, wait_until
from tui_passenger.status import snapshot

APPS = Path(__file__).resolve().parent / "apps"
RAW = {"name": "raw", "root": str(APPS / "ws_raw"), "entry": "app:application",
       "interface": "asgi", "base_uri": "/raw"}
STARLETTE = {"name": "star", "root": str(APPS / "ws_starlette"), "entry": "app:application",
             "interface": "asgi", "base_uri": "/star"}
BIG = os.urandom(200 * 1024)  # over 64 KiB: several reads and writes on every hop


def ws_url(server, path: str) -> str:
    return server.url.replace("http://", "ws://", 1) + path


def rejected_status(exc: BaseException) -> int:
    assert isinstance(exc, websockets.InvalidStatus), exc
    return exc.response.status_code


@pytest.mark.parametrize("base", ["/raw", "/star"])
async def test_echo_text_bytes_fragments_and_big_messages(base: str) -> None:
    async with running([RAW, STARLETTE]) as srv, connect(ws_url(srv, base + "/echo"),
                                                         max_size=None) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\x01\xff")
        assert await ws.recv() == b"\x00\x01\xff"
        await ws.send(BIG)
        assert await ws.recv() == BIG
        text = "x" * (100 * 1024)
        await ws.send(text)
        assert await ws.recv() == text
        await ws.send(["frag", "ment", "ed"])  # one message in three frames
        assert await ws.recv() == "fragmented"
        status, _, _ = await get(srv, base + "/")  # plain HTTP to the same app still works
        assert status == 200


async def test_subprotocol_headers_denial_and_close_before_accept() -> None:
    async with running([RAW]) as srv:
        async with connect(ws_url(srv, "/raw/proto"), subprotocols=["chat", "superchat"]) as ws:
            assert ws.subprotocol == "chat"
            assert await ws.recv() == "chat,superchat"
            assert ws.response.headers["x-accepted-by"] == "ws_raw"
            assert "x-request-id" in ws.response.headers
        with pytest.raises(websockets.InvalidStatus) as denied:
            await connect(ws_url(srv, "/raw/deny"))
        assert rejected_status(denied.value) == 403
        assert denied.value.response.body == b"denied: no entry\n"
        with pytest.raises(websockets.InvalidStatus) as early:
            await connect(ws_url(srv, "/raw/close-early"))
        assert rejected_status(early.value) == 403
        with pytest.raises(websockets.InvalidStatus) as boom:
            await connect(ws_url(srv, "/raw/boom"))
        assert rejected_status(boom.value) == 500
        async with connect(ws_url(srv, "/raw/echo")) as ws:
            await ws.send("close-me")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "asked to")


async def test_wsgi_app_is_refused_with_501_never_200() -> None:
    apps = [{"name": "auto", "root": str(PROBE_APP), "base_uri": "/auto"},
            {"name": "declared", "root": str(PROBE_APP), "interface": "wsgi",
             "base_uri": "/declared"}]
    async with running(apps) as srv:
        for base in ("/auto", "/declared"):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await connect(ws_url(srv, base + "/"))
            assert rejected_status(refused.value) == 501
            assert b"WSGI" in refused.value.response.body
        status, _, _ = await get(srv, "/auto/")
        assert status == 200


async def test_max_websockets_gives_503_with_retry_after() -> None:
    async with running([{**RAW, "max_websockets": 2}]) as srv:
        first = await connect(ws_url(srv, "/raw/echo"))
        second = await connect(ws_url(srv, "/raw/echo"))
        with pytest.raises(websockets.InvalidStatus) as refused:
            await connect(ws_url(srv, "/raw/echo"))
        assert rejected_status(refused.value) == 503
        assert refused.value.response.headers["retry-after"] == "5"
        await first.close()
        await wait_until(lambda: sum(p.websockets for p in srv.pool.groups["raw"].processes)
                         == 1)
        async with connect(ws_url(srv, "/raw/echo")) as third:
            await third.send("ok")
            assert await third.recv() == "ok"
        await second.close()


async def test_hundreds_of_websockets_do_not_starve_plain_requests() -> None:
    # Two workers of two request slots each: 200 open WebSockets hold none of them.
    async with running([{**RAW, "min_instances": 2, "max_instances": 2, "concurrency": 2}],
                       shutdown_timeout=2) as srv:
        sockets = await asyncio.gather(*(connect(ws_url(srv, "/raw/pid"))
                                         for _ in range(200)))
        pids = await asyncio.gather(*(ws.recv() for ws in sockets))
        group = srv.pool.groups["raw"]
        assert len(set(pids)) == 2  # spread over both workers
        counts = [p.websockets for p in group.processes]
        assert sum(counts) == 200 and min(counts) >= 50, counts
        started = time.monotonic()
        results = await asyncio.gather(*(get(srv, "/raw/") for _ in range(20)))
        assert all(status == 200 for status, _, _ in results)
        assert time.monotonic() - started < 5
        await asyncio.gather(*(ws.send(f"m{i}") for i, ws in enumerate(sockets)))
        echoes = await asyncio.gather(*(ws.recv() for ws in sockets))
        assert echoes == [f"m{i}" for i in range(200)]
        snapshot = status_json(srv)
        app = next(a for a in snapshot["apps"] if a["name"] == "raw")
        assert app["websockets"] == 200
        assert sorted(p["websockets"] for p in app["processes"]) == sorted(counts)
        await asyncio.gather(*(ws.close() for ws in sockets))
        await wait_until(lambda: not any(p.websockets for p in group.processes))


def status_json(srv) -> dict:
    """What ``status --json`` shows (through JSON, as the admin API sends it)."""
    return json.loads(json.dumps(snapshot(srv).to_json()))


async def test_message_size_ping_timeout_and_protocol_errors() -> None:
    app = {**RAW, "websocket_max_message_size": 1000, "websocket_ping_interval": 0.2,
           "websocket_ping_timeout": 0.3}
    async with running([app]) as srv:
        async with connect(ws_url(srv, "/raw/echo")) as ws:
            await ws.send("x" * 1000)
            assert await ws.recv() == "x" * 1000
            await ws.send("x" * 1001)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 1009
        # A client that never answers the server's pings is cut off.
        started = time.monotonic()
        received = await raw_session(srv, b"")
        assert received.startswith(b"HTTP/1.1 101 ")
        assert b"\x89" in received  # a ping frame came, then the close
        assert time.monotonic() - started < 4
        # A text frame that is not UTF-8: closed with 1007 (a masked frame, mask 0).
        received = await raw_session(srv, b"\x81\x82\x00\x00\x00\x00\xff\xfe")
        assert b"\x88" in received and b"\x03\xef" in received


async def test_idle_timeout_closes_a_quiet_websocket_with_1001_messages_keep_it_open() -> None:
    app = {**RAW, "websocket_idle_timeout": 0.6}
    async with running([app]) as srv, connect(ws_url(srv, "/raw/echo")) as ws:
        for _ in range(6):  # 1.2 s of traffic, each gap well under the timeout
            await ws.send("tick")
            assert await ws.recv() == "tick"
            await asyncio.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 1001
        assert closed.value.rcvd.reason == "idle timeout"
        assert time.monotonic() - started < 3


async def raw_session(srv, frames: bytes) -> bytes:
    """Upgrade on a plain socket, send ``frames`` as they are, read until the server closes."""
    host, port = srv.url.removeprefix("http://").rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=5)
    raw.sendall(b"GET /raw/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n")
    received = b""
    try:
        while b"\r\n\r\n" not in received:
            received += await asyncio.to_thread(raw.recv, 65536)
        raw.sendall(frames)
        while chunk := await asyncio.to_thread(raw.recv, 65536):
            received += chunk
    finally:
        raw.close()
    return received


async def test_worker_killed_closes_its_websockets_at_once() -> None:
    async with running([RAW]) as srv:
        ws = await connect(ws_url(srv, "/raw/pid"))
        pid = int(await ws.recv())
        os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert time.monotonic() - started < 2
        await wait_until(lambda: not any(p.websockets
                                         for p in srv.pool.groups["raw"].processes))


async def test_rolling_restart_closes_with_1012_and_new_ones_work() -> None:
    async with running([RAW], shutdown_timeout=1) as srv:
        ws = await connect(ws_url(srv, "/raw/pid"))
        old_pid = int(await ws.recv())
        group = srv.pool.groups["raw"]
        restart = srv.pool.restart(group)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 1012
        await restart
        async with connect(ws_url(srv, "/raw/pid")) as fresh:
            assert int(await fresh.recv()) != old_pid


async def test_rolling_restart_does_not_wait_for_websockets_one_worker_at_a_time() -> None:
    # shutdown_timeout 3: each old worker keeps its WebSockets 2 s (the grace) after its
    # requests are done; the restart goes on meanwhile instead of waiting 2 s per worker.
    async with running([{**RAW, "min_instances": 2, "max_instances": 2}],
                       shutdown_timeout=3) as srv:
        sockets = [await connect(ws_url(srv, "/raw/pid")) for _ in range(4)]
        assert len({await ws.recv() for ws in sockets}) == 2
        replaced = await srv.pool.restart(srv.pool.groups["raw"])
        assert replaced == 2
        for ws in sockets:  # still open when the restart is done
            await ws.send("still")
            assert await ws.recv() == "still"
        codes = []
        for ws in sockets:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            codes.append(closed.value.rcvd.code)
        assert codes == [1012] * 4


async def test_refork_closes_the_mold_s_and_the_replaced_workers_websockets_with_1012() -> None:
    async with running([{**RAW, "min_instances": 2, "max_instances": 2,
                         "spawn_method": "smart"}], shutdown_timeout=1) as srv:
        sockets = [await connect(ws_url(srv, "/raw/pid")) for _ in range(4)]
        assert len({await ws.recv() for ws in sockets}) == 2  # on the mold-to-be and the other
        group = srv.pool.groups["raw"]
        assert await srv.pool.refork(group) >= 1
        assert group.last_refork_error is None
        for ws in sockets:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd.code == 1012
        async with connect(ws_url(srv, "/raw/echo")) as fresh:
            await fresh.send("gen 1")
            assert await fresh.recv() == "gen 1"


async def test_graceful_stop_lets_websockets_run_then_closes_with_1001() -> None:
    async with running([RAW], shutdown_timeout=1) as srv:
        ws = await connect(ws_url(srv, "/raw/echo"))
        stopping = asyncio.ensure_future(srv.stop())
        await wait_until(lambda: srv.pool.closing)  # within shutdown_timeout it still works
        await ws.send("still here")
        assert await ws.recv() == "still here"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 1001
        await stopping


async def test_the_sample_asgi_app_echoes() -> None:
    sample = Path(__file__).resolve().parent.parent / "sample_apps" / "hello_asgi"
    async with running([{"name": "hello", "root": str(sample), "entry": "app:app"}]) as srv, \
            connect(ws_url(srv, "/")) as ws:
        await ws.send("ping?")
        assert await ws.recv() == "ping?"
        await ws.send(b"\x01\x02")
        assert await ws.recv() == b"\x01\x02"
        status, _, body = await get(srv, "/")
        assert (status, body) == (200, b"Hello, ASGI world!\n")


@pytest.mark.parametrize("spawn_method, workers", [("direct", 1), ("smart", 3)])
async def test_an_app_python_without_wsproto_refuses_with_501_naming_the_fix(
        tmp_path: Path, spawn_method: str, workers: int) -> None:
    # The app's own bare virtualenv: the runtime runs there, without wsproto.
    venv = tmp_path / "venv"
    base = Path(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True, timeout=120)
    lines: list[str] = []
    app = {**RAW, "python": str(venv / "bin" / "python"), "spawn_method": spawn_method,
           "min_instances": workers}
    async with running([app], on_output=lambda line: lines.append(line.text)) as srv:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await connect(ws_url(srv, "/raw/echo"))
        assert rejected_status(refused.value) == 501
        assert b"pip install wsproto" in refused.value.response.body
        status, _, _ = await get(srv, "/raw/")
        assert status == 200
        assert len(srv.pool.groups[app["name"]].processes) == workers
    # Warned once, at start: by the preloader for all the workers it forks.
    assert sum("pip install wsproto" in line for line in lines) == 1
