"""The typed status snapshot: its JSON is the documented schema, and it round-trips.

The schema's keys are spelled out here once more, on purpose: a renamed or dropped key
fails these tests (the schema is stable: new keys may be added, none removed or renamed).
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest

from tests.conftest import assert_no_children
from tests.serving import get, running
from tests.test_dashboard import FD_WARNING, fake_snapshot
from tui_passenger.admin.client import AdminClient
from tui_passenger.admin.report import memory_text, status_text
from tui_passenger.snapshot import MemoryTotals, MemoryUsage, Snapshot
from tui_passenger.status import snapshot
from tui_passenger.tui import format as fmt

TOP = {"schema", "server", "manager", "apps", "totals", "traffic", "events_seq", "sampling"}
SERVER = {"pid", "url", "addresses", "started", "uptime", "max_pool_size", "processes", "requests",
          "responses", "retries", "errors_502", "errors_503", "log_file", "dashboard_owned"}
SAMPLED = {"cpu", "threads", "memory", "fds", "warnings", "notes"}
MANAGER = {"pid", *SAMPLED}
APP = {"name", "spawn_method", "environment", "min_instances", "max_instances", "queue",
       "queue_limit", "queue_time_limit", "queue_oldest",
       "max_request_time", "memory_limit_mb", "spawning", "spawned",
       "restarts", "crashes", "requests", "pipeline_window", "pipelined", "reclaimed",
       "pipelining",
       "worker_scheduling", "last_spawn_error", "preloader", "generation", "mold", "reforks",
       "refork_next", "processes", "memory", "websockets", "max_websockets",
       "memory_history", "refork_hint"}
PRELOADER = {"pid", "ppid", "state", "started", "uptime", "load_ms", "threads_at_load",
             "generation", "mold", *SAMPLED}
PROCESS = {"pid", "ppid", "app", "state", "spawn_method", "generation", "spawn_ms", "sessions",
           "concurrency", "processed", "max_requests", "started", "uptime", "last_used",
           "lost_threads", "websockets", "requests", "memory_history", *SAMPLED}
MEMORY = {"rss", "pss", "uss", "shared", "private_dirty", "swap"}
TOTALS = {*MEMORY, "direct_estimate", "saving"}
FD = {"fd", "kind", "target", "inode", "cloexec", "shared_with", "warning", "level", "own"}
TRAFFIC = {"rps", "p50_ms", "p99_ms"}


def check_schema(data: dict[str, Any]) -> None:
    """Every object of a status JSON has exactly the documented keys."""
    assert set(data) == TOP and data["schema"] == 1
    assert set(data["server"]) == SERVER
    assert set(data["server"]["responses"]) == {"1xx", "2xx", "3xx", "4xx", "5xx"}
    assert set(data["manager"]) == MANAGER
    assert set(data["totals"]) == TOTALS and set(data["traffic"]) == TRAFFIC
    processes = [data["manager"]]
    for app in data["apps"]:
        assert set(app) == APP, set(app) ^ APP
        assert set(app["memory"]) == TOTALS
        if app["preloader"] is not None:
            assert set(app["preloader"]) == PRELOADER
            processes.append(app["preloader"])
        for process in app["processes"]:
            assert set(process) == PROCESS, set(process) ^ PROCESS
            processes.append(process)
    for process in processes:
        assert process["memory"] is None or set(process["memory"]) == MEMORY
        for entry in process["fds"]:
            assert set(entry) == FD


def current_snapshot() -> dict[str, Any]:
    """The dashboard's fake snapshot with the keys added since it was written."""
    data = fake_snapshot()
    for app in data["apps"]:
        app["websockets"], app["max_websockets"] = 0, 10000
        for process in app["processes"]:
            process["websockets"] = 0
    return data


def test_a_reply_without_the_websocket_keys_still_loads() -> None:
    snap = Snapshot.from_json(fake_snapshot())  # as an older server sends it
    assert all(a.websockets == 0 and all(p.websockets == 0 for p in a.processes)
               for a in snap.apps)


def varied_snapshot() -> dict[str, Any]:
    """The dashboard's fake snapshot with every optional part filled in."""
    data = current_snapshot()
    hello, api = data["apps"]
    hello["preloader"]["mold"] = True
    hello["preloader"]["generation"] = hello["generation"] = 2
    hello["mold"] = hello["preloader"]["pid"]
    hello["reforks"], hello["refork_next"] = 2, 5000
    worker = hello["processes"][0]
    worker["lost_threads"] = ["metrics-flusher"]
    worker["warnings"].append("threads started while the app was loading did not survive")
    api["last_spawn_error"] = {"category": "import", "message": "ImportError: no"}
    api["max_request_time"], api["memory_limit_mb"] = 30.0, 512
    api["processes"][0]["memory"] = None
    api["websockets"] = api["processes"][0]["websockets"] = 7
    data["manager"]["memory"] = dict(hello["processes"][1]["memory"])
    data["server"]["url"], data["server"]["addresses"] = None, []
    return data


