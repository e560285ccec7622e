#!/usr/bin/env python3
"""One-command benchmark report: spawn, memory, throughput, faults, soak and large pool.

Runs bench/spawn.py, memory.py, throughput.py (at each worker count of
``--throughput-workers``), faults.py, soak.py and large_pool.py one after another as
subprocesses, each with ``--json``, in one invocation, with every baseline measured in the
same run; then writes REPORT.md, spawn.png, memory.png,
throughput.png and summary.json into ``--out`` (``render.py``, ``charts.py``). The raw JSON
stays in ``OUT/data/``: ``--render-only`` draws the report again from it.

It makes sure of what it needs first: the ``bench`` extra (gunicorn, uvicorn, granian,
matplotlib: pip) and wrk, tmux and nginx (Debian: apt-get, as root or through sudo).
Passenger is measured when Debian's ``passenger`` package is installed; whatever cannot run
is reported with the reason.

    python3 dev.py bench report [--quick] [--out DIR] [--only spawn,memory,throughput,faults]
                                [--throughput-workers 2,4] [--render-only]

``--quick`` (a smoke test, under 3 minutes) writes to bench/results-quick/ unless ``--out`` is
given, so it never replaces the committed full report in bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import psutil  # noqa: E402
import render  # noqa: E402
from systems import apt_install  # noqa: E402

from tui_passenger.engine import become_subreaper  # noqa: E402

PYTHON = sys.executable
BENCH_MODULES = {"gunicorn": "gunicorn", "uvicorn": "uvicorn", "granian": "granian",
                 "matplotlib": "matplotlib"}

#: per section: the script and its arguments, full and --quick
PLANS = {
    "spawn": ("spawn.py", ["--workers", "8", "--rounds", "5"],
              ["--workers", "2", "--rounds", "2"]),
    "memory": ("memory.py", ["--workers", "8", "--rounds", "3"],
               ["--workers", "2", "--rounds", "2", "--requests", "100"]),
    # every app and concurrency (1, 16, 256, 1000) on every system: ~25 min per worker count
    "throughput": ("throughput.py", ["--rounds", "3", "--duration", "5"],
                   ["--rounds", "2", "--duration", "1", "--warmup", "0.5", "--no-c1",
                    "--apps", "hello,asgi", "--concurrency", "16"]),
    "faults": ("faults.py", [], ["--seconds", "2"]),
    # 5 million requests: ~25 min at 3-4k req/s on a busy 2-core box
    "soak": ("soak.py", [], ["--quick", "--max-seconds", "15", "--window", "3"]),
    "large_pool": ("large_pool.py", [],
                   ["--workers", "8", "--connections", "200", "--duration", "3"]),
}


def bench_extra() -> list[str]:
    """The requirements of the ``bench`` extra, from pyproject.toml."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["optional-dependencies"]["bench"]


def ensure_python_packages() -> None:
    """pip install the ``bench`` extra into this interpreter when part of it is missing."""
    missing = [name for name, module in BENCH_MODULES.items()
               if importlib.util.find_spec(module) is None]
    if not missing:
        return
    specs = bench_extra()
    print(f"report: {', '.join(missing)} not importable by {PYTHON}: installing the 'bench' "
          f"extra with pip ({' '.join(specs)})", flush=True)
    subprocess.run([PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *specs], check=True)
    importlib.invalidate_caches()


def ensure_tools() -> str:
    """wrk (and tmux, for the dashboard, and nginx, for the nginx → app server deployments)
    from Debian when missing; '' or why wrk is missing."""
    missing = [tool for tool in ("wrk", "tmux", "nginx") if not shutil.which(tool)]
    if missing:
        print(f"report: {' and '.join(missing)} not installed; the throughput section needs "
              f"{'them' if len(missing) > 1 else 'it'}: installing from Debian", flush=True)
        if not apt_install(missing):
            print(f"report: could not install {' '.join(missing)}", flush=True)
    if shutil.which("wrk"):
        return ""
    return ("wrk is not installed and could not be installed (apt-get install wrk needs "
            "apt-get and root or sudo)")


