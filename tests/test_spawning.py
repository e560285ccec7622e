"""The spawning engine with real processes: direct and smart spawning, hooks, failures."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal

import psutil
import pytest

from tests.conftest import SAMPLE_APPS, app_config
from tests.helpers import unix_json, unix_request
from tui_passenger.engine import SpawnError

METHODS = ["direct", "smart"]

PROBE_APP = """
    import json, os, random
    import tui_passenger

    seen = []

    @tui_passenger.on_event("starting_worker_process")
    def hook(forked):
        seen.append(forked)

    def application(environ, start_response):
        body = json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "forked": seen,
                           "random": random.random(), "path": environ["PATH_INFO"]}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
"""


@pytest.mark.parametrize("method", METHODS)
async def test_worker_answers_http_and_hook_sees_forked(method, make_app, spawners):
    spawner = spawners(make_app(PROBE_APP), method)
    worker = await spawner.spawn()
    reply = await asyncio.to_thread(unix_json, worker.socket_path, "/hello%20there")
    assert reply["pid"] == worker.pid
    assert reply["path"] == "/hello there"
    assert reply["forked"] == [method == "smart"]
    assert worker.spawn_method == method
    assert worker.spawn_duration is not None and worker.spawn_duration > 0


@pytest.mark.parametrize("method", METHODS)
async def test_asgi_worker_answers_http(method, spawners):
    app = app_config(SAMPLE_APPS / "hello_asgi", name="asgi", entry="app:app")
    worker = await spawners(app, method).spawn()
    assert worker.interface == "asgi"
    assert worker.concurrency > 1
    status, _, body = await asyncio.to_thread(unix_request, worker.socket_path)
    assert (status, body) == (200, b"Hello, ASGI world!\n")


async def test_forked_workers_are_children_of_the_preloader(make_app, spawners):
    spawner = spawners(make_app(PROBE_APP), "smart")
    workers = await asyncio.gather(*(spawner.spawn() for _ in range(3)))
    preloader_pid = spawner.preloader.pid
    assert preloader_pid is not None and preloader_pid != os.getpid()
    assert psutil.Process(preloader_pid).ppid() == os.getpid()
    for worker in workers:
        assert worker.ppid == preloader_pid
        assert psutil.Process(worker.pid).ppid() == preloader_pid
    # One preloader served all three, and the children reseeded random independently.
    assert spawner.preloader_starts == 1
    randoms = {(await asyncio.to_thread(unix_json, w.socket_path))["random"] for w in workers}
    assert len(randoms) == 3


async def test_direct_workers_are_our_children(make_app, spawners):
    worker = await spawners(make_app(PROBE_APP), "direct").spawn()
    assert worker.ppid == os.getpid()
    assert psutil.Process(worker.pid).ppid() == os.getpid()


async def test_hooks_demo_reconnects_and_restarts_its_lost_thread(spawners):
    app = app_config(SAMPLE_APPS / "hooks_demo", name="hooks", entry="app:application")
    lines = []
    spawner = spawners(app, "smart", on_output=lines.append)
    worker = await spawner.spawn()
    # The preloader's heartbeat thread did not survive the fork, but the hook started it
    # again: nothing is reported lost.
    assert spawner.preloader.threads == ("heartbeat",)
    assert worker.lost_threads == ()
    reply = await asyncio.to_thread(unix_json, worker.socket_path)
    assert reply["cache_reconnected"] is True
    assert reply["cache_opened_by"] == worker.pid
    assert reply["heartbeat_alive"] is True
    # Output reaches the manager line by line, labelled with the worker's own pid.
    hook_lines = [line for line in lines if "starting_worker_process(forked=True)" in line.text]
    assert [(line.pid, line.role, line.stream) for line in hook_lines] == [
        (worker.pid, "worker", "stdout")]
    await worker.stop(5)
    assert any(line.pid == worker.pid and "stopping_worker_process" in line.text
               for line in lines)


async def test_direct_worker_loses_no_threads(spawners):
    app = app_config(SAMPLE_APPS / "hooks_demo", name="hooks", entry="app:application")
    worker = await spawners(app, "direct").spawn()
    assert worker.lost_threads == ()
    reply = await asyncio.to_thread(unix_json, worker.socket_path)
    assert reply["cache_reconnected"] is False
    assert reply["hook_calls"][0]["forked"] is False


async def test_preloader_exits_when_idle_and_comes_back(make_app, spawners):
    spawner = spawners(make_app(PROBE_APP, max_preloader_idle_time=0.5), "smart")
    first = await spawner.spawn()
    preloader = spawner.preloader
    status = await asyncio.wait_for(asyncio.shield(preloader.exited), 10)
    assert status.code == 0 and preloader.idle_exited
    # The forked worker outlives its preloader and keeps serving.
    assert first.alive
    assert (await asyncio.to_thread(unix_json, first.socket_path))["pid"] == first.pid
    second = await spawner.spawn()
    assert spawner.preloader.pid != preloader.pid
    assert second.ppid == spawner.preloader.pid
    assert spawner.preloader_starts == 2
    # The orphaned first worker is now ours: its exit is seen and it is reaped.
    assert psutil.Process(first.pid).ppid() == os.getpid()
    assert (await first.stop(5)).code == 0


async def test_killed_preloader_is_restarted(make_app, spawners):
    spawner = spawners(make_app(PROBE_APP), "smart")
    worker = await spawner.spawn()
    old = spawner.preloader
    os.kill(old.pid, signal.SIGKILL)
    status = await asyncio.wait_for(asyncio.shield(old.exited), 10)
    assert status.signal == signal.SIGKILL
    assert worker.alive
    again = await spawner.spawn()
    assert spawner.preloader is not old and again.ppid == spawner.preloader.pid
    # A forked worker killed by a signal reports it (the new preloader reaps and tells us).
    os.kill(again.pid, signal.SIGKILL)
    assert (await asyncio.wait_for(asyncio.shield(again.exited), 10)).signal == signal.SIGKILL


@pytest.mark.parametrize("method", METHODS)
async def test_import_error_is_a_spawn_error_with_traceback(method, make_app, spawners):
    app = make_app("""
        import os
        print("about to fail", flush=True)
        raise RuntimeError("database URL missing")
    """)
    with pytest.raises(SpawnError) as info:
        await spawners(app, method).spawn()
    err = info.value
    assert err.category == "import"
    assert "RuntimeError: database URL missing" in err.message
    assert 'raise RuntimeError("database URL missing")' in err.traceback
    assert "about to fail" in err.output
    assert "RuntimeError: database URL missing" in err.details()


@pytest.mark.parametrize("method", METHODS)
async def test_hook_error_fails_the_spawn(method, make_app, spawners):
    app = make_app("""
        import tui_passenger

        @tui_passenger.on_event("starting_worker_process")
        def broken(forked):
            raise ValueError(f"cannot reconnect (forked={forked})")

        def application(environ, start_response):
            start_response("200 OK", [])
            return [b""]
    """)
    with pytest.raises(SpawnError) as info:
        await spawners(app, method).spawn()
    assert info.value.category == "hook"
    assert f"cannot reconnect (forked={method == 'smart'})" in info.value.traceback
    assert "def broken" in info.value.traceback or "broken" in info.value.traceback


@pytest.mark.parametrize("method", METHODS)
async def test_start_timeout_is_enforced(method, make_app, spawners):
    app = make_app("""
        import time
        print("loading forever", flush=True)
        time.sleep(60)
    """, start_timeout=1)
    with pytest.raises(SpawnError) as info:
        await spawners(app, method).spawn()
    assert info.value.category == "timeout"
    assert "start_timeout" in info.value.message
    assert "loading forever" in info.value.output


async def test_start_timeout_covers_a_slow_hook_in_a_forked_worker(make_app, spawners):
    app = make_app("""
        import time
        import tui_passenger

        @tui_passenger.on_event("starting_worker_process")
        def slow(forked):
            time.sleep(60)

        def application(environ, start_response):
            start_response("200 OK", [])
            return [b""]
    """, start_timeout=1.5)
    spawner = spawners(app, "smart")
    with pytest.raises(SpawnError) as info:
        await spawner.spawn()
    assert info.value.category == "timeout"
    # The stuck worker was killed; the preloader is still fine.
    assert not psutil.pid_exists(info.value.pid) or \
        psutil.Process(info.value.pid).status() == psutil.STATUS_ZOMBIE
    assert spawner.preloader.state == "ready"


@pytest.mark.parametrize("method", METHODS)
async def test_worker_that_dies_before_ready(method, make_app, spawners):
    app = make_app("""
        import os, sys
        import tui_passenger

        @tui_passenger.on_event("starting_worker_process")
        def die(forked):
            sys.stderr.write("bye\\n"); sys.stderr.flush()
            os._exit(9)

        def application(environ, start_response):
            return []
    """)
    with pytest.raises(SpawnError) as info:
        await spawners(app, method).spawn()
    assert info.value.category == "exited"
    assert "exit code 9" in info.value.message
    assert "bye" in info.value.output


@pytest.mark.parametrize("method", METHODS)
async def test_missing_interpreter_is_a_spawn_error(method, make_app, spawners):
    app = dataclasses.replace(make_app(PROBE_APP), python="/nonexistent/bin/python3")
    with pytest.raises(SpawnError) as info:
        await spawners(app, method).spawn()
    assert info.value.category == "interpreter"
    assert "/nonexistent/bin/python3" in info.value.message


@pytest.mark.parametrize("method", METHODS)
async def test_stop_finishes_the_request_in_flight(method, make_app, spawners):
    app = make_app("""
        import time
        def application(environ, start_response):
            print("request started", flush=True)
            time.sleep(0.5)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"done"]
    """)
    started = asyncio.Event()

    def on_output(line):
        if line.text == "request started":
            started.set()

    worker = await spawners(app, method, on_output=on_output).spawn()
    request = asyncio.ensure_future(asyncio.to_thread(unix_request, worker.socket_path))
    await asyncio.wait_for(started.wait(), 10)
    status = await worker.stop(10)
    assert status.code == 0
    code, _, body = await request
    assert (code, body) == (200, b"done")


async def test_many_workers_each_way_then_nothing_left(make_app, spawners):
    app = make_app(PROBE_APP)
    direct, smart = spawners(app, "direct"), spawners(app, "smart")
    workers = await asyncio.gather(*(s.spawn() for s in (direct, smart) for _ in range(3)))
    assert len({w.pid for w in workers}) == 6
    pids = [w.pid for w in workers] + [smart.preloader.pid]
    await asyncio.gather(*(w.stop(5) for w in workers))
    await smart.close()
    assert not [pid for pid in pids if psutil.pid_exists(pid)]


@pytest.mark.parametrize("method", METHODS)
async def test_children_hold_nothing_of_the_managers(method, make_app, spawners):
    from tui_passenger.inspect.fds import ProcessInfo, inventory

    spawner = spawners(make_app(PROBE_APP), method)
    worker = await spawner.spawn()
    targets = {os.getpid(): ProcessInfo("manager"), worker.pid: ProcessInfo("worker")}
    if method == "smart":
        targets[spawner.preloader.pid] = ProcessInfo("preloader")
    fds = await asyncio.to_thread(inventory, targets)
    leaked = [(pid, fd.fd, fd.target) for pid, entries in fds.items() if pid != os.getpid()
              for fd in entries if os.getpid() in fd.shared_with]
    assert leaked == []


@pytest.mark.parametrize("method", METHODS)
async def test_children_import_nothing_from_the_app_root_before_loading_it(method, make_app,
                                                                           spawners, tmp_path):
    # A module in the app root shadowing one our runtime imports at start-up (json) must
    # not run: before the app is loaded the child may still be root, and the app root may
    # be writable by the app's user.
    app = make_app(PROBE_APP)
    marker = tmp_path / "planted-module-ran"
    (app.root / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                      "raise ImportError('planted')\n")
    worker = await spawners(app, method).spawn()
    assert worker.alive
    assert not marker.exists()


@pytest.mark.parametrize("method", METHODS)
async def test_spawner_lists_its_preloaders(method, make_app, spawners):
    spawner = spawners(make_app(PROBE_APP), method)
    assert spawner.preloaders() == [] and spawner.preloader is None
    await spawner.spawn()
    assert (spawner.generation, spawner.reforks) == (0, 0)
    if method == "direct":
        assert spawner.preloaders() == [] and spawner.preloader is None
        return
    preloader = spawner.preloader
    assert spawner.preloaders() == [preloader] and preloader.role == "preloader"
    os.kill(preloader.pid, signal.SIGKILL)
    await asyncio.wait_for(asyncio.shield(preloader.exited), 10)
    assert spawner.preloaders() == []  # gone, though still the current one until a spawn
