#!/usr/bin/env python3
"""Throughput, latency and CPU per request of tui-passenger against the real deployments.

Systems (``--systems``, see bench/systems.py): tui-passenger headless on its defaults (access
log on), the same with the access log off, with its dashboard open (in a detached session of
a private tmux server), gunicorn sync and gthread alone, nginx → gunicorn (Unix socket,
upstream keep-alive), uvicorn alone, nginx → uvicorn, granian and Passenger Standalone; each
on its defaults, with the same number of worker processes. Apps (``--apps``): hello WSGI,
hello ASGI and a Django page (ORM query + template, ~20 KB, SQLite); every system serves the
apps of its interface. For each app, its systems start once, each on its own loopback port;
then, per concurrency (``--concurrency``), ``wrk`` loads one system at a time, the order
rotating from round to round so machine noise is spread over all of them.

Figures: req/s counting only 2xx answers, p50/p99, the non-2xx answers and socket errors,
and CPU seconds per 10,000 2xx answers of every process of the system (from /proc); the
tui-passenger/other ratios are taken per round, then the median and min–max are given.

    python3 dev.py bench throughput [--workers 2] [--apps hello,asgi,django]
                                    [--concurrency 1,16,256,1000] [--duration 5]
                                    [--rounds 3] [--warmup 2] [--no-c1] [--systems tp,...]
                                    [--json results.json] [--install] [--base REV]
                                    [--browser-headers]

``--base REV`` adds ``tpbase``: headless tui-passenger as of git revision REV (checked out
into a scratch worktree, run with the same interpreter), measured in the same rounds, so
``tui-passenger / tui-passenger at REV`` is an interleaved A/B of a change.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from c1 import latency_c1  # noqa: E402
from servers import Server, Skip  # noqa: E402
from systems import (  # noqa: E402,F401
    ALIASES,
    APPS,
    PYTHON,
    SYSTEMS,
    App,
    apt_install,
    base_tree,
    drop_base_tree,
    make_server,
    preflight,
    serves,
)
from wrkrun import BROWSER_HEADERS, Run, wrk  # noqa: E402

W = max(len(name) for name, _ in SYSTEMS.values())  # width of the system-name column
DASHBOARD_TARGET = 0.95  # the dashboard open must keep this share of headless req/s...
DASHBOARD_P99_LIMIT = 1.5  # ...with its p99 at most this multiple of headless p99
DEFAULT_SYSTEMS = [k for k in SYSTEMS if k != "tpbase"]
OPEN_FILES = 65_536  # c=1000: wrk and the servers need more than the usual 1,024


def raise_open_files() -> None:
    """Raise the soft open-files limit (wrk and every server inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def version_info() -> dict[str, str]:
    """nproc, CPU model, the servers' python and the versions of the servers themselves."""
    cpu = "?"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip()
                   for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    names = ("tui-passenger", "gunicorn", "uvicorn", "granian", "django")
    probe = ("import sys, importlib.metadata as m\nprint(sys.version.split()[0])\n"
             f"for n in {names!r}:\n"
             "    try: print(m.version(n))\n    except m.PackageNotFoundError: print('-')\n")
    found = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True).stdout.split()
    found += ["?"] * (len(names) + 1)
    info = {"nproc": str(len(os.sched_getaffinity(0))), "cpu": cpu, "python": found[0]}
    info.update({n.replace("-", "_"): v for n, v in zip(names, found[1:], strict=False)})
    for tool, argv in (("passenger", ["passenger", "--version"]), ("nginx", ["nginx", "-v"])):
        info[tool] = "-"
        if shutil.which(argv[0]):
            done = subprocess.run(argv, capture_output=True, text=True)
            words = (done.stdout + done.stderr).split()
            info[tool] = words[-1].split("/")[-1] if words else "?"
    return info


