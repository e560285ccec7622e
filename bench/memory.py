#!/usr/bin/env python3
"""Memory of N workers of the heavy sample app: direct vs smart, with and without gc.freeze.

Three modes, all in one run:

- ``direct``: every worker is a fresh interpreter that imports the app itself;
- ``smart-nofreeze``: a preloader imports the app once and forks the workers
  (``gc_freeze = false``);
- ``smart``: the same with ``gc.collect()`` + ``gc.freeze()`` before each fork (the default);
- ``refork``: smart, and half-way through the warm-up the worker that served most becomes
  the preloader (the mold) of a new generation that replaces the others (``ctl refork``);
  the second half of the warm-up goes to that generation. The mold counts as the preloader.

For each mode it starts an in-process tui-passenger server with exactly N workers, sends the
same warm-up traffic through its proxy (alternating ``/`` and ``/stats``), waits a moment,
then reads ``/proc/PID/smaps_rollup`` of every worker and of the preloader and sums PSS
(proportional set size: shared pages split between the processes sharing them, so the sum
is what the group really costs), Private_Dirty, USS (Private_Clean + Private_Dirty) and RSS.
The modes alternate their order from round to round; the table shows medians over the
rounds and the smart/direct ratios; ``--json PATH`` also saves every round's figures.

    python3 dev.py bench memory [--workers 8] [--rounds 2] [--requests 400] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import inspect
import json
import re
import statistics
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tui_passenger.config import parse_config  # noqa: E402
from tui_passenger.server import Server  # noqa: E402

try:
    from tui_passenger.inspect.memory import read_smaps_rollup
except ImportError:  # the inspect package is newer than this script may run against
    read_smaps_rollup = None

#: mode -> (spawn_method, gc_freeze)
MODES = {"direct": ("direct", True), "smart-nofreeze": ("smart", False), "smart": ("smart", True),
         "refork": ("smart", True)}
FIELDS = ("pss", "private_dirty", "uss", "rss")
MB = 1024 * 1024


def smaps_rollup(pid: int) -> dict[str, int]:
    """Bytes of Pss, Private_Dirty, USS and Rss of ``pid``."""
    if read_smaps_rollup is not None:
        usage = read_smaps_rollup(pid)
        return {field: getattr(usage, field) for field in FIELDS}
    kb = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                kb[name] = int(rest.split()[0]) * 1024
    return {"pss": kb["Pss"], "private_dirty": kb["Private_Dirty"],
            "uss": kb["Private_Clean"] + kb["Private_Dirty"], "rss": kb["Rss"]}


def config_text(app_root: Path, method: str, freeze: bool, workers: int) -> str:
    return f"""
[server]
allow_root = true
address = "127.0.0.1"
port = 0
max_pool_size = {workers}
access_log = false

