#!/usr/bin/env python3
"""Fault injection under load, in one process, against the in-process server on loopback.

Scenarios: kill -9 a random worker every 0.5 s; kill -9 the preloader; rolling restarts and
spawn-method toggles; reforks back to back (the mold killed after every third); an app
crashing its worker on some requests; a hung request (504 by max_request_time); memory
growth (recycled at memory_limit); an app that fails to import (spawn attempts counted);
200 slow-header + 50 slow-body clients next to normal traffic (p99 against a quiet
baseline). Prints one table: scenario, requests, failures, recovery
time (from the fault until the pool is back to its desired live count) and notes.

    python3 dev.py bench faults [--quick | --seconds S] [--only kill,preloader,...]
                                [--json PATH] [--verbose]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from tui_passenger.config import parse_config
from tui_passenger.server import Server

APP_SOURCE = textwrap.dedent('''
    """Fault bench app: echo pid, sleep, hoard memory, or kill its own worker."""
    import json, os, signal, time

    _hoard = []

    def application(environ, start_response):
        path, query = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
        if path == "/crash":
            os.kill(os.getpid(), signal.SIGKILL)
        if path == "/slow":
            time.sleep(float(query or 1.0))
        if path == "/grow":
            _hoard.append(bytearray(int(query or 10) * 1024 * 1024))
        body = json.dumps({"pid": os.getpid()}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
''')
BROKEN_SOURCE = "raise ImportError('no module named totally_missing')\n"


# -- the server ------------------------------------------------------------------------------

def toml_value(value: object) -> str:
    """A Python value written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def config_text(workdir: Path, server: dict, apps: list[dict]) -> str:
    lines = ["[server]", 'address = "127.0.0.1"', "port = 0", "access_log = false",
             "allow_root = true",
             f"admin_socket = {toml_value(str(workdir / f'admin-{time.monotonic_ns()}.sock'))}"]
    lines += [f"{k} = {toml_value(v)}" for k, v in server.items()]
    for app in apps:
        lines.append("[[app]]")
        app = {"root": str(workdir / "app"), "entry": "app:application",
               "start_timeout": 30, **app}
        lines += [f"{k} = {toml_value(v)}" for k, v in app.items()]
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def serving(workdir: Path, apps: list[dict], server_options: dict | None = None,
                  **server: object) -> AsyncIterator[Server]:
    config = parse_config(config_text(workdir, server, apps), path="bench.toml")
    srv = Server(config, on_output=lambda line: None, **(server_options or {}))
    await srv.start()
    await srv.pool.wait_started(60)
    try:
        yield srv
    finally:
        if not srv.stopped.is_set():
            await srv.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def healthy(group, count: int, gone: int | None = None, *, exact: bool = True) -> bool:
    """``count`` (or, not ``exact``, at least ``count``) ready workers, none spawning, all
    of them live processes, and ``gone`` (a killed pid) no longer among them."""
    ready = [p for p in group.processes if p.state == "ready"]
    enough = len(ready) == count if exact else len(ready) >= count
    return (group.spawning == 0 and enough and all(p.pid != gone for p in group.processes)
            and all(p.worker.alive and alive(p.pid) for p in ready))


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> float:
    """Wait (bounded) for ``predicate``; returns the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


class Load:
    """Concurrent keep-alive GET loops, counting requests, failures and latencies."""

    def __init__(self, server: Server, path: str = "/", clients: int = 4) -> None:
        self.url = server.url + path
        self.requests = 0
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._loop()) for _ in range(clients)]

    async def _loop(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            while not self._stop.is_set():
                self.requests += 1
                started = time.perf_counter()
                try:
                    async with session.get(self.url) as response:
                        body = await response.read()
                        if response.status != 200:
                            self.failures.append(f"{response.status}: {body[:120]!r}")
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    self.failures.append(repr(exc))
                self.latencies.append(time.perf_counter() - started)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def one(server: Server, path: str, method: str = "GET", data: bytes | None = None,
              timeout: float = 30) -> tuple[int, bytes]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
            s.request(method, server.url + path, data=data) as response:
        return response.status, await response.read()


@dataclass
class Row:
    scenario: str
    requests: int
    failures: int
    recovery: str
    notes: str


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def med_max(seconds: list[float]) -> str:
    """``med 12 ms, max 40 ms``."""
    return f"med {ms(statistics.median(seconds))}, max {ms(max(seconds))}"


def first_failures(load: Load) -> str:
    return f"; first failure: {load.failures[0][:80]}" if load.failures else ""


# -- scenarios -------------------------------------------------------------------------------

async def kill_workers(workdir: Path, duration: float) -> Row:
    app = {"name": "app", "min_instances": 3, "max_instances": 3}
    async with serving(workdir, [app], max_pool_size=3) as server:
        group = server.pool.groups["app"]
        load = Load(server, clients=4)
        recoveries, unrecovered = [], 0
        try:
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline:
                tick = time.monotonic()
                pids = [p.pid for p in group.processes if p.state == "ready" and alive(p.pid)]
                if pids:
                    victim = random.choice(pids)
                    os.kill(victim, signal.SIGKILL)
                    try:
                        recoveries.append(await wait_until(
                            lambda v=victim: healthy(group, 3, v), 0.5))
                    except TimeoutError:
                        unrecovered += 1
                await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - tick)))
            final = await wait_until(lambda: healthy(group, 3))
        finally:
            await load.stop()
        recoveries.append(final)
        return Row(f"kill -9 worker /0.5s {duration:g}s", load.requests, len(load.failures),
                   med_max(recoveries),
                   f"{len(recoveries) - 1 + unrecovered} kills, {unrecovered} not back "
                   f"within 0.5 s, crashes={group.crashes}" + first_failures(load))


async def kill_preloader(workdir: Path, duration: float) -> Row:
    app = {"name": "app", "min_instances": 2, "max_instances": 2}
    async with serving(workdir, [app], max_pool_size=2) as server:
        group = server.pool.groups["app"]
        old = group.spawner.preloader
        old_pid = old.pid
        load = Load(server, clients=4)
        try:
            await asyncio.sleep(0.5)
            os.kill(old_pid, signal.SIGKILL)
            await wait_until(lambda: old.state == "gone")
            await asyncio.sleep(min(duration, 3.0))  # workers keep serving, orphaned
            victim = group.processes[0].pid
            os.kill(victim, signal.SIGKILL)
            recovery = await wait_until(lambda: healthy(group, 2, victim))
            await asyncio.sleep(0.5)
        finally:
            await load.stop()
        new = group.spawner.preloader
        fresh = [p for p in group.processes if p.worker.ppid != old_pid]
        ok = len(fresh) == 1 and new is not None and fresh[0].worker.ppid == new.pid
        return Row("kill -9 preloader", load.requests, len(load.failures), ms(recovery),
                   f"preloader {old_pid} -> {new.pid if new else None} "
                   f"(starts={group.spawner.preloader_starts}); replacement forked by the new "
                   f"one: {ok}" + first_failures(load))


async def restarts(workdir: Path, duration: float) -> Row:
    app = {"name": "app", "min_instances": 2, "max_instances": 4}
    async with serving(workdir, [app], max_pool_size=4) as server:
        group = server.pool.groups["app"]
        load = Load(server, clients=4)
        took: list[float] = []
        ops = {"restart": 0, "toggle": 0}
        try:
            deadline = time.monotonic() + duration
            step = 0
            while time.monotonic() < deadline:
                started = time.monotonic()
                if step % 2 == 0:
                    await asyncio.wait_for(server.pool.restart(group), 60)
                    ops["restart"] += 1
                else:
                    method = "direct" if group.spawn_method == "smart" else "smart"
                    await asyncio.wait_for(server.pool.set_spawn_method(group, method), 60)
                    ops["toggle"] += 1
                took.append(await wait_until(lambda: healthy(group, 2, exact=False))
                            + time.monotonic() - started)
                step += 1
            if group.spawn_method != "smart":
                await asyncio.wait_for(server.pool.set_spawn_method(group, "smart"), 60)
        finally:
            await load.stop()
        return Row("rolling restart + toggle", load.requests, len(load.failures),
                   med_max(took),
                   f"{ops['restart']} restarts, {ops['toggle']} smart<->direct toggles, "
                   f"crashes={group.crashes}" + first_failures(load))


async def reforks(workdir: Path, duration: float) -> Row:
    app = {"name": "app", "min_instances": 4, "max_instances": 4}
    async with serving(workdir, [app], max_pool_size=6) as server:
        group = server.pool.groups["app"]
        load = Load(server, clients=4)
        took: list[float] = []
        count = molds_killed = 0
        try:
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline:
                started = time.monotonic()
                await asyncio.wait_for(server.pool.refork(group), 60)
                count += 1
                mold = group.spawner.preloader
                if count % 3 == 0 and mold is not None and mold.mold is not None:
                    os.kill(mold.pid, signal.SIGKILL)  # the next spawns need another parent
                    molds_killed += 1
                took.append(await wait_until(lambda: healthy(group, 4, exact=False))
                            + time.monotonic() - started)
        finally:
            await load.stop()
        return Row("refork (mold kill -9 every 3rd)", load.requests, len(load.failures),
                   med_max(took),
                   f"{count} reforks (generation {group.spawner.generation}), {molds_killed} "
                   f"molds killed, refork errors: {group.last_refork_error or 'none'}"
                   + first_failures(load))


async def crash_on_request(workdir: Path, duration: float) -> Row:
    app = {"name": "app", "min_instances": 3, "max_instances": 3}
    async with serving(workdir, [app], max_pool_size=3) as server:
        group = server.pool.groups["app"]
        load = Load(server, clients=4)
        crashes = {"GET": [], "POST": []}
        recoveries = []
        try:
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline:
                method = "POST" if len(crashes["POST"]) < len(crashes["GET"]) else "GET"
                deaths = group.crashes + (1 if method == "POST" else 2)
                status, _ = await one(server, "/crash", method, b"x" if method == "POST"
                                      else None)
                crashes[method].append(status)
                recoveries.append(await wait_until(
                    lambda d=deaths: group.crashes >= d and healthy(group, 3)))
                await asyncio.sleep(0.5)
        finally:
            await load.stop()
        statuses = {m: sorted(set(s)) for m, s in crashes.items()}
        return Row("crash on request", load.requests, len(load.failures),
                   med_max(recoveries),
                   f"/crash: {len(crashes['GET'])} GET -> {statuses['GET']}, "
                   f"{len(crashes['POST'])} POST -> {statuses['POST']}; "
                   f"retries={server.proxy.stats.retries}, worker deaths={group.crashes}"
                   + first_failures(load))


async def hang(workdir: Path, duration: float) -> Row:
    app = {"name": "app", "min_instances": 2, "max_instances": 2, "max_request_time": 0.5}
    async with serving(workdir, [app], max_pool_size=2) as server:
        group = server.pool.groups["app"]
        load = Load(server, clients=4)
        statuses, recoveries = [], []
        try:
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline:
                before = {p.pid for p in group.processes}
                status, _ = await one(server, "/slow?30")
                statuses.append(status)
                recoveries.append(await wait_until(
                    lambda b=before: healthy(group, 2) and {p.pid for p in group.processes}
                    != b))
                await asyncio.sleep(0.2)
        finally:
            await load.stop()
        return Row("hang -> 504", load.requests, len(load.failures),
                   med_max(recoveries),
                   f"{len(statuses)} hung requests -> {sorted(set(statuses))}"
                   f" (max_request_time 0.5 s), crashes={group.crashes}"
                   + first_failures(load))


async def memory_growth(workdir: Path, duration: float) -> Row:
    app = {"name": "app", "min_instances": 1, "max_instances": 2, "memory_limit": 40}
    async with serving(workdir, [app], server_options={"smaps_interval": 0.5},
                       max_pool_size=2) as server:
        group = server.pool.groups["app"]
        load = Load(server, clients=4)
        recoveries, grown = [], 0
        try:
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline:
                status, body = await one(server, "/grow?60")
                bloated = json.loads(body)["pid"] if status == 200 else None
                grown += 1
                recoveries.append(await wait_until(
                    lambda b=bloated: healthy(group, 1, b, exact=False)))
        finally:
            await load.stop()
        return Row("memory growth", load.requests, len(load.failures),
                   med_max(recoveries),
                   f"{grown} workers grown by 60 MB, each recycled at memory_limit 40 MB "
                   f"(smaps every 0.5 s), crashes={group.crashes}" + first_failures(load))


async def import_failure(workdir: Path, duration: float) -> Row:
    broken = workdir / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "app.py").write_text(BROKEN_SOURCE)
    notes, requests, failures = [], 0, 0
    for method in ("smart", "direct"):
        app = {"name": "broken", "root": str(broken), "min_instances": 0,
               "spawn_method": method}
        async with serving(workdir, [app]) as server:
            group = server.pool.groups["broken"]
            statuses = []
            async with aiohttp.ClientSession() as session:
                deadline = time.monotonic() + duration
                while time.monotonic() < deadline:
                    async with session.get(server.url + "/") as response:
                        statuses.append(response.status)
                        await response.read()
                    await asyncio.sleep(0.05)
            attempts = (group.spawner.preloader_starts if method == "smart"
                        else group.spawn_failures)
            requests += len(statuses)
            failures += sum(1 for s in statuses if s != 500)
            notes.append(f"{method}: {attempts} spawn attempts")
    return Row(f"import failure {duration:g}s", requests, failures, "n/a (never spawns)",
               "; ".join(notes) + " (all answers 500; failures = non-500 answers)")


async def slow_clients(workdir: Path, duration: float) -> Row:
    app = {"name": "app", "min_instances": 1, "max_instances": 1}
    async with serving(workdir, [app], client_header_timeout=120, client_body_timeout=120,
                       keepalive_timeout=120) as server:
        process = server.pool.groups["app"].processes[0]
        url = server.url + "/"

        async def p99(session, seconds: float) -> tuple[float, int, int]:
            latencies, failures = [], 0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                started = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                    failures += response.status != 200
                latencies.append(time.perf_counter() - started)
            latencies.sort()
            return latencies[int(0.99 * (len(latencies) - 1))], len(latencies), failures

        writers = []
        async with aiohttp.ClientSession() as session:
            await p99(session, 0.3)
            warm = process.processed
            quiet, n_quiet, f_quiet = await p99(session, min(duration, 5.0))
            for _ in range(200):
                _, writer = await asyncio.open_connection(*server.address)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow")
                writers.append(writer)
            for _ in range(50):
                _, writer = await asyncio.open_connection(*server.address)
                writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                             + b"0123456789")
                writers.append(writer)
            try:
                await wait_until(lambda: len(server.proxy.connections) >= 251)
                loaded, n_loaded, f_loaded = await p99(session, duration)
                connected = len(server.proxy.connections) - 1
                extra = process.processed - warm - n_quiet - n_loaded
            finally:
                for writer in writers:
                    writer.close()
        return Row("200+50 slow clients", n_quiet + n_loaded, f_quiet + f_loaded, "n/a",
                   f"p99 quiet {quiet * 1000:.2f} ms -> loaded {loaded * 1000:.2f} ms "
                   f"({loaded / quiet:.2f}x); {connected} slow clients still connected; "
                   f"requests the worker saw beyond the normal ones: {extra}")


SCENARIOS: dict[str, Callable[[Path, float], Awaitable[Row]]] = {
    "kill": kill_workers, "preloader": kill_preloader, "restart": restarts, "refork": reforks,
    "crash": crash_on_request, "hang": hang, "memory": memory_growth,
    "import": import_failure, "slow": slow_clients,
}


def print_table(rows: list[Row]) -> None:
    headers = ("scenario", "requests", "failures", "recovery", "notes")
    cells = [(r.scenario, str(r.requests), str(r.failures), r.recovery, r.notes) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers[:4])]
    line = "  ".join(h.ljust(w) for h, w in zip(headers[:4], widths, strict=True))
    line += "  " + headers[4]
    print(line)
    print("-" * len(line))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c[:4], widths, strict=True)) + "  " + c[4])


async def main_async(args: argparse.Namespace) -> int:
    from tui_passenger.engine import become_subreaper

    become_subreaper()
    long = args.seconds or (5.0 if args.quick else 30.0)
    names = args.only.split(",") if args.only else list(SCENARIOS)
    rows, took = [], []
    with tempfile.TemporaryDirectory(prefix="tp-faults-") as tmp:
        workdir = Path(tmp)
        (workdir / "app").mkdir()
        (workdir / "app" / "app.py").write_text(APP_SOURCE)
        for name in names:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                row = await asyncio.wait_for(SCENARIOS[name](workdir, long), long * 4 + 120)
            except Exception as exc:  # noqa: BLE001 - a broken scenario is a table row
                row = Row(name, 0, -1, "-", f"SCENARIO ERROR: {exc!r}")
            took.append(time.monotonic() - started)
            print(f"  {name}: {took[-1]:.1f} s", file=sys.stderr)
            rows.append(row)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({
            "seconds": long,
            "rows": [{"key": name, **asdict(row), "elapsed_s": round(elapsed, 2)}
                     for name, row, elapsed in zip(names, rows, took, strict=True)]}, indent=2))
        print(f"results written to {args.json}")
    return 0 if all(r.failures == 0 for r in rows) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 s instead of 30 s scenarios")
    parser.add_argument("--seconds", type=float, help="length of each scenario (overrides "
                        "--quick)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--verbose", action="store_true", help="server log on stderr")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_async(args))
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