def summarize(runs: list[Run | None]) -> dict[str, Any]:
    """Medians and min–max over the measured rounds, the error counts summed."""
    good = [r for r in runs if r and r.ok]
    if not good:
        return {"ok_rounds": 0, "failed_rounds": len(runs)}
    out: dict[str, Any] = {"ok_rounds": len(good), "failed_rounds": len(runs) - len(good),
                           "clean_rounds": sum(r.clean for r in good),
                           "non_2xx": sum(r.non_2xx for r in good),
                           "socket_errors": sum(r.socket_errors for r in good),
                           "requests": sum(r.requests for r in good)}
    for name, field in (("rps", "rps"), ("p50", "p50_ms"), ("p99", "p99_ms"),
                        ("cpu", "cpu_total")):
        values = [getattr(r, field) for r in good]
        median = statistics.median(values)
        out[f"{name}_median" if name in ("rps", "cpu") else f"{name}_ms"] = median
        out[f"{name}_min"], out[f"{name}_max"] = min(values), max(values)
    out["cpu_total"] = out["cpu_median"]
    out["cpu_first"] = statistics.median(r.cpu_first for r in good)
    return out


def ratio(results: dict[str, list[Run | None]], top: str, bottom: str) -> dict[str, Any]:
    """top / bottom (2xx req/s, CPU per 2xx answer, p50 and p99), per round where both were
    measured, then the median and the min–max of the per-round ratios; {} when no round
    has both."""
    pairs = [(a, b) for a, b in zip(results.get(top, []), results.get(bottom, []),
                                    strict=False) if a and b and a.ok and b.ok and b.rps]
    if not pairs:
        return {}
    rps = [a.rps / b.rps for a, b in pairs]
    cpu = [a.cpu_total / b.cpu_total for a, b in pairs if b.cpu_total and a.cpu_total]
    # wrk prints 0 latency when almost nothing came back: no ratio from such a round
    p50 = [a.p50_ms / b.p50_ms for a, b in pairs if b.p50_ms]
    p99 = [a.p99_ms / b.p99_ms for a, b in pairs if b.p99_ms]
    out = {"rps": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
           "p50": statistics.median(p50) if p50 else 0.0,
           "p99": statistics.median(p99) if p99 else 0.0,
           "rounds": len(pairs), "of": top}
    if cpu:
        out.update(cpu_total=statistics.median(cpu), cpu_min=min(cpu), cpu_max=max(cpu))
    return out