[[app]]
name = "heavy"
root = "{app_root}"
entry = "app:app"
spawn_method = "{method}"
gc_freeze = {"true" if freeze else "false"}
min_instances = {workers}
max_instances = {workers}
pool_idle_time = 0
max_preloader_idle_time = 0
start_timeout = 120
environment = "development"
"""


async def warm_up(url: str, requests: int, concurrency: int) -> collections.Counter:
    """``requests`` GETs alternating ``/`` and ``/stats``, ``concurrency`` at a time."""
    statuses: collections.Counter = collections.Counter()
    paths = iter(["/", "/stats"][i % 2] for i in range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def client() -> None:
            for path in paths:
                async with session.get(url + path) as response:
                    await response.read()
                    statuses[f"{path} {response.status}"] += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return statuses


def make_server(config, output: collections.deque) -> Server:
    kwargs = {"on_output": lambda line: output.append(f"[{line.pid}] {line.text}")}
    if "admin" in inspect.signature(Server).parameters:
        kwargs["admin"] = False  # no admin socket needed (and none left behind)
    return Server(config, **kwargs)


async def measure(mode: str, args: argparse.Namespace) -> dict[str, float]:
    method, freeze = MODES[mode]
    config = parse_config(config_text(ROOT / "sample_apps" / args.app, method, freeze,
                                      args.workers), path=f"bench-memory-{mode}.toml")
    output: collections.deque[str] = collections.deque(maxlen=40)
    server = make_server(config, output)
    started = time.perf_counter()
    await server.start()
    try:
        await server.pool.wait_started(120)
        group = server.pool.groups["heavy"]
        if len(group.processes) != args.workers:
            sys.stderr.write("\n".join(output) + "\n")
            raise SystemExit(f"{mode}: {len(group.processes)} of {args.workers} workers started"
                             f" ({group.last_error})")
        spawn_seconds = time.perf_counter() - started
        if mode == "refork":
            # The same requests in all: half before the refork, half after it.
            statuses = await warm_up(server.url, args.requests // 2, args.concurrency)
            try:
                await server.pool.refork_now(group)
            except ValueError as exc:
                raise SystemExit(str(exc)) from None
            statuses += await warm_up(server.url, args.requests - args.requests // 2,
                                      args.concurrency)
        else:
            statuses = await warm_up(server.url, args.requests, args.concurrency)
        bad = {k: v for k, v in statuses.items() if not k.endswith(" 200")}
        if bad:
            errors = [line for line in output if "Error" in line][-1:]
            print(f"  warning: {mode}: non-200 answers during warm-up: {bad} {errors}",
                  file=sys.stderr)
        await asyncio.sleep(args.settle)
        pids = [p.pid for p in group.processes]
        preloader = getattr(getattr(group.spawner, "preloader", None), "pid", None)
        totals = dict.fromkeys(FIELDS, 0)
        for pid in pids:
            for field, value in smaps_rollup(pid).items():
                totals[field] += value
        pre = smaps_rollup(preloader) if preloader is not None else dict.fromkeys(FIELDS, 0)
        for field, value in pre.items():
            totals[field] += value
        result = {f: v / MB for f, v in totals.items()}
        result["preloader_pss"] = pre["pss"] / MB
        result["worker_pss"] = (totals["pss"] - pre["pss"]) / MB / len(pids)
        result["spawn_s"] = spawn_seconds
        result["non_200"] = sum(bad.values())
        return result
    finally:
        await server.stop()


COLUMNS = [  # (header, key, format)
    ("mode", None, "{:<15}"),
    ("PSS total", "pss", "{:>10.1f}"),
    ("preloader", "preloader_pss", "{:>10.1f}"),
    ("PSS/worker", "worker_pss", "{:>11.1f}"),
    ("Priv.dirty", "private_dirty", "{:>11.1f}"),
    ("USS total", "uss", "{:>10.1f}"),
    ("RSS total", "rss", "{:>10.1f}"),
    ("PSS ratio", "pss_ratio", "{:>10.2f}"),
    ("USS ratio", "uss_ratio", "{:>10.2f}"),
    ("start s", "spawn_s", "{:>8.1f}"),
    ("non-200", "non_200", "{:>8.0f}"),
]


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    medians = {mode: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
               for mode, rounds in results.items()}
    direct = medians["direct"]
    for row in medians.values():
        row["pss_ratio"] = row["pss"] / direct["pss"]
        row["uss_ratio"] = row["uss"] / direct["uss"]
    print(f"\n{args.workers} workers of sample_apps/{args.app}, {args.requests} warm-up "
          f"requests; medians of {args.rounds} round(s); MB (MiB); totals include the "
          "preloader; ratios are mode/direct")
    print(" ".join(re.sub(r"\.\d+f", "", fmt).format(header) for header, _, fmt in COLUMNS))
    for mode, row in medians.items():
        print(" ".join(fmt.format(mode if key is None else row[key]) for _, key, fmt in COLUMNS))
    if args.rounds > 1:
        for mode, rounds in results.items():
            print(f"  {mode:<15} PSS per round: " + ", ".join(f"{r['pss']:.1f}" for r in rounds))
    if any(row["non_200"] for row in medians.values()):
        print("warning: some warm-up requests failed (see above), so the modes did not all "
              "do the same work")
    smart = medians["smart"]["pss_ratio"]
    verdict = "meets" if smart <= 0.45 else "misses"
    print(f"smart (gc.freeze) PSS = {smart:.0%} of direct: {verdict} the 45% target")
    if "refork" in medians:
        refork = medians["refork"]["pss_ratio"]
        verdict = "meets" if refork <= 0.40 else "misses"
        print(f"refork PSS = {refork:.0%} of direct ({refork / smart:.2f} × smart): "
              f"{verdict} the 40% target")


async def main_async(args: argparse.Namespace) -> None:
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for round_no in range(args.rounds):
        order = list(MODES) if round_no % 2 == 0 else list(reversed(MODES))
        for mode in order:
            print(f"round {round_no + 1}/{args.rounds}: {mode} ...", file=sys.stderr, flush=True)
            result = await measure(mode, args)
            results[mode].append(result)
            print(f"  PSS {result['pss']:.1f} MB (preloader {result['preloader_pss']:.1f}), "
                  f"USS {result['uss']:.1f} MB", file=sys.stderr, flush=True)
    report(results, args)
    if args.json:
        # MiB (spawn_s in seconds); every mode holds one dict per round
        args.json.write_text(json.dumps({
            "app": args.app, "workers": args.workers, "rounds": args.rounds,
            "requests": args.requests, "unit": "MiB", "modes": results}, indent=2))
        print(f"results written to {args.json}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=400, help="warm-up requests per mode")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds between warm-up and measuring")
    parser.add_argument("--app", default="heavy", help="a directory of sample_apps/ "
                        "with entry app:app and routes / and /stats")
    parser.add_argument("--json", type=Path, help="also write every round's figures as JSON here")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_async(args))
    else:
        uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
