#!/usr/bin/env python3
"""A long run against headless tui-passenger on its defaults: does anything drift or leak?

tui-passenger serves ``sample_apps/hello_wsgi`` with 2 smart workers and every other setting
as shipped (the access log on: its lines go to the server's stderr, here /dev/null, so
they are formatted and written as in production but use no disk). ``wrk`` loads it in
windows of ``--window`` seconds back to back (each window a fresh wrk: new connections) until
``--requests`` answers have come back; a sampler reads the manager's RSS and open fds every
``--sample`` seconds all along. The first ``--warmup-share`` of the requests is the warm-up.

Per window: requests, 2xx req/s, p50/p99 (latency drift), non-2xx answers and socket errors,
CPU-s per 10k requests (all processes, and the manager's), and the manager's RSS and fds. The
verdict: manager RSS growth after the warm-up ≤ 5 MB, open fds flat (between windows, when
no client is connected: the last windows as the first after the warm-up, ±1), zero errors
and non-2xx answers, and no drift: the manager's CPU per request in the last windows within
×1.5 of the first after the warm-up (latency is reported the same way, first vs last, but
not judged: on a shared box it mostly follows the neighbours' load).

    python3 dev.py bench soak [--quick] [--requests 5000000] [--connections 32]
                              [--window 10] [--workers 2] [--json PATH]

``--quick``: one minute (windows of 5 s) — a smoke test of the same checks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import Server, Skip, free_port  # noqa: E402
from systems import APPS, PYTHON, ROOT, App, tp_toml  # noqa: E402
from wrkrun import wrk  # noqa: E402

RSS_GROWTH_LIMIT_MB = 5.0
DRIFT_LIMIT = 1.5


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    """How many file descriptors ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler(threading.Thread):
    """RSS and fds of one process every ``interval`` seconds: ``(t, rss MiB, fds)``."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float, int]] = []
        self.stop = threading.Event()
        self.started_at = time.monotonic()

    def sample(self) -> tuple[float, float, int]:
        point = (time.monotonic() - self.started_at, rss_mb(self.pid), open_fds(self.pid))
        self.samples.append(point)
        return point

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.sample()
            except OSError:  # the process is gone: the soak reports it
                return


def start_tp(work: Path, workers: int, app: App, extra: str = "",
             timeout: float = 120.0) -> Server:
    """Headless tui-passenger on its defaults (plus ``extra`` TOML in ``[server]``),
    stderr (the main and access logs) to /dev/null; returns it once it answers."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    toml = tp_toml(work, port, workers, app)
    if extra:
        toml.write_text(toml.read_text().replace("[server]\n", f"[server]\n{extra}", 1))
    argv = [PYTHON, "-m", "tui_passenger", "--headless", "-c", str(toml), "--port", str(port)]
    server = Server("tp", "tui-passenger", argv, port, ROOT, Path(os.devnull))
    server.start()
    server.wait_ready(timeout)
    return server