def ratios(results: dict[str, list[Run | None]]) -> dict[str, dict[str, Any]]:
    """Headless tui-passenger (on its defaults) / every other system of the scenario (the
    dashboard is compared with headless separately)."""
    return {key: r for key in results if key not in ("tp", "tpdash")
            if (r := ratio(results, "tp", key))}


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM behaves like Ctrl+C: unwind through the ``finally`` that stops the servers."""
    raise KeyboardInterrupt


def start_all(servers: dict[str, Server], status: dict[str, str], timeout: float,
              warmup: float) -> list[str]:
    """Start every system not already skipped, wait for each, warm it up (``warmup`` s of
    wrk at c=16); returns the keys that can be measured."""
    live = [s for k, s in servers.items() if k not in status]
    for server in live:
        server.start()
    for server in live:
        try:
            server.wait_ready(timeout)
            warm = wrk(server.port, 16, warmup) if warmup > 0 else None
            status[server.key] = ("ok" if warm is None or warm.clean else
                                  f"warm-up problem: {warm.problem or 'errors'}")
            server.remember()
        except Skip as exc:
            status[server.key] = f"failed: {exc}"
        print(f"{server.name:<{W}} port {server.port:<6} {status[server.key]}", flush=True)
    return [k for k in servers if status.get(k, "").startswith(("ok", "warm-up"))]


def measure(servers: dict[str, Server], running: list[str], connections: int,
            args: argparse.Namespace) -> dict[str, list[Run | None]]:
    """The rounds at one concurrency: every running system once per round, the order
    rotated each round."""
    results: dict[str, list[Run | None]] = {k: [] for k in running}
    for rnd in range(args.rounds if running else 0):
        shift = rnd % len(running)
        for key in running[shift:] + running[:shift]:
            server = servers[key]
            if server.died():
                results[key].append(None)
                continue
            first, total = server.cpu_seconds()
            run = wrk(server.port, connections, args.duration, timeout=args.wrk_timeout,
                      headers=BROWSER_HEADERS if args.browser_headers else ())
            if run.ok_requests:
                first_after, total_after = server.cpu_seconds()
                run.cpu_first = (first_after - first) * 10_000 / run.ok_requests
                run.cpu_total = (total_after - total) * 10_000 / run.ok_requests
            if server.died():
                run.problem = f"server {server.died()}"
            results[key].append(run)
            errors = (f"  non-2xx {run.non_2xx}, socket errors {run.socket_errors}"
                      if run.non_2xx or run.socket_errors else "")
            note = f"  FAILED: {run.problem}" if not run.ok else errors
            print(f"c={connections:<4} round {rnd + 1} {server.name:<{W}} {run.rps:>8.0f} "
                  f"2xx/s  p50 {run.p50_ms:7.3f} ms  p99 {run.p99_ms:8.3f} ms  "
                  f"CPU-s/10k {run.cpu_total:5.2f} (first process {run.cpu_first:5.2f}){note}",
                  flush=True)
    return results


def print_scenario(scenario: dict[str, Any]) -> None:
    """The summary table and the ratios of one app at one concurrency."""
    print(f"\n{scenario['app_name']}, c={scenario['connections']}, "
          f"{scenario['workers']} workers")
    print(f"{'system':<{W}} {'2xx req/s':>10} {'min–max':>15} {'p50 ms':>8} {'p99 ms':>9} "
          f"{'CPU-s/10k':>9} {'non-2xx':>8} {'sock err':>8}  rounds")
    rounds = scenario["rounds_requested"]
    for key, name in scenario["systems"].items():
        s = scenario["summary"].get(key)
        if not s or not s["ok_rounds"]:
            print(f"{name:<{W}} {scenario['status'].get(key, 'no round measured')}")
            continue
        spread = f"{s['rps_min']:.0f}–{s['rps_max']:.0f}"
        print(f"{name:<{W}} {s['rps_median']:>10.0f} {spread:>15} {s['p50_ms']:>8.3f} "
              f"{s['p99_ms']:>9.3f} {s['cpu_total']:>9.2f} {s['non_2xx']:>8} "
              f"{s['socket_errors']:>8}  {s['ok_rounds']}/{rounds}")
    for key, r in scenario["ratios_vs_tp"].items():
        pair = f"{SYSTEMS[r['of']][0]} / {SYSTEMS[key][0]}"
        cpu = (f"CPU/request ×{r['cpu_total']:.2f} ({r['cpu_min']:.2f}–{r['cpu_max']:.2f})"
               if "cpu_total" in r else "")
        print(f"  {pair:<{2 * W}} 2xx req/s ×{r['rps']:.2f} ({r['rps_min']:.2f}–"
              f"{r['rps_max']:.2f})  p99 ×{r['p99']:.2f}  {cpu}")
    if dash := scenario.get("ratio_dashboard_vs_headless"):
        p99 = f", p99 ×{dash['p99']:.2f} (target ≤ ×{DASHBOARD_P99_LIMIT:g})" if "p99" in dash \
            else ""
        print(f"  dashboard / headless 2xx req/s ×{dash['rps']:.2f} (target ≥ "
              f"×{DASHBOARD_TARGET:.2f}){p99}")


def run_app(app_key: str, keys: list[str], args: argparse.Namespace, tmp: Path,
            base: Path | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Start the systems serving one app, measure each concurrency, stop them; returns the
    scenarios and the c=1 proxy-vs-worker figures (hello WSGI only)."""
    app = APPS[app_key]
    keys = [k for k in keys if serves(k, app)]
    status = preflight(keys)
    servers: dict[str, Server] = {}
    scenarios: list[dict[str, Any]] = []
    c1: dict[str, Any] = {}
    print(f"\n=== {app.name} ({app.root.name}), {args.workers} workers", flush=True)
    try:
        for key in keys:
            if key not in status:
                servers[key] = make_server(key, app, args.workers, tmp / app_key / key, base,
                                           f"{tmp.name}-{os.getpid()}-{app_key}")
        for key, why in status.items():
            print(f"{SYSTEMS[key][0]:<{W}} {why}")
        running = start_all(servers, status, args.startup_timeout, args.warmup)
        for connections in args.concurrency:
            results = measure(servers, running, connections, args)
            scenario = {
                "app": app_key, "app_name": app.name, "interface": app.interface,
                "connections": connections, "workers": args.workers,
                "duration": args.duration, "rounds_requested": args.rounds,
                "systems": {k: SYSTEMS[k][0] for k in keys}, "status": dict(status),
                "summary": {k: summarize(v) for k, v in results.items()},
                "ratios_vs_tp": ratios(results),
                "ratio_dashboard_vs_headless": ratio(results, "tpdash", "tp"),
                "rounds": {k: [asdict(r) if r else None for r in v]
                           for k, v in results.items()}}
            scenarios.append(scenario)
            print_scenario(scenario)
        tp = servers.get("tp")
        if app_key == "hello" and tp and tp.proc and not tp.died() and not args.no_c1:
            c1 = latency_c1(tp, status.get("tp") == "ok", args.duration)
            if "added_p50_ms" in c1:
                print(f"\nc=1 python client: the proxy adds {c1['added_p50_ms'] * 1000:.0f} µs"
                      " (p50, proxy vs straight to a worker)")
    finally:
        for server in servers.values():
            server.stop()
    return scenarios, c1


