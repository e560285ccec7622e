#!/usr/bin/env python3
"""Spawn latency, direct vs smart vs refork, for the heavy sample app (Flask + SQLAlchemy +
Django + numpy).

``refork``: a smart worker serves 20 requests, becomes the preloader (the mold) of a new
generation, and the N workers are forked from it.

For each round (the methods alternate, their order reversed every other round, so machine
noise hits both alike) it spawns N workers one after another with each method and records
request → ready per worker; then, in smart mode, the time to scale from 1 to 8 workers at once.
Every worker answers one HTTP request before it counts. Prints medians, the spread, and the
direct/smart ratio; ``--json PATH`` also saves every measurement, round by round.

    python3 dev.py bench spawn [--workers 8] [--rounds 3] [--app heavy] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tui_passenger.config import parse_config  # noqa: E402
from tui_passenger.engine import RuntimeDir, become_subreaper, make_spawner  # noqa: E402

#: the spawn methods whose per-worker latency is measured (and saved under "modes" by --json)
METHODS = ("direct", "smart", "refork")


def check(path: str) -> None:
    """One GET on the worker's socket; the spawn only counts if it answers 200."""
    conn = http.client.HTTPConnection("localhost", timeout=30)
    conn.sock = socket.socket(socket.AF_UNIX)
    conn.sock.connect(path)
    conn.request("GET", "/stats")
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 200:
        raise SystemExit(f"worker at {path} answered {response.status}")


def heavy_app(app: str):
    text = (f'[[app]]\nname = "heavy"\nroot = "{ROOT / "sample_apps" / app}"\n'
            'entry = "app:app"\nallow_root = true\n')
    return parse_config(text, path="bench").apps[0]


async def spawn_serially(spawner, n: int) -> tuple[list[float], list]:
    latencies, workers = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        worker = await spawner.spawn()
        latencies.append(time.perf_counter() - t0)
        workers.append(worker)
    return latencies, workers


async def one_round(app, runtime: Path, n: int, results: dict[str, list[float]],
                    order: tuple[str, ...] = METHODS) -> None:
    for method in order:
        spawner = make_spawner(app, runtime, "smart" if method == "refork" else method)
        if method == "refork":
            mold = await spawner.spawn()
            for _ in range(20):
                await asyncio.to_thread(check, mold.socket_path)
            spawner.begin_refork()
            await spawner.refork(mold)
        if method == "smart":
            t0 = time.perf_counter()
            first = await spawner.spawn()  # starts the preloader: reported on its own
            results["preloader start + first fork"].append(time.perf_counter() - t0)
            await first.stop()
        latencies, workers = await spawn_serially(spawner, n)
        results[method].extend(latencies)
        for worker in workers:
            await asyncio.to_thread(check, worker.socket_path)
        await asyncio.gather(*(w.stop() for w in workers))
        if method == "smart":
            one = await spawner.spawn()
            t0 = time.perf_counter()
            more = await asyncio.gather(*(spawner.spawn() for _ in range(7)))
            results["smart scale 1→8"].append(time.perf_counter() - t0)
            await asyncio.gather(*(w.stop() for w in [one, *more]))
        await spawner.close()


def ms(value: float) -> str:
    return f"{value * 1000:8.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--app", default="heavy", help="sample app directory (default heavy)")
    parser.add_argument("--json", type=Path, help="also write every measurement as JSON here")
    args = parser.parse_args()
    become_subreaper()
    runtime = RuntimeDir()
    app = heavy_app(args.app)
    results: dict[str, list[float]] = {
        **{method: [] for method in METHODS},
        "preloader start + first fork": [], "smart scale 1→8": []}
    per_round: list[dict[str, list[float]]] = []
    try:
        for i in range(args.rounds):
            this_round: dict[str, list[float]] = {name: [] for name in results}
            await one_round(app, runtime.path, args.workers, this_round,
                            METHODS if i % 2 == 0 else METHODS[::-1])
            for name, values in this_round.items():
                results[name].extend(values)
            per_round.append(this_round)
            print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        runtime.close()
    print(f"\nspawn latency, app {args.app!r}, {args.workers} workers × {args.rounds} rounds "
          "(ms, request → ready)")
    print(f"{'measure':32} {'median':>8} {'min':>8} {'max':>8} {'n':>4}")
    for name, values in results.items():
        print(f"{name:32} {ms(statistics.median(values))} {ms(min(values))} {ms(max(values))} "
              f"{len(values):4}")
    ratio = statistics.median(results["direct"]) / statistics.median(results["smart"])
    print(f"\ndirect / smart per-worker spawn latency (medians): {ratio:.1f}×")
    if args.json:
        # seconds; every list holds one list per round; "modes" are per-worker spawn latencies
        args.json.write_text(json.dumps({
            "app": args.app, "workers": args.workers, "rounds": args.rounds, "unit": "s",
            "modes": {name: [r[name] for r in per_round] for name in results if name in METHODS},
            "measures": {name: [r[name] for r in per_round] for name in results
                         if name not in METHODS},
        }, indent=2, ensure_ascii=False))
        print(f"results written to {args.json}")


if __name__ == "__main__":
    asyncio.run(main())
