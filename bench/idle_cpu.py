#!/usr/bin/env python3
"""What an idle tui-passenger costs: the manager's CPU with N workers and no traffic, and
the dashboard's with it open.

Starts a headless instance serving ``sample_apps/hello_wsgi`` (smart spawning) as APPS apps
of WORKERS workers each, waits until every worker is ready, then reads the manager's CPU
time from ``/proc/PID/stat`` over ``--duration`` seconds. With ``--dashboard`` it then opens
the dashboard on that instance (``tui-passenger attach``, in a 120×40 pane of a private tmux
server) and measures the dashboard process and the manager together over the same length.
Prints percentages of one core.

    python3 bench/idle_cpu.py [--workers 150] [--apps 1] [--duration 30] [--dashboard]

The package measured is the one of the checkout holding this script (the servers run with
that checkout as their working directory): to measure another revision, run its copy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "sample_apps" / "hello_wsgi"
_VENV_PY = ROOT / ".venv" / "bin" / "python"
PYTHON = str(_VENV_PY) if _VENV_PY.exists() else sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def write_config(work: Path, apps: int, workers: int) -> Path:
    """A config of ``apps`` hello apps with ``workers`` warm workers each, on a free port."""
    total = apps * workers
    lines = ['[server]', 'address = "127.0.0.1"', "port = 0", f"max_pool_size = {total}",
             "allow_root = true", "access_log = false",
             f"admin_socket = {json.dumps(str(work / 'admin.sock'))}", ""]
    for index in range(apps):
        lines += ["[[app]]", f'name = "hello{index}"', f"root = {json.dumps(str(APP_DIR))}",
                  'entry = "app:application"', 'spawn_method = "smart"',
                  f"min_instances = {workers}", f"max_instances = {workers}",
                  "start_timeout = 120", f'base_uri = "/{index}"', ""]
    config = work / "idle.toml"
    config.write_text("\n".join(lines))
    return config


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks (0 once it is gone)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def measure(pids: dict[str, int], duration: float) -> dict[str, float]:
    """CPU % of one core used by each named pid over ``duration`` seconds."""
    before = {name: cpu_ticks(pid) for name, pid in pids.items()}
    start = time.monotonic()
    time.sleep(duration)
    elapsed = time.monotonic() - start
    return {name: (cpu_ticks(pid) - before[name]) / CLK_TCK / elapsed * 100
            for name, pid in pids.items()}


def status(admin: Path) -> dict | None:
    """The instance's ``status --json`` (None while it does not answer)."""
    result = subprocess.run([PYTHON, "-m", "tui_passenger", "status", "--json",
                             "--admin-socket", str(admin)], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def wait_ready(proc: subprocess.Popen[bytes], admin: Path, total: int, log: Path) -> int:
    """Wait until ``total`` workers are ready; returns the manager's pid."""
    deadline = time.monotonic() + 60 + total * 2
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the instance exited with {proc.returncode}: {log.read_text()[-2000:]}")
        state = status(admin) if admin.exists() else None
        if state is not None:
            ready = sum(p["state"] == "ready" for app in state["apps"]
                        for p in app["processes"])
            if ready >= total:
                return int(state["server"]["pid"])
        time.sleep(1.0)
    sys.exit(f"not all {total} workers ready in time")


def status_times(admin: Path, count: int) -> list[float]:
    """Milliseconds each of ``count`` GET /status took over the admin socket (what a
    dashboard's refresh asks of the core, one a second): the round trip bounds how long
    the core's event loop is held."""
    times = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(admin))
        started = time.perf_counter()
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        while sock.recv(1 << 16):
            pass
        times.append((time.perf_counter() - started) * 1000)
        sock.close()
        time.sleep(0.2)
    return times


def dashboard_pid(tmux: list[str]) -> int:
    """The pid of the process running in the tmux pane, once the dashboard is on screen."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = subprocess.run([*tmux, "display-message", "-p", "-t", "dash",
                                 "#{alternate_on} #{pane_pid}"],
                                capture_output=True, text=True, check=False)
        fields = result.stdout.split()
        if len(fields) == 2 and fields[0] == "1":
            return int(fields[1])
        time.sleep(0.5)
    sys.exit("the dashboard did not come up within 60 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=150, help="workers per app")
    parser.add_argument("--apps", type=int, default=1)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds to wait after every worker is ready")
    parser.add_argument("--dashboard", action="store_true",
                        help="then measure with the dashboard open (needs tmux)")
    args = parser.parse_args()
    total = args.apps * args.workers
    with tempfile.TemporaryDirectory(prefix="tp-idle-") as tmp:
        work = Path(tmp)
        config = write_config(work, args.apps, args.workers)
        admin, log = work / "admin.sock", work / "server.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([PYTHON, "-m", "tui_passenger", "--headless", "-c",
                                     str(config), "--log-level", "warning"], cwd=ROOT,
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        tmux = ["tmux", "-S", str(work / "tmux.sock"), "-f", os.devnull]
        try:
            manager = wait_ready(proc, admin, total, log)
            time.sleep(args.settle)  # let the start's own work (and its smaps reads) pass
            label = f"{args.apps} app(s) × {args.workers} workers"
            headless = measure({"manager": manager}, args.duration)
            print(f"{label}, idle, headless: manager {headless['manager']:.2f}% of a core "
                  f"over {args.duration:g} s")
            times = status_times(admin, 20)
            print(f"{label}: GET /status took median {statistics.median(times):.1f} ms, "
                  f"max {max(times):.1f} ms (20 requests)")
            if args.dashboard:
                if shutil.which("tmux") is None:
                    sys.exit("--dashboard needs tmux")
                command = [PYTHON, "-m", "tui_passenger", "attach", "--admin-socket",
                           str(admin)]
                subprocess.run([*tmux, "new-session", "-d", "-s", "dash", "-x", "120",
                                "-y", "40", "-c", str(ROOT), shlex.join(command)], check=True)
                dash = dashboard_pid(tmux)
                time.sleep(args.settle)
                opened = measure({"manager": manager, "dashboard": dash}, args.duration)
                together = opened["manager"] + opened["dashboard"]
                print(f"{label}, idle, dashboard open (attached, 120×40): manager "
                      f"{opened['manager']:.2f}% + dashboard {opened['dashboard']:.2f}% = "
                      f"{together:.2f}% of a core")
        finally:
            subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
