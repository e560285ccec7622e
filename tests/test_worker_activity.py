"""What each worker is doing: its requests in flight in the status, and its Python stacks read
while it runs (``ctl stack``), against real smart and direct workers, WSGI and ASGI."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import assert_no_children
from tests.serving import get, running, wait_until
from tui_passenger.activity import HISTORY_POINTS, MemoryRing
from tui_passenger.admin.cli import ctl
from tui_passenger.admin.client import AdminClient
from tui_passenger.admin.report import status_text
from tui_passenger.operations import Action, Operations, RefusalKind, Refused
from tui_passenger.snapshot import Snapshot
from tui_passenger.status import snapshot

ASGI_APP = '''
import asyncio


async def slow_endpoint(send):
    await asyncio.sleep(3)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await slow_endpoint(send)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
'''


def _requests(server, pid: int):
    (process,) = [p for a in snapshot(server).apps for p in a.processes if p.pid == pid]
    return process.requests


@pytest.mark.parametrize("method", ["smart", "direct"])
async def test_a_slow_request_in_flight_shows_with_a_growing_age_then_goes(method: str) -> None:
    async with running([{"name": "app", "spawn_method": method, "min_instances": 1}]) as server:
        (process,) = server.pool.groups["app"].processes
        slow = asyncio.ensure_future(get(server, "/slow?2"))
        await wait_until(lambda: _requests(server, process.pid), timeout=10)
        (first,) = _requests(server, process.pid)
        assert (first.method, first.path) == ("GET", "/slow?2") and first.id
        await asyncio.sleep(0.2)
        (later,) = _requests(server, process.pid)
        assert later.id == first.id and later.age > first.age
        # The JSON, the typed snapshot after a round trip and the text report agree.
        data = json.loads(json.dumps(snapshot(server).to_json()))
        (entry,) = data["apps"][0]["processes"][0]["requests"]
        assert set(entry) == {"id", "method", "path", "age"} and entry["path"] == "/slow?2"
        text = status_text(Snapshot.from_json(data))
        assert "> GET /slow?2  running" in text
        assert (await slow)[0] == 200
        assert _requests(server, process.pid) == ()
    assert_no_children()


def _asgi_app(tmp_path: Path) -> dict:
    (tmp_path / "slow_asgi.py").write_text(textwrap.dedent(ASGI_APP))
    return {"root": str(tmp_path), "entry": "slow_asgi:app"}


@pytest.mark.parametrize("method,kind", [("smart", "wsgi"), ("direct", "wsgi"),
                                         ("smart", "asgi")])
async def test_ctl_stack_shows_the_app_frame_of_a_live_worker(method: str, kind: str,
                                                             tmp_path: Path) -> None:
    app = {"name": "app", "spawn_method": method, "min_instances": 1}
    if kind == "asgi":
        app.update(_asgi_app(tmp_path))
    frame = "in slow_endpoint" if kind == "asgi" else "in application"
    async with running([app]) as server:
        (process,) = server.pool.groups["app"].processes
        slow = asyncio.ensure_future(get(server, "/slow?3" if kind == "wsgi" else "/slow"))
        await wait_until(lambda: _requests(server, process.pid), timeout=10)
        client = AdminClient(server.admin.path)

        async def dumped() -> str:
            # The request has reached the app's frame once it shows in a dump.
            deadline = time.monotonic() + 10
            while True:
                done = await asyncio.to_thread(client.act, Action.STACK, process.pid)
                if frame in done.reply["stack"] or time.monotonic() > deadline:
                    return done.message
                await asyncio.sleep(0.05)

        text = await dumped()
        assert frame in text, text
        assert text.startswith(f"worker {process.pid} of app: every thread")
        assert "(faulthandler)" in text and "thread 0x" in text.lower()
        assert "did not finish" not in text  # the end line came: the dump is whole
        assert process.worker.exited.done() is False  # not stopped by it
        assert (await slow)[0] == 200
        if method == "smart":  # the preloader answers too
            preloader = server.pool.groups["app"].spawner.preloader
            assert preloader is not None and preloader.pid is not None
            done = await Operations(server).stack(preloader.pid)
            assert done.reply["role"] == "preloader" and "thread 0x" in done.reply["stack"].lower()
    assert_no_children()


async def test_an_attached_dashboard_gets_requests_stacks_and_history() -> None:
    """Through the admin socket, as the dashboard attached to a running instance."""
    from tui_passenger.cores import AttachedCore

    async with running([{"name": "app", "min_instances": 1}]) as server:
        (process,) = server.pool.groups["app"].processes
        core = AttachedCore(server.admin.path)
        await core.start()
        try:
            slow = asyncio.ensure_future(get(server, "/slow?1.5"))
            await wait_until(lambda: _requests(server, process.pid), timeout=10)
            await server.sample_now()
            (worker,) = (await core.snapshot()).apps[0].processes
            (request,) = worker.requests
            assert (request.method, request.path) == ("GET", "/slow?1.5")
            assert worker.memory_history.first and worker.memory_history.second
            done = await core.stack(process.pid)
            assert done.reply["pid"] == process.pid and "(most recent call first)" in \
                done.reply["stack"]
            assert (await slow)[0] == 200
        finally:
            await core.stop()
    assert_no_children()


async def test_stack_refusals_say_why() -> None:
    import argparse
    import os

    async with running([{"name": "app", "min_instances": 1}]) as server:
        operations = Operations(server)
        with pytest.raises(Refused) as refused:
            await operations.stack(os.getpid())
        assert refused.value.kind is RefusalKind.INVALID and "manager" in refused.value.reason
        with pytest.raises(Refused) as refused:
            await operations.stack(1)  # a process, not ours
        assert refused.value.kind is RefusalKind.INVALID and "not a worker" in refused.value.reason
        with pytest.raises(Refused) as refused:
            await operations.stack(999_999_999)
        assert refused.value.kind is RefusalKind.NOT_FOUND
        client = AdminClient(server.admin.path)
        args = argparse.Namespace(action="stack", pid=999_999_999, fields=())
        with pytest.raises(Refused) as refused:
            await asyncio.to_thread(ctl, client, args)
        assert refused.value.kind is RefusalKind.NOT_FOUND and "999999999" in refused.value.reason
    assert_no_children()


def test_memory_ring_stays_bounded_and_spans_the_whole_life() -> None:
    ring = MemoryRing()
    for second in range(1, 1001):
        ring.add(float(second), second << 20, 2 * second << 20)
    ring.add(1000.0, 0, 0)  # the same sample read again: ignored
    history = ring.history()
    assert HISTORY_POINTS // 2 <= len(history.first) < HISTORY_POINTS
    assert len(history.first) == len(history.second)
    assert history.first[0] < 40 and history.first[-1] > 900  # oldest to newest, in MiB
    assert history.second[-1] == pytest.approx(2 * history.first[-1], rel=0.01)
    assert history.span == 999.0


def test_refork_hint_once_the_shared_fraction_has_fallen_since_the_fork() -> None:
    from dataclasses import replace

    from tests.test_dashboard import fake_snapshot
    from tui_passenger.activity import MemoryHistory
    from tui_passenger.status import refork_hint

    hello = Snapshot.from_json(fake_snapshot()).apps[0]
    worker, unsampled = hello.processes  # 38 MiB shared, 3 private; 40/1 after the fork
    assert worker.memory is not None and not unsampled.memory_history.first
    assert refork_hint("hello", hello.processes) is None
    drifted = replace(worker, memory=replace(worker.memory, shared=10 << 20,
                                             private_dirty=30 << 20))
    hint = refork_hint("hello", (drifted, unsampled))
    assert hint is not None and "share 25% of their memory" in hint and "(98% after" in hint
    # Never much shared to begin with: nothing a refork would win back.
    private_from_birth = replace(drifted, memory_history=MemoryHistory((10.0,), (30.0,), 1.0))
    assert refork_hint("hello", (private_from_birth,)) is None


async def test_memory_histories_fill_while_nobody_reads_the_status() -> None:
    options = {"sample_interval": 0.1, "smaps_interval": 0.1}
    async with running([{"name": "app", "min_instances": 1}], server_options=options) as server:
        assert server.sampler is not None
        # Unwatched, smaps is read again only once a reading is idle_age old: make that now.
        server.sampler.idle_age = 0.1
        group = server.pool.groups["app"]
        (process,) = group.processes
        # The server's one-second tick feeds them from the sampler's samples.
        await wait_until(lambda: len(process.memory.history().first) >= 2, timeout=20)
        # Feeding them is not someone looking: the sampler keeps its idle pace.
        assert not server.sampler.watched
        history = process.memory.history()
        assert all(value > 0 for value in history.first) and history.span > 0
        assert group.memory.history().first  # the app's PSS, and its saving
        (worker,) = snapshot(server).apps[0].processes
        assert worker.memory_history.first[:2] == history.first[:2]
    assert_no_children()