def _first_line(argv: list[str]) -> str:
    if not shutil.which(argv[0]):
        return "not installed"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def machine() -> dict[str, str]:
    """CPU, memory, kernel, OS and the versions of everything measured."""
    info = {"cpu": "?", "os": "?"}
    cpuinfo = Path("/proc/cpuinfo").read_text()
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
            break
    info["CPUs"] = (f"{len(os.sched_getaffinity(0))} usable ({os.cpu_count()} online)")
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            info["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    info["kernel"] = platform.release()
    for line in Path("/etc/os-release").read_text().splitlines() if Path(
            "/etc/os-release").exists() else []:
        if line.startswith("PRETTY_NAME="):
            info["os"] = line.split("=", 1)[1].strip('"')
    info["python"] = platform.python_version()
    for dist in ("tui-passenger", "gunicorn", "uvicorn", "uvloop", "httptools", "granian",
                 "django", "matplotlib"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = "not installed"
    wrk = _first_line(["wrk", "-v"])
    info["wrk"] = wrk.split()[1] if wrk.startswith("wrk ") else wrk
    info["Passenger"] = _first_line(["passenger", "--version"])
    info["tmux"] = _first_line(["tmux", "-V"])
    info["nginx"] = _first_line(["nginx", "-v"])
    return info


def stop_leftovers() -> list[str]:
    """Stop and reap what a finished bench script left behind. This process is a subreaper:
    orphans (a daemon's processes) are adopted here, not by whoever started the report."""
    me = psutil.Process()
    left = []
    for child in me.children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{child.pid} {' '.join(child.cmdline())[:80]}")
            child.terminate()
        except psutil.Error:
            pass
    for child in psutil.wait_procs(me.children(), timeout=5)[1]:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(me.children(), timeout=5)
    return left


def run_step(name: str, argv: list[str], json_path: Path) -> dict[str, Any]:
    """Run one bench script, its output passed through; a step that wrote no JSON leaves
    ``{"skipped": why}`` in its place."""
    print(f"\nreport: {name}: {shlex.join(argv)}", flush=True)
    started = time.monotonic()
    tail: list[str] = []
    with subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                print(line, end="", flush=True)
                tail = [*tail[-4:], line.strip()]
            code = proc.wait()
        except BaseException:
            proc.terminate()  # a bench script cleans up on SIGTERM
            proc.wait(60)
            raise
    elapsed = time.monotonic() - started
    result = f"exit code {code}"
    if left := stop_leftovers():
        print(f"report: {name} left {len(left)} process(es) running, stopped: {left}")
        result += f", {len(left)} process(es) left running (stopped)"
    if not json_path.exists():
        why = " | ".join(line for line in tail if line)[-400:]
        render.write_json(json_path, {"skipped": f"{name} failed ({result}): {why}"})
        result += ", no results"
    return {"name": name, "command": shlex.join(_relative(a) for a in argv[1:]),
            "elapsed_s": elapsed, "result": result}


def _relative(arg: str) -> str:
    """A path inside the repository as seen from its root (the report shows commands so)."""
    path = Path(arg)
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else arg


def run_all(args: argparse.Namespace, data_dir: Path) -> list[dict[str, Any]]:
    """Every requested section; returns the steps run."""
    steps = []
    no_wrk = ensure_tools() if "throughput" in args.only else ""
    for name in render.SECTIONS:
        if name not in args.only:
            continue
        script, full, quick = PLANS[name]
        extra = quick if args.quick else full
        argv = [PYTHON, str(BENCH / script), *extra]
        if name != "throughput":
            path = data_dir / f"{name}.json"
            steps.append(run_step(name, [*argv, "--json", str(path)], path))
            continue
        for workers in args.throughput_workers:
            path = data_dir / f"throughput-{workers}.json"
            if no_wrk:
                print(f"report: throughput skipped: {no_wrk}", flush=True)
                render.write_json(path, {"skipped": no_wrk})
                continue
            steps.append(run_step(f"throughput, {workers} workers",
                                  [*argv, "--workers", str(workers), "--json", str(path)], path))
    return steps


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="few rounds and short runs: a smoke test in under 3 minutes")
    parser.add_argument("--out", type=Path, help="where REPORT.md, the charts and the data go "
                        "(default bench/results, or bench/results-quick with --quick)")
    parser.add_argument("--only", default=",".join(render.SECTIONS),
                        help=f"comma-separated subset of {','.join(render.SECTIONS)}")
    parser.add_argument("--throughput-workers", default="2,4",
                        help="worker counts for the throughput section (default 2,4)")
    parser.add_argument("--render-only", action="store_true",
                        help="no measuring: draw the report again from OUT/data")
    args = parser.parse_args()
    args.only = args.only.split(",")
    args.throughput_workers = [int(w) for w in args.throughput_workers.split(",")]
    out = (args.out or BENCH / ("results-quick" if args.quick else "results")).resolve()
    data_dir = out / "data"
    ensure_python_packages()
    if not args.render_only:
        signal.signal(signal.SIGTERM, _interrupt)
        become_subreaper()
        data_dir.mkdir(parents=True, exist_ok=True)
        for old in [*data_dir.glob("*.json"), *out.glob("*.png")]:
            old.unlink()
        started = time.monotonic()
        meta = {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                "command": shlex.join(["python3", "dev.py", "bench", "report", *sys.argv[1:]]),
                "quick": args.quick, "machine": machine()}
        meta["machine"]["load average at start"] = " ".join(
            f"{x:.2f}" for x in os.getloadavg())
        meta["steps"] = run_all(args, data_dir)
        meta["machine"]["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        meta["elapsed_s"] = time.monotonic() - started
        render.write_json(data_dir / "meta.json", meta)
    summary = render.render(render.load(data_dir), out)
    print(f"\nreport: {out / 'REPORT.md'} ({', '.join(summary['charts']) or 'no charts'})")
    for row in summary["rows"]:
        print(f"  {row['label']}: ×{row['median']:.2f} ({row['min']:.2f}–{row['max']:.2f})")
    for note in summary["skipped"]:
        print(f"  skipped: {note}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("report: interrupted", file=sys.stderr)
        sys.exit(130)
