#!/usr/bin/env python3
"""How long a key takes to show its effect on the dashboard, at scale.

Runs the dashboard headless (Textual's Pilot, 120×40) on a synthetic core that serves a
status like a real instance's with APPS apps of WORKERS workers (8 fds each, numbers that
move every tick), and times, over ``--repeats`` presses each: a fold and an unfold of the
selected app (left/right, local), a selection move (down: the detail panel shows the next
worker), and a scale up (+: the notification and the refreshed tree with the new worker).
A key's time runs from the press to the first frame drawn with its effect (the frames
the app sends to its headless terminal are watched).
``--server-ms`` adds that long to every status fetch (the round trip to a real manager).
With ``--socket PATH`` it attaches to a running instance instead (fold and selection only:
scaling a real instance is left to the operator).

    python3 bench/key_latency.py [--apps 1] [--workers 150] [--repeats 15] [--cprofile]

Prints the median and max per key, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout: measure that checkout's package
    sys.path.insert(0, str(ROOT))

from tui_passenger.core import Core  # noqa: E402
from tui_passenger.operations import Action, Done  # noqa: E402
from tui_passenger.snapshot import Snapshot  # noqa: E402

MB = 1 << 20
T0 = 1_700_000_000.0


def _memory(pss: int, shared: int) -> dict[str, int]:
    return {"rss": pss + shared, "pss": pss, "uss": pss - MB, "shared": shared,
            "private_dirty": pss - 2 * MB, "swap": 0}


def _fds(pid: int) -> list[dict[str, Any]]:
    kinds = [("unix", f"/tmp/w{pid}.sock"), ("pipe", "pipe:[1234]"),
             ("file", "/var/log/app.log"), ("tcp", "127.0.0.1:5432"),
             ("file", "/dev/null"), ("unix", "socket:[99]"), ("file", "/dev/urandom"),
             ("pipe", "pipe:[4321]")]
    return [{"fd": 3 + i, "kind": kind, "target": target, "inode": 1000 + i,
             "cloexec": True, "shared_with": [], "level": None, "warning": None, "own": True}
            for i, (kind, target) in enumerate(kinds)]


def _worker(pid: int, ppid: int, app: str, tick: int,
            fds_of: tuple[int, ...] | None) -> dict[str, Any]:
    uptime = 3600.0 + tick
    return {"pid": pid, "ppid": ppid, "app": app, "state": "ready", "spawn_method": "smart",
            "spawn_ms": 12.0, "sessions": 0, "concurrency": 1,
            "processed": pid % 97 + tick * (pid % 3), "max_requests": 0,
            "started": T0, "uptime": uptime, "last_used": 1.0, "lost_threads": [],
            "requests": [],
            "memory_history": {"shared_mib": [40.0, 39.5], "private_mib": [2.0, 2.5],
                               "span": uptime},
            "cpu": float((pid + tick) % 5 == 0), "threads": 1,
            "memory": _memory(14 * MB + (pid % 7) * 4096, 38 * MB),
            "fds": _fds(pid) if fds_of is None or pid in fds_of else [],
            "warnings": [], "notes": [], "generation": 0}


def synthetic_status(workers: dict[str, int], tick: int,
                     fds_of: tuple[int, ...] | None = None) -> dict[str, Any]:
    """A status JSON with ``workers[name]`` smart workers per app, at refresh ``tick``
    (fds listed for ``fds_of`` only, as ``/status?fds=`` does; None: all)."""
    apps = []
    pid = 2000
    for index, (name, count) in enumerate(workers.items()):
        pre = 1100 + index
        processes = [_worker(pid + i, pre, name, tick, fds_of) for i in range(count)]
        pid += count
        preloader = {"pid": pre, "ppid": 1000, "state": "ready", "started": T0,
                     "uptime": 3600.0 + tick, "load_ms": 250.0, "threads_at_load": [],
                     "cpu": 0.0, "threads": 1, "memory": _memory(20 * MB, 40 * MB),
                     "fds": _fds(pre) if fds_of is None or pre in fds_of else [],
                     "warnings": [], "notes": [], "generation": 0,
                     "mold": False}
        apps.append({
            "name": name, "spawn_method": "smart", "environment": "production",
            "min_instances": count, "max_instances": 0, "queue": 0, "queue_limit": 100,
            "queue_time_limit": 10.0, "queue_oldest": 0.0, "max_request_time": 0.0,
            "memory_limit_mb": 0, "pipeline_window": 0.01, "pipelined": 0, "reclaimed": 0,
            "pipelining": True, "worker_scheduling": "batch", "generation": 0, "mold": None,
            "reforks": 0, "refork_next": 0, "refork_hint": None,
            "spawning": 0, "spawned": count, "restarts": 0, "crashes": 0,
            "requests": 1000 + tick, "last_spawn_error": None, "preloader": preloader,
            "processes": processes,
            "memory_history": {"pss_mib": [40.0, 42.0], "saving_mib": [100.0, 99.0],
                               "span": 3600.0},
            "memory": {**_memory(count * 14 * MB, 40 * MB),
                       "direct_estimate": count * 50 * MB, "saving": count * 36 * MB}})
    total = sum(workers.values())
    return {
        "schema": 1,
        "server": {"pid": 1000, "url": "http://127.0.0.1:3000",
                   "addresses": ["http://127.0.0.1:3000"], "started": T0,
                   "uptime": 3600.0 + tick, "max_pool_size": total + 10, "processes": total,
                   "requests": 1000 + tick,
                   "responses": {"1xx": 0, "2xx": 1000, "3xx": 0, "4xx": 0, "5xx": 0},
                   "retries": 0, "errors_502": 0, "errors_503": 0, "log_file": None,
                   "dashboard_owned": False},
        "manager": {"pid": 1000, "cpu": 1.0, "threads": 2, "memory": None, "fds": [],
                    "warnings": [], "notes": []},
        "apps": apps,
        "totals": {**_memory(total * 14 * MB, 40 * MB), "direct_estimate": total * 50 * MB,
                   "saving": total * 36 * MB},
        "traffic": {"rps": [float(i % 7) for i in range(60)], "p50_ms": [1.0] * 60,
                    "p99_ms": [2.0] * 60},
        "events_seq": 0,
        "sampling": True,
    }


class SyntheticCore(Core):
    """Serves :func:`synthetic_status` (parsed from its JSON text, as attached); a scale
    changes the app's worker count from the next fetch on."""

    embedded = False
    description = "synthetic"

    def __init__(self, workers: dict[str, int], server_ms: float) -> None:
        self.workers = dict(workers)
        self.server_ms = server_ms
        self.tick = 0
        self.fetches = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def snapshot(self) -> Snapshot:
        self.tick += 1
        self.fetches += 1
        fds_of = getattr(self, "fds_of", None)  # not in the Core of older checkouts
        text = json.dumps(synthetic_status(self.workers, self.tick, fds_of))
        if self.server_ms:
            await asyncio.sleep(self.server_ms / 1000)
        return Snapshot.from_json(json.loads(text))

    async def events(self, since: int) -> tuple[int, list[dict[str, Any]]]:
        return 0, []

    async def scale(self, app: str, count: int) -> Done:
        self.workers[app] = count
        return Done(Action.SCALE, {"app": app, "min_instances": count})

    async def _unused(self, *args: Any) -> Done:
        raise NotImplementedError("not measured")

    kill = stack = restart = set_spawn_method = refork = pause_sampling = reload = _unused