def write_json(args: argparse.Namespace, machine: dict[str, str],
               scenarios: list[dict[str, Any]], c1: dict[str, Any]) -> None:
    """The ``--json`` file: machine, parameters, every scenario so far, the c=1 figures."""
    args.json.write_text(json.dumps({
        "machine": machine, "workers": args.workers,
        "params": {k: str(v) for k, v in vars(args).items() if k != "json"},
        "systems": {k: SYSTEMS[k][0] for k in args.keys},
        "apps": {k: APPS[k].name for k in args.app_keys},
        "scenarios": scenarios, "latency_c1": c1}, indent=2))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes per system")
    parser.add_argument("--apps", default="hello,asgi,django",
                        help=f"comma-separated subset of {','.join(APPS)}")
    parser.add_argument("--concurrency", "-c", default="1,16,256,1000",
                        help="comma-separated wrk connection counts")
    parser.add_argument("--connections", dest="concurrency", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--systems", "--only", dest="systems", default=",".join(DEFAULT_SYSTEMS),
                        help=f"comma-separated subset of {','.join(DEFAULT_SYSTEMS)}")
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of wrk on each system before the rounds")
    parser.add_argument("--wrk-timeout", type=float, default=30.0,
                        help="wrk's request timeout (its own default, 2 s, would count a "
                             "Django page queued behind 1,000 clients as an error)")
    parser.add_argument("--no-c1", action="store_true",
                        help="skip the c=1 proxy-vs-worker latency test after the rounds")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--browser-headers", action="store_true",
                        help="send the nine header fields of a browser's page request (user "
                             "agent, referer, a 500-byte cookie...) with every request; wrk "
                             "alone sends only Host")
    parser.add_argument("--base", metavar="REV",
                        help="also run tui-passenger as of git revision REV (A/B of a change)")
    parser.add_argument("--install", action="store_true",
                        help="first run 'apt-get install -y wrk passenger nginx tmux' "
                             "(needs root)")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in str(args.concurrency).split(",")]
    wanted = [ALIASES.get(k, k) for k in args.systems.split(",")]
    unknown = [k for k in wanted if k not in SYSTEMS] + [
        a for a in args.apps.split(",") if a not in APPS]
    if unknown:
        parser.error(f"unknown system or app: {', '.join(unknown)}")
    args.keys = [k for k in SYSTEMS if (k in wanted and k != "tpbase")
                 or (k == "tpbase" and args.base)]
    args.app_keys = args.apps.split(",")
    return args


def main() -> int:
    args = parse_args()
    if args.install:
        apt_install(["wrk", "passenger", "nginx", "tmux"])
    if not shutil.which("wrk"):
        print("wrk not found: install it with 'apt-get install wrk' (or rerun with --install)")
        return 2
    raise_open_files()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    machine = version_info()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
    print(f"load: wrk -t1 -c{{{','.join(map(str, args.concurrency))}}} -d{args.duration:g}s, "
          f"{args.rounds} rounds, {args.workers} workers each")
    scenarios: list[dict[str, Any]] = []
    c1: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="tp-bench-"))
    os.environ["BENCH_DJANGO_DB"] = str(tmp / "django-page.sqlite3")  # every server's app
    try:
        base = base_tree(args.base, tmp) if args.base else None
        for app_key in args.app_keys:
            found, app_c1 = run_app(app_key, args.keys, args, tmp, base)
            scenarios += found
            c1 = c1 or app_c1
            if args.json:  # after each app: a later failure keeps what was measured
                write_json(args, machine, scenarios, c1)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        drop_base_tree(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(f"\nresults written to {args.json}")
    return 0 if any(s["ok_rounds"] for sc in scenarios for s in sc["summary"].values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every server was stopped", file=sys.stderr)
        sys.exit(130)
