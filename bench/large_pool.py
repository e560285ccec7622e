#!/usr/bin/env python3
"""A large pool: 64 smart workers of the heavy sample app, then 1,000 keep-alive clients.

Headless tui-passenger serves ``sample_apps/heavy`` (Flask, SQLAlchemy, Django, numpy) with
``--workers`` smart workers (min = max = the pool size), everything else on its defaults.
Measured: the time from start until every worker is ready (``status --json`` polled through
the admin socket), the total PSS of the workers, the preloader and the manager (from
``/proc/PID/smaps_rollup``), then ``wrk -c1000`` keep-alive connections for ``--duration``
seconds (wrk's request timeout raised to ``--wrk-timeout``, 60 s: on two cores 1,000 clients
of a ~4 ms page queue for seconds): 2xx req/s, p50/p99 and the non-2xx answers and socket
errors, which must be zero.

    python3 dev.py bench large_pool [--workers 64] [--connections 1000] [--duration 15]
                                    [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import Skip  # noqa: E402
from soak import _interrupt, conclude, exit_with, raise_open_files, start_tp  # noqa: E402
from systems import PYTHON, ROOT, App  # noqa: E402
from wrkrun import wrk  # noqa: E402

HEAVY = App("heavy sample app", "wsgi", ROOT / "sample_apps" / "heavy", "app:app")
MB = 1024 * 1024


def status(toml: Path) -> dict[str, Any]:
    """``status --json`` of the instance started with ``toml``."""
    done = subprocess.run([PYTHON, "-m", "tui_passenger", "-c", str(toml), "status", "--json"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    if done.returncode != 0:
        raise Skip(f"status --json failed: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout)


def ready_workers(state: dict[str, Any]) -> list[int]:
    """The pids of the workers that are ready or busy."""
    return [p["pid"] for app in state["apps"] for p in app["processes"]
            if p["state"] in ("ready", "busy")]


def pss_kb(pid: int) -> int:
    """Proportional set size of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Start, wait for every worker, read PSS, load with wrk; every figure."""
    started = time.monotonic()
    server = start_tp(work, args.workers, HEAVY, timeout=300)
    try:
        toml = work / "bench.toml"
        first_answer = time.monotonic() - started
        while True:
            state = status(toml)
            ready = ready_workers(state)
            if len(ready) >= args.workers:
                break
            if server.died():
                raise Skip(f"tui-passenger {server.died()}")
            if time.monotonic() - started > args.timeout:
                raise Skip(f"only {len(ready)} of {args.workers} workers ready after "
                           f"{args.timeout:g} s")
            time.sleep(0.2)
        all_ready = time.monotonic() - started
        print(f"{args.workers} workers ready {all_ready:.1f} s after start (first answer "
              f"after {first_answer:.1f} s)", flush=True)
        app = state["apps"][0]
        preloader = (app.get("preloader") or {}).get("pid")
        manager = state["server"]["pid"]
        workers_pss = sum(pss_kb(pid) for pid in ready) / 1024
        preloader_pss = pss_kb(preloader) / 1024 if preloader else 0.0
        manager_pss = pss_kb(manager) / 1024
        print(f"PSS: workers {workers_pss:.0f} MiB ({workers_pss / len(ready):.1f} per "
              f"worker), preloader {preloader_pss:.0f} MiB, manager {manager_pss:.0f} MiB: "
              f"total {workers_pss + preloader_pss + manager_pss:.0f} MiB", flush=True)
        load = wrk(server.port, args.connections, args.duration, timeout=args.wrk_timeout)
        if server.died():
            raise Skip(f"tui-passenger {server.died()} under load")
        after = ready_workers(status(toml))
        print(f"wrk -t1 -c{args.connections} -d{args.duration:g}s --timeout "
              f"{args.wrk_timeout:g}s: {load.requests} answers, "
              f"{load.rps:.0f} 2xx/s, p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms, "
              f"non-2xx {load.non_2xx}, socket errors {load.socket_errors}; "
              f"{len(after)} workers ready afterwards", flush=True)
        checks = {f"all {args.workers} workers ready": len(ready) >= args.workers,
                  f"{args.connections} keep-alive connections served, zero errors":
                      load.ok and load.non_2xx == 0 and load.socket_errors == 0,
                  "no worker lost under load": len(after) >= args.workers}
        return {"workers": args.workers, "all_ready_s": all_ready,
                "first_answer_s": first_answer, "pss_workers_mb": workers_pss,
                "pss_per_worker_mb": workers_pss / len(ready), "pss_preloader_mb": preloader_pss,
                "pss_manager_mb": manager_pss,
                "pss_total_mb": workers_pss + preloader_pss + manager_pss,
                "connections": args.connections, "duration": args.duration,
                "requests": load.requests, "rps": load.rps, "p50_ms": load.p50_ms,
                "p99_ms": load.p99_ms, "non_2xx": load.non_2xx,
                "socket_errors": load.socket_errors, "problem": load.problem,
                "checks": checks, "ok": all(checks.values())}
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds for every worker to be ready")
    parser.add_argument("--wrk-timeout", type=float, default=60.0,
                        help="wrk's per-request timeout: 1,000 clients of a ~4 ms page on two "
                             "cores wait seconds in the queue, which is not an error")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    raise_open_files()
    signal.signal(signal.SIGTERM, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="tp-large-pool-")) / "tp"
    try:
        result = run(args, work)
    except Skip as exc:
        print(f"large pool failed: {exc}")
        return 1
    return conclude(result, args)


if __name__ == "__main__":
    exit_with(main)