async def until(pilot: Any, done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("never happened")
        await pilot.pause(0.005)


class Frames:
    """Watches the frames the app sends to its (headless) terminal: the first one drawn
    once a condition holds is the moment a key's effect is on screen."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._done: Callable[[], bool] | None = None
        self._shown: asyncio.Future[float] | None = None
        display = app._display

        def watched(screen: Any, renderable: Any) -> None:
            display(screen, renderable)
            if (renderable is not None and not app._batch_count and self._done is not None
                    and self._shown is not None and not self._shown.done() and self._done()):
                self._shown.set_result(time.perf_counter())

        app._display = watched

    async def timed(self, pilot: Any, key: str, done: Callable[[], bool]) -> float:
        """Milliseconds from pressing ``key`` to the first frame showing ``done()``."""
        self._done = done
        self._shown = asyncio.get_running_loop().create_future()
        start = time.perf_counter()
        await pilot.press(key)
        shown = await asyncio.wait_for(self._shown, 10)
        self._done = None
        return (shown - start) * 1000


async def measure(core: Core, repeats: int, scale_app: str | None,
                  profile: cProfile.Profile | None) -> dict[str, list[float]]:
    """Press each key ``repeats`` times; their latencies in ms."""
    from tui_passenger.tui.app import Dashboard

    app = Dashboard(core, interval=1.0)
    times: dict[str, list[float]] = {"fold": [], "unfold": [], "down": [], "scale": []}
    async with app.run_test(size=(120, 40)) as pilot:
        frames = Frames(app)
        timed = frames.timed
        await until(pilot, lambda: app.snapshot is not None and app.table.row_count > 2)
        table = app.table
        first = app.snapshot.apps[0] if app.snapshot else None
        assert first is not None
        name = first.name
        await pilot.pause(0.5)

        def phase(index: int) -> Awaitable[None]:
            # Presses land at every phase of the refresh cycle, not just after a tick.
            return pilot.pause((index * 0.37) % 1.0)

        if profile is not None:
            profile.enable()
        for repeat in range(repeats):
            index = repeat % (len(first.processes) - 1)
            await phase(repeat)
            table.select_key(f"pid:{app.snapshot.apps[0].processes[index].pid}")
            await pilot.pause()
            rows = table.row_count
            times["fold"].append(await timed(pilot, "left",
                                             lambda rows=rows: table.row_count < rows))
            times["unfold"].append(await timed(pilot, "right",
                                               lambda rows=rows: table.row_count == rows))
            await phase(repeat + 1)
            # From a worker row to the worker row below it.
            keys = [str(row.key.value) for row in table.ordered_rows]
            pairs = [i for i in range(len(keys) - 1)
                     if keys[i].startswith("pid:") and keys[i + 1].startswith("pid:")]
            start = pairs[repeat % len(pairs)]
            table.select_key(keys[start])
            await pilot.pause()
            want = int(keys[start + 1].removeprefix("pid:"))

            def moved(want: int = want) -> bool:  # the cursor and the detail panel
                selection = app.selection()
                return (selection is not None and selection.process is not None
                        and selection.process.pid == want
                        and f"worker {want}" in str(app.detail._memory._numbers.content))

            times["down"].append(await timed(pilot, "down", moved))
            if scale_app is None:
                continue
            await phase(repeat + 2)
            table.select_key(f"app:{name}")
            await pilot.pause()
            before = app.snapshot.server.processes if app.snapshot else 0

            def scaled(before: int = before, rows: int = rows) -> bool:
                return (app.snapshot is not None
                        and app.snapshot.server.processes > before
                        and table.row_count > rows)

            times["scale"].append(await timed(pilot, "plus", scaled))
        if profile is not None:
            profile.disable()
        await app.action_quit()
    return {key: values for key, values in times.items() if values}


async def attached(socket: Path) -> Core:
    from tui_passenger.cores import AttachedCore

    core = AttachedCore(socket)
    await core.start()
    return core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=1)
    parser.add_argument("--workers", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--server-ms", type=float, default=0.0,
                        help="added to each synthetic status fetch")
    parser.add_argument("--socket", type=Path, help="attach to this admin socket instead")
    parser.add_argument("--cprofile", action="store_true", help="print the top of a profile")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.cprofile else None

    async def run() -> dict[str, list[float]]:
        if args.socket:
            core = await attached(args.socket)
            try:
                return await measure(core, args.repeats, None, profile)
            finally:
                await core.stop()
        workers = {f"app{i}": args.workers for i in range(args.apps)}
        return await measure(SyntheticCore(workers, args.server_ms), args.repeats, "app0",
                             profile)

    times = asyncio.run(run())
    where = f"{args.socket}" if args.socket else f"{args.apps}×{args.workers} synthetic"
    print(f"key latency, {where}, {args.repeats} repeats (ms):")
    for key, values in times.items():
        print(f"  {key:<7} median {statistics.median(values):6.1f}   max {max(values):6.1f}")
    if profile is not None:
        stats = pstats.Stats(profile)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