@pytest.mark.parametrize("data", [current_snapshot(), varied_snapshot()],
                         ids=["plain", "varied"])
def test_json_round_trip(data: dict[str, Any]) -> None:
    check_schema(data)
    snap = Snapshot.from_json(copy.deepcopy(data))
    assert snap.to_json() == data
    assert Snapshot.from_json(json.loads(json.dumps(snap.to_json()))) == snap


def test_an_older_instance_without_addresses_shows_its_url() -> None:
    data = fake_snapshot()
    del data["server"]["addresses"]
    assert Snapshot.from_json(data).server.addresses == ("http://127.0.0.1:3000",)


def test_typed_values() -> None:
    snap = Snapshot.from_json(varied_snapshot())
    hello, api = snap.apps
    assert (hello.name, api.name) == ("hello", "api")
    assert hello.preloader is not None and hello.mold == hello.preloader.pid == 1100
    assert isinstance(hello.memory, MemoryTotals) and hello.memory.saving == 103 << 20
    assert isinstance(hello.processes[0].memory, MemoryUsage)
    (info, warned) = hello.processes[0].fds
    assert info.level == "info" and info.note.startswith("socket shared")
    assert warned.level == "warning" and warned.note == FD_WARNING
    assert warned.shared_with == (1101, 1102)
    assert api.last_spawn_error is not None and api.last_spawn_error.category == "import"
    assert api.memory_limit_mib == 512 and api.processes[0].memory is None
    assert snap.traffic.rps[-1] == (59 * 7) % 23


@pytest.mark.parametrize("bad", [{}, {"schema": 2}, [], {"schema": 1, "server": {}}])
def test_from_json_refuses_what_is_not_a_schema_1_snapshot(bad: Any) -> None:
    with pytest.raises(ValueError, match="snapshot"):
        Snapshot.from_json(bad)


def test_reports_read_typed_or_json_alike_and_say_mib() -> None:
    data = varied_snapshot()
    snap = Snapshot.from_json(data)
    assert status_text(snap) == status_text(data)
    assert memory_text(snap) == memory_text(data)
    text = status_text(snap)
    assert "memory_limit 512 MiB" in text and "Mold (a promoted worker): PID 1100" in text
    assert "Requests in queue: 1 / 100 (max wait 10 s, oldest waited 0.0 s)" in text
    assert "Requests in queue: 0 / 100 (max wait 10 s)   Spawning" in text
    assert "PSS 14.0 MiB" in text  # worker 1101: 14 << 20 bytes
    memory = memory_text(snap)
    assert "Total PSS 77.0 MiB" in memory and "saves 103.0 MiB" in memory
    for report in (text, memory):
        assert " MB" not in report
    assert fmt.mebibytes(3 << 20) == "3.0 MiB" and fmt.size(3 << 20) == "3.0M"


async def test_live_snapshot_is_the_status_reply_and_round_trips() -> None:
    apps = [{"name": "app", "min_instances": 2, "max_instances": 2, "memory_limit": 500},
            {"name": "d", "base_uri": "/d", "spawn_method": "direct", "min_instances": 1}]
    async with running(apps, max_pool_size=4) as server:
        assert (await get(server, "/"))[0] == 200
        await server.sample_now()
        snap = snapshot(server)
        data = json.loads(json.dumps(snap.to_json()))
        check_schema(data)
        assert Snapshot.from_json(data) == snap
        smart, direct = snap.apps
        group = server.pool.groups["app"]
        assert smart.preloader is not None
        assert smart.preloader.pid == group.spawner.preloader.pid
        assert {p.pid for p in smart.processes} == {p.pid for p in group.processes}
        assert all(p.ppid == smart.preloader.pid and p.memory is not None
                   for p in smart.processes)
        assert smart.memory_limit_mib == 500 and data["apps"][0]["memory_limit_mb"] == 500
        assert direct.preloader is None and direct.memory.saving == 0
        assert snap.totals.pss == smart.memory.pss + direct.memory.pss > 0
        assert snap.server.requests >= 1 and snap.sampling

        client = AdminClient(server.admin.path)
        status, body = await asyncio.to_thread(client.request, "GET", "/status")
        assert status == 200
        reply = json.loads(body)
        check_schema(reply)
        # Key order too: status --json prints the reply as it comes.
        assert json.dumps(Snapshot.from_json(reply).to_json()) == body.decode()
        assert [a["name"] for a in reply["apps"]] == ["app", "d"]
        assert {p["pid"] for p in reply["apps"][0]["processes"]} == \
            {p.pid for p in smart.processes}
    assert_no_children()
