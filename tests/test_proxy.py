"""The server end to end: real workers behind the real proxy on an ephemeral port."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time

import aiohttp
import pytest

from tests.conftest import SAMPLE_APPS, assert_no_children
from tests.serving import Load, get, running, wait_until


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    assert_no_children()


def started_event(text: str):
    """An output sink and an event set when a worker prints ``text``."""
    event = asyncio.Event()

    def sink(line):
        if text in line.text:
            event.set()

    return sink, event


async def test_routing_by_host_and_base_uri():
    apps = [
        {"name": "site-a", "hosts": ["a.example.com"]},
        {"name": "wild", "hosts": ["*.example.org"]},
        {"name": "api", "base_uri": "/api"},
        {"name": "fallback", "default": True, "hosts": ["default.test"]},
    ]
    async with running(apps, max_pool_size=4) as server:
        pids = {name: g.processes[0].pid for name, g in server.pool.groups.items()}

        async def who(path: str, host: str) -> tuple[int, dict]:
            status, _, body = await get(server, path, headers={"Host": host})
            return status, json.loads(body) if status == 200 else {}

        status, reply = await who("/x", "a.example.com:8080")
        assert status == 200 and reply["pid"] == pids["site-a"]
        status, reply = await who("/y", "deep.sub.example.org")
        assert reply["pid"] == pids["wild"]
        status, reply = await who("/api/users/1?q=2", "other.test")
        assert reply["pid"] == pids["api"]
        assert (reply["script_name"], reply["path"], reply["query"]) == ("/api", "/users/1", "q=2")
        status, reply = await who("/apiary", "other.test")  # not under /api: the default app
        assert reply["pid"] == pids["fallback"] and reply["script_name"] == ""
        status, _, body = await get(server, "/x", headers={"Host": "example.org"})
        assert status == 200  # default app takes an unmatched host too
    async with running([{"name": "only", "hosts": ["only.test"]}]) as server:
        status, _, body = await get(server, "/", headers={"Host": "nope.test"})
        assert status == 404 and b"no application" in body


async def test_least_busy_routing_sends_next_request_to_idle_worker():
    sink, slow_started = started_event("slow request started")
    async with running([{"name": "app", "min_instances": 2, "max_instances": 2}],
                       on_output=sink) as server:
        slow = asyncio.ensure_future(get(server, "/slow?1.0"))
        await asyncio.wait_for(slow_started.wait(), 10)
        busy = [p for p in server.pool.groups["app"].processes if p.sessions]
        assert len(busy) == 1
        status, _, body = await get(server, "/")
        assert status == 200 and json.loads(body)["pid"] != busy[0].pid
        status, _, body = await slow
        assert status == 200 and json.loads(body)["pid"] == busy[0].pid


async def test_queue_overflow_is_503():
    sink, slow_started = started_event("slow request started")
    app = {"name": "app", "min_instances": 1, "max_instances": 1, "max_request_queue_size": 1}
    async with running([app], on_output=sink) as server:
        slow = asyncio.ensure_future(get(server, "/slow?1.0"))
        await asyncio.wait_for(slow_started.wait(), 10)
        queued = asyncio.ensure_future(get(server, "/"))
        group = server.pool.groups["app"]
        await wait_until(lambda: len(group.waiters) == 1)
        status, headers, body = await get(server, "/")
        assert status == 503 and b"queue full (1 waiting)" in body
        assert headers["Retry-After"] == "10"  # the default max_request_queue_time
        assert (await queued)[0] == 200 and (await slow)[0] == 200
        assert server.proxy.stats.errors_503 == 1


async def test_burst_of_256_keepalive_clients_on_the_defaults_is_all_served():
    # One worker to start with: the burst queues far past the old count cap of 100 while
    # more workers spawn, and every request is still answered 200.
    async with running([{"name": "app"}]) as server:
        group = server.pool.groups["app"]
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, len(group.waiters))
                await asyncio.sleep(0.001)

        watcher = asyncio.ensure_future(watch())
        load = Load(server, clients=256)
        try:
            await load.more(2000, timeout=60)
        finally:
            await load.stop()
            watcher.cancel()
        assert load.failures == []
        assert peak > 100
        assert server.proxy.stats.errors_503 == 0


async def test_request_waiting_past_max_request_queue_time_is_503_with_retry_after():
    sink, slow_started = started_event("slow request started")
    app = {"name": "app", "min_instances": 1, "max_instances": 1,
           "max_request_queue_time": 0.5}
    async with running([app], on_output=sink) as server:
        group = server.pool.groups["app"]
        # Served in time: queued behind a request that ends before the limit.
        slow = asyncio.ensure_future(get(server, "/slow?0.1"))
        await asyncio.wait_for(slow_started.wait(), 10)
        assert (await get(server, "/"))[0] == 200 and (await slow)[0] == 200
        assert not group.queue_alarm.armed or not group.waiters
        # Waited too long: 503 after the limit, long before the worker is free again.
        slow_started.clear()
        slow = asyncio.ensure_future(get(server, "/slow?3"))
        await asyncio.wait_for(slow_started.wait(), 10)
        started = time.monotonic()
        late = asyncio.ensure_future(get(server, "/"))
        await wait_until(lambda: len(group.waiters) == 1)
        assert group.queue_alarm.armed and group.queue_age(time.monotonic()) >= 0
        status, headers, body = await late
        waited = time.monotonic() - started
        assert status == 503 and b"max_request_queue_time (0.5 s)" in body
        assert headers["Retry-After"] == "1"
        assert 0.5 <= waited < 2.5 and (await slow)[0] == 200
        assert not group.waiters and server.proxy.stats.errors_503 == 1


async def test_on_demand_spawn_and_idle_shutdown():
    app = {"name": "app", "min_instances": 0, "pool_idle_time": 0.3}
    async with running([app]) as server:
        group = server.pool.groups["app"]
        assert group.processes == []
        status, _, _ = await get(server, "/")
        assert status == 200 and group.spawned == 1
        await wait_until(lambda: not group.processes, timeout=10)


async def test_spawns_when_all_busy_up_to_max_instances():
    sink, _ = started_event("never")
    app = {"name": "app", "min_instances": 1, "max_instances": 3}
    async with running([app], on_output=sink, max_pool_size=3) as server:
        replies = await asyncio.gather(*(get(server, "/slow?0.5") for _ in range(3)))
        assert [r[0] for r in replies] == [200] * 3
        assert len({json.loads(r[2])["pid"] for r in replies}) == 3
        assert len(server.pool.groups["app"].processes) == 3


async def test_pool_full_frees_an_idle_process_of_another_app():
    apps = [{"name": "a", "min_instances": 1, "base_uri": "/a"},
            {"name": "b", "min_instances": 0, "base_uri": "/b"}]
    async with running(apps, max_pool_size=1) as server:
        a, b = server.pool.groups["a"], server.pool.groups["b"]
        assert len(a.processes) == 1
        # a's one worker is its minimum: never stopped to make room; b is told at once.
        status, _, body = await get(server, "/b/")
        assert status == 503 and b"every app at its min_instances" in body
        assert len(a.processes) == 1
        a.min_instances = 0  # now that worker is above a's minimum: it makes room
        status, _, _ = await get(server, "/b/")
        assert status == 200
        assert len(b.processes) == 1
        await wait_until(lambda: not a.processes)


async def test_max_requests_recycles_without_failed_requests():
    app = {"name": "app", "min_instances": 1, "max_requests": 3}
    async with running([app]) as server:
        pids = []
        for _ in range(10):
            status, _, body = await get(server, "/")
            assert status == 200
            pids.append(json.loads(body)["pid"])
        assert len(set(pids)) == 4
        assert pids[0] == pids[1] == pids[2] != pids[3]


async def test_streaming_response_and_head():
    async with running([{"name": "app"}]) as server:
        status, headers, body = await get(server, "/stream")
        assert status == 200
        assert body == b"".join(f"chunk {i}\n".encode() * 100 for i in range(50))
        status, headers, body = await get(server, "/", method="HEAD")
        assert status == 200 and body == b""
        assert int(headers["Content-Length"]) > 0


async def test_large_upload_is_spooled_and_delivered():
    payload = os.urandom(3 * 1024 * 1024 + 17)
    async with running([{"name": "app"}], client_body_buffer_size=64 * 1024) as server:
        status, _, body = await get(server, "/upload", method="POST", data=payload)
        assert status == 200
        assert json.loads(body) == {"size": len(payload),
                                    "sha256": hashlib.sha256(payload).hexdigest()}


async def test_body_over_client_max_body_size_is_413():
    async with running([{"name": "app"}], client_max_body_size=1000) as server:
        status, _, body = await get(server, "/upload", method="POST", data=b"x" * 5000)
        assert status == 413 and b"exceeds 1000" in body
        assert server.pool.groups["app"].processes[0].processed == 0


async def test_expect_100_continue():
    async with running([{"name": "app"}]) as server:
        host, port = server.address
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(b"hello")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()


async def test_hop_by_hop_and_forwarded_headers():
    async with running([{"name": "app"}]) as server:
        status, headers, body = await get(server, "/", headers={
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "drop me", "Keep-Alive": "timeout=5", "TE": "trailers",
            "Proxy-Connection": "keep-alive", "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
            "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.test",
            "X-Passenger-Script-Name": "/spoofed", "X-Custom": "kept",
        })
        reply = json.loads(body)
        seen = reply["headers"]
        assert "HTTP_X_SECRET_HOP" not in seen and "HTTP_KEEP_ALIVE" not in seen
        assert "HTTP_TE" not in seen and "HTTP_CONNECTION" not in seen
        # Proxy credentials are for the proxy (RFC 9110 §11.7.2; hop-by-hop in PEP 3333).
        assert "HTTP_PROXY_CONNECTION" not in seen and "HTTP_PROXY_AUTHORIZATION" not in seen
        assert seen["HTTP_X_CUSTOM"] == "kept"
        assert seen["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
        assert seen["HTTP_X_FORWARDED_HOST"] == f"127.0.0.1:{server.address[1]}"
        assert seen["HTTP_X_FORWARDED_PROTO"] == "http"
        assert reply["script_name"] == "" and reply["remote_addr"] == "127.0.0.1"
        assert headers["X-Request-Id"] == seen["HTTP_X_REQUEST_ID"]


async def test_plain_request_headers_reach_the_app_as_sent_plus_forwarding():
    # No header the proxy must drop or rewrite: the request's fields go through as they are.
    async with running([{"name": "app"}]) as server:
        status, headers, body = await get(server, "/", headers={
            "X-Custom": "kept", "Accept": "text/plain", "Cookie": "a=1"})
        seen = json.loads(body)["headers"]
        assert status == 200
        assert seen["HTTP_X_CUSTOM"] == "kept" and seen["HTTP_ACCEPT"] == "text/plain"
        assert seen["HTTP_COOKIE"] == "a=1"
        assert seen["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
        assert seen["HTTP_X_FORWARDED_HOST"] == f"127.0.0.1:{server.address[1]}"
        assert seen["HTTP_X_FORWARDED_PROTO"] == "http"
        assert headers["X-Request-Id"] == seen["HTTP_X_REQUEST_ID"]
        # Every request gets its own id.
        _, again, _ = await get(server, "/")
        assert again["X-Request-Id"] != headers["X-Request-Id"]


async def test_response_fields_reason_and_repeated_headers_are_relayed():
    async with running([{"name": "app"}]) as server, aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{server.address[1]}/cookies") as response:
        assert response.status == 299 and response.reason == "Fine Indeed"
        assert response.headers.getall("Set-Cookie") == ["a=1", "b=2"]
        assert response.headers["Content-Length"] == "11"
        assert "X-Request-Id" in response.headers
        assert await response.read() == b"two cookies"


async def test_trusted_proxy_forwarded_headers_are_kept():
    async with running([{"name": "app"}], trusted_proxies=["127.0.0.0/8"]) as server:
        _, _, body = await get(server, "/", headers={"X-Forwarded-For": "203.0.113.9",
                                                      "X-Forwarded-Proto": "https"})
        reply = json.loads(body)
        assert reply["headers"]["HTTP_X_FORWARDED_FOR"] == "203.0.113.9, 127.0.0.1"
        assert reply["scheme"] == "https"


async def test_worker_killed_before_responding_retry_rules(tmp_path):
    app = {"name": "app", "min_instances": 2, "max_instances": 2,
           "env": {"PROBE_DIR": str(tmp_path)}}
    async with running([app]) as server:
        # GET is idempotent: retried on another worker, the client sees a 200.
        status, _, body = await get(server, "/die-once")
        assert status == 200 and json.loads(body)["survived"]
        assert server.proxy.stats.retries == 1
        # POST reached the worker and must not be replayed: 502.
        (tmp_path / "died").unlink()
        group = server.pool.groups["app"]
        await wait_until(lambda: group.live_count() == 2)
        status, _, body = await get(server, "/die-once", method="POST", data=b"x")
        assert status == 502 and b"failed before responding" in body
        # Both deaths count as crashes, and both workers were replaced.
        await wait_until(lambda: group.crashes == 2 and group.live_count() == 2)


async def test_worker_killed_mid_response_closes_client_connection():
    async with running([{"name": "app"}]) as server:
        with pytest.raises(aiohttp.ClientPayloadError):
            await get(server, "/die-mid-response")
        group = server.pool.groups["app"]
        await wait_until(lambda: group.processes and group.processes[0].worker.alive)
        assert (await get(server, "/"))[0] == 200


@pytest.mark.parametrize("environment", ["development", "production"])
async def test_spawn_error_page_and_backoff(tmp_path, environment):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "app.py").write_text("raise ImportError('no module named totally_missing')\n")
    app = {"name": "broken", "root": str(broken), "min_instances": 0,
           "environment": environment}
    async with running([app]) as server:
        status, _, body = await get(server, "/")
        assert status == 500
        if environment == "development":
            assert b"import" in body and b"totally_missing" in body and b"Traceback" in body
        else:
            assert b"totally_missing" not in body and b"Error id" in body
        group = server.pool.groups["broken"]
        # More requests during the backoff are answered at once, without new spawns.
        starts = group.spawner.preloader_starts
        for _ in range(5):
            assert (await get(server, "/"))[0] == 500
        assert group.spawner.preloader_starts == starts
        assert group.backoff_until > 0


async def test_graceful_shutdown_drains_in_flight_requests():
    sink, slow_started = started_event("slow request started")
    async with running([{"name": "app"}], on_output=sink) as server:
        slow = asyncio.ensure_future(get(server, "/slow?0.8"))
        await asyncio.wait_for(slow_started.wait(), 10)
        host, port = server.address
        stopping = asyncio.ensure_future(server.stop())
        status, _, body = await slow
        assert status == 200 and json.loads(body)["slept"]
        await stopping
        with pytest.raises(OSError):
            await asyncio.open_connection(host, port)


async def test_asgi_app_behind_the_proxy():
    app = {"name": "asgi", "root": str(SAMPLE_APPS / "hello_asgi"), "entry": "app:app",
           "base_uri": "/asgi"}
    async with running([app]) as server:
        status, _, body = await get(server, "/asgi/")
        assert (status, body) == (200, b"Hello, ASGI world!\n")


async def raw_exchange(server, data: bytes, *, until_close: bool = True) -> bytes:
    """Send raw bytes on a fresh connection; read until the server closes it."""
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(-1), 10) if until_close else b""
    finally:
        writer.close()


async def test_pipelined_requests_are_answered_in_order():
    async with running([{"name": "app"}]) as server:
        data = (b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                b"GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = await raw_exchange(server, data)
        assert reply.count(b"HTTP/1.1 200 OK") == 3
        assert reply.index(b'"path": "/first"') < reply.index(b'"size": 3') \
            < reply.index(b'"path": "/third"')
        assert reply.endswith(b"}") and b"Connection: close" in reply


async def test_http10_client_gets_close_delimited_response():
    async with running([{"name": "app"}]) as server:
        reply = await raw_exchange(server, b"GET /stream HTTP/1.0\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
        assert b"Transfer-Encoding" not in head
        assert body == b"".join(f"chunk {i}\n".encode() * 100 for i in range(50))


async def test_chunked_request_body_reaches_the_worker_with_a_length():
    async with running([{"name": "app"}]) as server:
        reply = await raw_exchange(server, b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                                           b"Transfer-Encoding: chunked\r\nConnection: close\r\n"
                                           b"\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        body = json.loads(reply.partition(b"\r\n\r\n")[2])
        assert body == {"size": 11, "sha256": hashlib.sha256(b"hello world").hexdigest()}


@pytest.mark.parametrize("data, status", [
    (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", b"400"),
    (b"BREW /pot HTCPCP/1.0\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", b"431"),
])
async def test_bad_requests_never_reach_a_worker(data, status):
    async with running([{"name": "app"}]) as server:
        reply = await raw_exchange(server, data)
        assert reply.startswith(b"HTTP/1.1 " + status)
        assert server.pool.groups["app"].processes[0].processed == 0
        assert (await get(server, "/"))[0] == 200  # and the server keeps serving


async def test_client_that_leaves_the_queue_is_withdrawn():
    sink, slow_started = started_event("slow request started")
    app = {"name": "app", "min_instances": 1, "max_instances": 1}
    async with running([app], on_output=sink) as server:
        slow = asyncio.ensure_future(get(server, "/slow?0.5"))
        await asyncio.wait_for(slow_started.wait(), 10)
        group = server.pool.groups["app"]
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await wait_until(lambda: len(group.waiters) == 1)
        writer.close()
        await wait_until(lambda: not group.waiters)
        assert (await slow)[0] == 200
        assert group.processes[0].processed == 1


def _in_flight_upstreams(server):
    return [c.current.upstream for c in server.proxy.connections
            if c.current is not None and c.current.upstream is not None]


async def test_slow_client_download_then_the_worker_serves_again():
    app = {"name": "app", "min_instances": 1, "max_instances": 1}
    async with running([app]) as server:
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET /big?512 HTTP/1.1\r\nHost: x\r\n\r\n")  # 32 MiB, chunked
        # The client does not read: the proxy stops reading the worker.
        await wait_until(lambda: any(u.paused for u in _in_flight_upstreams(server)))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head
        size = 0
        while True:
            line = await asyncio.wait_for(reader.readline(), 10)
            length = int(line, 16)
            if length == 0:
                await reader.readline()
                break
            size += len(await asyncio.wait_for(reader.readexactly(length + 2), 10)) - 2
        assert size == 512 * 65536
        writer.close()
        # The same worker (and its pooled connection) takes the next requests at once.
        for _ in range(3):
            status, _, _ = await asyncio.wait_for(get(server, "/"), 10)
            assert status == 200


async def test_app_answering_before_a_spooled_upload_is_sent_stays_usable():
    app = {"name": "app", "min_instances": 1, "max_instances": 1}
    async with running([app], client_body_buffer_size=64 * 1024) as server:
        status, _, body = await get(server, "/reject-early", method="POST",
                                    data=b"y" * (8 * 1024 * 1024))
        assert (status, body) == (401, b"no way")
        for _ in range(3):
            status, _, _ = await asyncio.wait_for(get(server, "/"), 10)
            assert status == 200


async def test_client_leaving_mid_response_frees_the_worker():
    app = {"name": "app", "min_instances": 1, "max_instances": 1}
    async with running([app]) as server:
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET /big?4096 HTTP/1.1\r\nHost: x\r\n\r\n")  # 256 MiB: never all read
        await asyncio.wait_for(reader.readexactly(100_000), 10)
        writer.close()
        process = server.pool.groups["app"].processes[0]
        await wait_until(lambda: process.sessions == 0)
        status, _, _ = await asyncio.wait_for(get(server, "/"), 10)
        assert status == 200


async def test_upgrade_request_is_answered_and_the_connection_closed():
    async with running([{"name": "app"}]) as server:
        reply = await raw_exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n"
                                           b"Connection: Upgrade, HTTP2-Settings\r\n"
                                           b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAA"
                                           b"\r\n\r\n")
        head = reply.partition(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head


async def test_max_request_time_gives_504_and_replaces_the_worker():
    app = {"name": "app", "min_instances": 1, "max_instances": 1, "max_request_time": 0.5}
    async with running([app]) as server:
        group = server.pool.groups["app"]
        stuck = group.processes[0].pid
        status, _, body = await asyncio.wait_for(get(server, "/slow?30"), 10)
        assert status == 504 and b"max_request_time (0.5 s)" in body
        await wait_until(lambda: group.live_count() == 1 and
                         stuck not in {p.pid for p in group.processes})
        status, _, body = await get(server, "/")
        assert status == 200 and json.loads(body)["pid"] != stuck
        assert group.crashes == 0  # a planned kill, not a crash


async def test_memory_limit_recycles_a_bloated_worker_without_failures():
    app = {"name": "app", "min_instances": 1, "max_instances": 2, "memory_limit": 40}
    async with running([app], server_options={"smaps_interval": 0.2}) as server:
        group = server.pool.groups["app"]
        bloated = group.processes[0].pid
        status, _, body = await get(server, "/grow?60")
        assert status == 200 and json.loads(body)["pid"] == bloated
        failures = []

        async def client_loop() -> None:
            while bloated in {p.pid for p in group.processes}:
                status, _, _ = await get(server, "/")
                if status != 200:
                    failures.append(status)

        await asyncio.wait_for(client_loop(), 30)
        assert failures == []
        await wait_until(lambda: group.live_count() == 1)
        assert group.crashes == 0


@pytest.mark.parametrize("data, expected", [
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow", b"client_header_timeout"),
    (b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", b"client_body_timeout"),
])
async def test_slow_clients_get_408_and_never_reach_a_worker(data, expected):
    async with running([{"name": "app"}], client_header_timeout=0.3,
                       client_body_timeout=0.3) as server:
        reply = await raw_exchange(server, data)
        assert reply.startswith(b"HTTP/1.1 408") and expected in reply
        assert server.pool.groups["app"].processes[0].processed == 0


async def test_idle_keepalive_connections_are_closed():
    async with running([{"name": "app"}], keepalive_timeout=0.3) as server:
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(head.lower().partition(b"content-length: ")[2].split(b"\r\n")[0])
        await asyncio.wait_for(reader.readexactly(length), 10)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
        writer.close()


async def test_connections_over_max_connections_get_503():
    async with running([{"name": "app"}], max_connections=2) as server:
        held = [await asyncio.open_connection(*server.address) for _ in range(2)]
        await wait_until(lambda: len(server.proxy.connections) == 2)
        reply = await raw_exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503") and b"max_connections = 2" in reply
        for _, writer in held:
            writer.close()
        await wait_until(lambda: not server.proxy.connections)
        assert (await get(server, "/"))[0] == 200


@pytest.mark.parametrize("policy", ["batch", "normal"])
async def test_worker_scheduling_policy(policy):
    # Workers do not preempt the proxy when woken ("batch"); the preloader stays normal.
    expected = {"batch": os.SCHED_BATCH, "normal": os.SCHED_OTHER}[policy]
    app = {"name": "app", "min_instances": 2, "worker_scheduling": policy}
    async with running([app]) as server:
        assert (await get(server, "/"))[0] == 200
        group = server.pool.groups["app"]
        assert [os.sched_getscheduler(p.pid) for p in group.processes] == [expected] * 2
        preloader = group.spawner.preloader
        assert preloader is not None and os.sched_getscheduler(preloader.pid) == os.SCHED_OTHER