def raise_open_files() -> None:
    """Soft open-files limit up to the hard one (wrk -c1000 and the servers inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65_536 if hard == resource.RLIM_INFINITY else min(65_536, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def soak(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    """The windows of load, with the manager sampled all along; returns every figure."""
    assert server.proc is not None
    manager = server.proc.pid
    sampler = Sampler(manager, args.sample)
    sampler.sample()
    sampler.start()
    windows: list[dict[str, Any]] = []
    total, started = 0, time.monotonic()
    try:
        while total < args.requests and time.monotonic() - started < args.max_seconds:
            cpu_before = server.cpu_seconds()
            run = wrk(server.port, args.connections, args.window)
            cpu_after = server.cpu_seconds()
            per_10k = 10_000 / run.ok_requests if run.ok_requests else 0.0
            manager_cpu = (cpu_after[0] - cpu_before[0]) * per_10k
            total_cpu = (cpu_after[1] - cpu_before[1]) * per_10k
            if server.died():
                raise Skip(f"tui-passenger {server.died()}")
            time.sleep(0.5)  # the clients are gone: fds between windows are the base ones
            _, rss, fds = sampler.sample()
            total += run.requests
            windows.append({"requests": run.requests, "rps": run.rps, "p50_ms": run.p50_ms,
                            "p99_ms": run.p99_ms, "non_2xx": run.non_2xx,
                            "socket_errors": run.socket_errors, "problem": run.problem,
                            "rss_mb": rss, "fds": fds, "total": total,
                            "manager_cpu": manager_cpu, "cpu_total": total_cpu,
                            "t": time.monotonic() - started})
            print(f"window {len(windows):>3}  {total:>9} requests  {run.rps:>7.0f} 2xx/s  "
                  f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:7.2f} ms  non-2xx {run.non_2xx}  "
                  f"socket errors {run.socket_errors}  CPU-s/10k {total_cpu:.2f} (manager "
                  f"{manager_cpu:.2f})  manager RSS {rss:6.1f} MiB  fds {fds}"
                  + (f"  {run.problem}" if run.problem else ""), flush=True)
    finally:
        sampler.stop.set()
        sampler.join()
    return verdict(windows, sampler.samples, args)


def verdict(windows: list[dict[str, Any]], samples: list[tuple[float, float, int]],
            args: argparse.Namespace) -> dict[str, Any]:
    """The checks on the figures of :func:`soak`."""
    total = windows[-1]["total"] if windows else 0
    warm = next((i for i, w in enumerate(windows) if w["total"] >= args.warmup_share * total),
                0)
    after = windows[warm:] or windows
    base_rss, end_rss = after[0]["rss_mb"], after[-1]["rss_mb"]
    growth = end_rss - base_rss
    fds_between = [w["fds"] for w in after]
    k = max(1, min(5, len(after) // 3))

    def first(field: str) -> float:
        return statistics.median(w[field] for w in after[:k]) if after else 0.0

    def last(field: str) -> float:
        return statistics.median(w[field] for w in after[-k:]) if after else 0.0

    # Drift is judged on CPU per request (what a leak or a growing structure would raise;
    # latency on a shared box mostly tracks the neighbours' load) and reported for latency.
    drift = last("manager_cpu") / first("manager_cpu") if first("manager_cpu") else 0.0
    errors = sum(w["socket_errors"] for w in windows)
    non_2xx = sum(w["non_2xx"] for w in windows)
    checks = {
        f"manager RSS growth after warm-up ≤ {RSS_GROWTH_LIMIT_MB:g} MB":
            growth <= RSS_GROWTH_LIMIT_MB,
        # ±1: a connection may still be closing when a window's sample is taken
        "open fds flat (between windows, after warm-up, ±1)":
            bool(fds_between) and last("fds") <= first("fds") + 1,
        "zero socket errors": errors == 0,
        "zero non-2xx answers": non_2xx == 0,
        f"no drift: manager CPU per request, last/first windows ≤ ×{DRIFT_LIMIT:g}":
            0 < drift <= DRIFT_LIMIT,
    }
    if not args.quick:
        checks[f"at least {args.requests:,} requests"] = total >= args.requests
    return {"requests": total, "windows": windows, "samples": samples, "warmup_windows": warm,
            "rss_start_mb": windows[0]["rss_mb"] if windows else 0.0,
            "rss_after_warmup_mb": base_rss, "rss_end_mb": end_rss, "rss_growth_mb": growth,
            "rss_max_mb": max((s[1] for s in samples), default=0.0),
            "fds_between_windows": sorted(set(fds_between)),
            "fds_max_under_load": max((s[2] for s in samples), default=0),
            "p50_first_ms": first("p50_ms"), "p50_last_ms": last("p50_ms"),
            "p99_first_ms": first("p99_ms"), "p99_last_ms": last("p99_ms"),
            "manager_cpu_first": first("manager_cpu"), "manager_cpu_last": last("manager_cpu"),
            "cpu_drift": drift, "drift_windows": k,
            "socket_errors": errors, "non_2xx": non_2xx, "checks": checks,
            "ok": all(checks.values())}


def print_result(result: dict[str, Any], elapsed: float) -> None:
    """The figures of the soak, for a reader."""
    print(f"\n{result['requests']:,} requests in {elapsed / 60:.1f} min "
          f"({result['warmup_windows']} warm-up windows)")
    print(f"manager RSS: {result['rss_start_mb']:.1f} MiB at start, "
          f"{result['rss_after_warmup_mb']:.1f} after warm-up, {result['rss_end_mb']:.1f} at "
          f"the end (growth {result['rss_growth_mb']:+.2f} MiB, max {result['rss_max_mb']:.1f})")
    print(f"manager fds between windows: {result['fds_between_windows']} "
          f"(max under load {result['fds_max_under_load']})")
    print(f"first → last {result['drift_windows']} windows after warm-up (medians): "
          f"p50 {result['p50_first_ms']:.2f} → {result['p50_last_ms']:.2f} ms, p99 "
          f"{result['p99_first_ms']:.2f} → {result['p99_last_ms']:.2f} ms, manager CPU-s/10k "
          f"{result['manager_cpu_first']:.2f} → {result['manager_cpu_last']:.2f} "
          f"(×{result['cpu_drift']:.2f}); socket errors {result['socket_errors']}, "
          f"non-2xx {result['non_2xx']}")


def conclude(result: dict[str, Any], args: argparse.Namespace, **extra: Any) -> int:
    """Print the checks and the verdict, write ``--json`` (the parameters, ``extra`` and
    the result); the exit status: 0 when every check passed."""
    for name, ok in result["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    print(f"verdict: {'PASS' if result['ok'] else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({"params": vars(args) | {"json": None}, **extra,
                                         **result}, indent=2, default=str))
    return 0 if result["ok"] else 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one minute, windows of 5 s")
    parser.add_argument("--requests", type=int, default=5_000_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--window", type=float, help="seconds per wrk run (10, --quick 5)")
    parser.add_argument("--sample", type=float, default=2.0,
                        help="seconds between RSS/fd samples of the manager")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup-share", type=float, default=0.1,
                        help="the share of the requests that is the warm-up")
    parser.add_argument("--max-seconds", type=float,
                        help="stop then even if --requests is not reached (3 h, --quick 60 s)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.requests, args.warmup_share = sys.maxsize, 0.25
    args.window = args.window or (5.0 if args.quick else 10.0)
    args.max_seconds = args.max_seconds or (60.0 if args.quick else 3 * 3600.0)
    raise_open_files()
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="tp-soak-"))
    started = time.monotonic()
    server = None
    try:
        server = start_tp(tmp / "tp", args.workers, APPS["hello"])
        print(f"tui-passenger (pid {server.proc.pid if server.proc else '?'}) on port "
              f"{server.port}, {args.workers} workers, defaults; wrk -t1 -c{args.connections}"
              f" in windows of {args.window:g} s", flush=True)
        result = soak(args, server)
    except Skip as exc:
        print(f"soak failed: {exc}")
        return 1
    finally:
        if server is not None:
            server.stop()
    elapsed = time.monotonic() - started
    print_result(result, elapsed)
    return conclude(result, args, elapsed_s=elapsed)


def exit_with(entry: Callable[[], int]) -> None:
    """Exit with what ``entry`` returns; Ctrl-C (the server already stopped) exits 130."""
    try:
        sys.exit(entry())
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    exit_with(main)
