#!/usr/bin/env python3
"""Throughput and latency of tui-passenger against gunicorn, uvicorn and Phusion Passenger.

Every WSGI system serves ``sample_apps/hello_wsgi``, every ASGI one ``sample_apps/hello_asgi``,
each with the same number of worker processes; every system is started once, on its own
loopback port; then ``wrk`` loads one system at a time, the order rotating from round to
round so machine noise is spread over all of them. tui-passenger runs three times: headless
(``tp``), with its dashboard open in a real terminal (``tpdash``, a detached session on a
private tmux server), and headless serving the ASGI app (``tpasgi``, against uvicorn).
Afterwards a c=1 run compares a request through headless tui-passenger's proxy with one sent
straight to a worker's Unix socket. Prints medians, the spread, tui-passenger/baseline
ratios (``tpasgi`` against uvicorn, ``tp`` against the WSGI servers) and the
dashboard/headless ratio.

    python3 dev.py bench throughput [--workers 2] [--connections 16] [--duration 5]
                                    [--rounds 3] [--warmup 2] [--no-c1]
                                    [--only tp,tpdash,sync,gthread,passenger,tpasgi,uvicorn]
                                    [--json results.json] [--install] [--base REV]

``--base REV`` adds ``tpbase``: headless tui-passenger as of git revision REV (checked out
into a scratch worktree, run with the same interpreter), measured in the same rounds, so
``tui-passenger / tui-passenger at REV`` is an interleaved A/B of a change.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "sample_apps" / "hello_wsgi"
ASGI_DIR = ROOT / "sample_apps" / "hello_asgi"
_VENV_PY = ROOT / ".venv" / "bin" / "python"
PYTHON = str(_VENV_PY) if _VENV_PY.exists() else sys.executable
GTHREAD_THREADS = 4
SYSTEMS = {"tp": "tui-passenger", "tpdash": "tui-passenger dashboard",
           "sync": "gunicorn sync", "gthread": "gunicorn gthread", "passenger": "passenger",
           "tpasgi": "tui-passenger ASGI", "uvicorn": "uvicorn",
           "tpbase": "tui-passenger at base"}
ASGI_SYSTEMS = ("tpasgi", "uvicorn")  # serve sample_apps/hello_asgi; the others hello_wsgi
#: baseline -> the tui-passenger system serving the same app (the ratios are pair/baseline)
PAIRS = {"sync": "tp", "gthread": "tp", "passenger": "tp", "uvicorn": "tpasgi",
         "tpbase": "tp"}
#: the Python packages a system needs in the venv (the ``bench`` extra): key -> (module, spec)
PACKAGES = {"sync": ("gunicorn", "gunicorn>=22"), "gthread": ("gunicorn", "gunicorn>=22"),
            "uvicorn": ("uvicorn", "uvicorn>=0.29")}
W = max(map(len, SYSTEMS.values()))  # width of the system-name column
DASHBOARD_TARGET = 0.85  # the dashboard open must keep this share of headless req/s
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


class Skip(Exception):
    """A system cannot be benchmarked; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 2) -> str:
    """The last lines of a log file, joined with ' | ' (for one-line failure messages)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip()[:200] for line in text[-lines:])


@dataclass
class Server:
    """One system under test: a process group started in its own session, on its own port."""

    key: str
    argv: list[str]
    port: int
    cwd: Path
    log: Path
    stop_argv: list[str] | None = None
    pid_file: Path | None = None
    marker: str | None = None  # processes whose cmdline holds this are ours (daemons)
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    seen: list[Any] = field(default_factory=list)  # psutil.Process of every descendant seen

    @property
    def name(self) -> str:
        return SYSTEMS[self.key]

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(self.env or {})},
                                         start_new_session=True)

    def died(self) -> str:
        """Why the server is gone ('' while it runs)."""
        if self.proc is None or self.proc.poll() is None:
            return ""
        return f"exited with code {self.proc.returncode} ({tail(self.log)})"

    def wait_ready(self, timeout: float) -> None:
        """Poll GET / until it answers 200; raise :class:`Skip` with the reason otherwise."""
        assert self.proc is not None
        deadline, last = time.monotonic() + timeout, "no answer"
        while time.monotonic() < deadline:
            if self.died():
                raise Skip(self.died())
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status == 200:
                    self.remember()
                    return
                last = f"HTTP {response.status}"
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        raise Skip(f"no HTTP 200 on GET / within {timeout:g} s (last: {last}; "
                   f"log: {tail(self.log) or 'empty'})")

    def remember(self) -> None:
        """Record every process of this system now, so none is missed when stopping."""
        try:
            import psutil
        except ImportError:
            return
        roots = [self.proc.pid] if self.proc else []
        if self.pid_file and self.pid_file.exists():
            roots += [int(x) for x in self.pid_file.read_text().split() if x.isdigit()]
        for pid in roots:
            try:
                top = psutil.Process(pid)
                self.seen += [top, *top.children(recursive=True)]
            except psutil.Error:
                pass
        if self.marker:
            for p in psutil.process_iter(["cmdline"]):
                if any(self.marker in arg for arg in p.info["cmdline"] or ()):
                    self.seen.append(p)

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time (user + system) used so far by the first process (tui-passenger's
        manager, which runs the proxy) and by every process of the system together."""
        try:
            import psutil
        except ImportError:
            return 0.0, 0.0
        self.remember()
        first, total, counted = 0.0, 0.0, set()
        for p in self.seen:
            if p.pid in counted:
                continue
            counted.add(p.pid)
            try:
                times = p.cpu_times()
            except psutil.Error:  # gone: its time no longer counts on either side
                continue
            used = times.user + times.system
            total += used
            if self.proc is not None and p.pid == self.proc.pid:
                first = used
        return first, total

    def stop(self) -> None:
        """Stop the system and everything it started: polite first, then SIGKILL."""
        if self.proc is None:
            return
        self.remember()
        if self.stop_argv and self.pid_file and self.pid_file.exists():
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(self.stop_argv, cwd=self.cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=30, check=False)
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        for p in self.seen:
            try:
                if p.is_running() and p.pid != os.getpid():
                    p.kill()
            except Exception:  # psutil.Error: gone meanwhile
                pass


@dataclass
class TmuxServer(Server):
    """tui-passenger with its dashboard open: run in a detached session of a private tmux
    server (without a terminal it would fall back to headless). ``proc`` is the tmux client
    that creates the session; the dashboard starts the server as a process of its own, and
    both are found by ``marker`` (the TOML path, in the titles of the dashboard and the
    manager), with their descendants: their CPU counts together."""

    tmux_socket: str = ""
    session: str = "bench"
    socket_path: str = ""  # the tmux server's socket file (tmux 3.3 leaves it behind)

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        """One tmux command on the private server (bounded; a hang counts as a failure)."""
        argv = ["tmux", "-L", self.tmux_socket, "-f", os.devnull, *args]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10,
                                  check=False)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", "tmux did not answer in 10 s")

    def pane(self, fmt: str) -> str:
        """A tmux format (``#{pane_dead}``…) for the session's pane; '' if there is none."""
        done = self.tmux("display-message", "-p", "-t", self.session, fmt)
        return done.stdout.strip() if done.returncode == 0 else ""

    def screen(self, lines: int = 4) -> str:
        """The last non-blank lines on the pane, joined with ' | ' ('' if unavailable)."""
        done = self.tmux("capture-pane", "-p", "-t", self.session)
        text = [ln.strip() for ln in done.stdout.splitlines() if ln.strip()]
        return " | ".join(ln[:160] for ln in text[-lines:]) if done.returncode == 0 else ""

    def start(self) -> None:
        # remain-on-exit is set by the same client call, before the dashboard can exit, so a
        # crash's last screen (a traceback goes to the terminal, not the log) survives.
        command = shlex.join(self.argv)
        with open(self.log.with_name("tmux.out"), "wb") as out:
            self.proc = subprocess.Popen(
                ["tmux", "-L", self.tmux_socket, "-f", os.devnull, "new-session", "-d",
                 "-s", self.session, "-x", "120", "-y", "40", "-c", str(self.cwd), command,
                 ";", "set-option", "-t", self.session, "remain-on-exit", "on"],
                cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})}, start_new_session=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.socket_path = self.tmux("display-message", "-p", "#{socket_path}").stdout.strip()

    def died(self) -> str:
        if self.proc is None or self.proc.poll() is None:
            return ""
        if self.proc.returncode != 0:
            return (f"tmux new-session failed with code {self.proc.returncode} "
                    f"({tail(self.log.with_name('tmux.out')) or 'no output'})")
        gone = self.tmux("has-session", "-t", self.session).returncode != 0
        if not gone and self.pane("#{pane_dead}") != "1":
            return ""
        status = "" if gone else self.pane("#{pane_dead_status}")
        screen = "" if gone else self.screen()
        return (f"dashboard exited{f' with code {status}' if status else ''}: "
                f"log: {tail(self.log) or 'empty'}" + (f"; pane: {screen}" if screen else ""))

    def wait_ready(self, timeout: float) -> None:
        """HTTP 200 on GET /, then the dashboard on screen (the pane in the alternate screen:
        a headless fallback would answer HTTP too)."""
        super().wait_ready(timeout)
        deadline = time.monotonic() + 10
        while self.pane("#{alternate_on}") != "1":
            if self.died():
                raise Skip(self.died())
            if time.monotonic() > deadline:
                raise Skip(f"answers HTTP but no dashboard on screen within 10 s "
                           f"(pane: {self.screen() or 'empty'}; log: {tail(self.log) or 'empty'})")
            time.sleep(0.2)

    def remember(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        for p in psutil.process_iter(["cmdline"]):
            if p.pid == os.getpid() or not self.marker:
                continue
            if any(self.marker in arg for arg in p.info["cmdline"] or ()):
                self.seen.append(p)  # the manager (and the tmux server: its argv has the path)
                with contextlib.suppress(psutil.Error):
                    self.seen += p.children(recursive=True)  # preloaders, workers

    def ended(self) -> bool:
        return (self.tmux("has-session", "-t", self.session).returncode != 0
                or self.pane("#{pane_dead}") == "1")

    def stop(self) -> None:
        """``q`` (the dashboard stops its server gracefully and waits for it), up to 20 s
        for it to exit, then kill the tmux server and whatever of ours is still alive."""
        if self.proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.remember()
        if not self.ended():
            self.tmux("send-keys", "-t", self.session, "q")
            deadline = time.monotonic() + 20
            while not self.ended() and time.monotonic() < deadline:
                time.sleep(0.2)
        self.tmux("kill-server")
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(ImportError):
            import psutil

            alive = [p for p in self.seen if p.pid != os.getpid() and p.is_running()]
            for p in alive:
                with contextlib.suppress(psutil.Error):
                    p.terminate()
            for p in psutil.wait_procs(alive, timeout=5)[1]:
                with contextlib.suppress(psutil.Error):
                    p.kill()
        if self.socket_path and self.tmux("has-session").returncode != 0:
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)


def tp_toml(work: Path, port: int, workers: int, asgi: bool = False) -> Path:
    """The tui-passenger config, the same for headless and dashboard (admin socket in work);
    ``asgi``: the ASGI hello app instead of the WSGI one."""
    root, entry = (ASGI_DIR, "app:app") if asgi else (APP_DIR, "app:application")
    toml = work / "bench.toml"
    toml.write_text(
        f'[server]\naddress = "127.0.0.1"\nport = {port}\nmax_pool_size = {workers}\n'
        f'allow_root = true\n'
        f'admin_socket = {json.dumps(str(work / "admin.sock"))}\n\n'
        f'[[app]]\nname = "hello"\nroot = {json.dumps(str(root))}\n'
        f'entry = "{entry}"\ninterface = "{"asgi" if asgi else "wsgi"}"\n'
        f'spawn_method = "smart"\nmin_instances = {workers}\n'
        f'max_instances = {workers}\ndefault = true\n')
    return toml


def base_tree(rev: str, tmp: Path) -> Path:
    """A scratch worktree of ``rev`` (for ``--base``); removed by :func:`drop_base_tree`."""
    tree = tmp / "base-tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet",
                    str(tree), rev], check=True)
    return tree


def drop_base_tree(tmp: Path) -> None:
    """Remove the ``--base`` worktree, if one was made."""
    tree = tmp / "base-tree"
    if tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False)


def make_servers(keys: list[str], workers: int, tmp: Path,
                 base: Path | None = None) -> dict[str, Server]:
    """Build (not start) every requested system, each in its own scratch directory;
    ``tpbase`` runs the package from the ``base`` tree (first on PYTHONPATH, which its
    preloader and workers inherit)."""
    servers: dict[str, Server] = {}
    for key in keys:
        port, work = free_port(), tmp / key
        work.mkdir()
        log = work / "server.log"
        if key in ("tp", "tpasgi", "tpbase"):
            toml = tp_toml(work, port, workers, asgi=key == "tpasgi")
            # warning: no per-request access log (gunicorn and passenger keep none either)
            argv = [PYTHON, "-m", "tui_passenger", "--headless", "-c", str(toml),
                    "--port", str(port), "--log-level", "warning"]
            if key == "tpbase":
                assert base is not None, "tpbase needs --base"
                servers[key] = Server(key, argv, port, base, log,
                                      env={"PYTHONPATH": str(base)})
            else:
                servers[key] = Server(key, argv, port, ROOT, log)
        elif key == "tpdash":
            toml = tp_toml(work, port, workers)
            argv = [PYTHON, "-m", "tui_passenger", "-c", str(toml), "--port", str(port),
                    "--log-file", str(log), "--log-level", "warning"]
            servers[key] = TmuxServer(key, argv, port, ROOT, log, marker=str(toml),
                                      tmux_socket=f"{tmp.name}-{os.getpid()}")
        elif key in ("sync", "gthread"):
            argv = [PYTHON, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}",
                    "--chdir", str(APP_DIR), "-k", key]
            if key == "gthread":
                argv += ["--threads", str(GTHREAD_THREADS)]
            servers[key] = Server(key, [*argv, "app:application"], port, work, log)
        elif key == "uvicorn":
            # uvloop and httptools, as tui-passenger's workers; one process per worker.
            argv = [PYTHON, "-m", "uvicorn", "--workers", str(workers), "--host", "127.0.0.1",
                    "--port", str(port), "--app-dir", str(ASGI_DIR), "--loop", "uvloop",
                    "--http", "httptools", "--no-access-log", "--log-level", "warning",
                    "app:app"]
            servers[key] = Server(key, argv, port, work, log)
        elif key == "passenger":
            shutil.copy(APP_DIR / "app.py", work / "passenger_wsgi.py")
            pid_file = work / "passenger.pid"
            # Passenger spawns Python apps directly (its smart spawning is for Ruby only).
            argv = ["passenger", "start", "--engine=builtin", "--address", "127.0.0.1",
                    "--port", str(port), "--min-instances", str(workers),
                    "--max-pool-size", str(workers), "--spawn-method", "direct",
                    "--app-type", "wsgi", "--startup-file", "passenger_wsgi.py",
                    "--python", PYTHON, "--environment", "production",
                    "--log-file", str(work / "passenger.log"), "--pid-file", str(pid_file),
                    "--instance-registry-dir", str(work),
                    "--no-friendly-error-pages", "--disable-turbocaching",
                    "--disable-security-update-check", "--disable-anonymous-telemetry",
                    "--no-install-runtime", "--no-compile-runtime", "--auto"]
            # TMPDIR: its temp dirs land in ``work`` too, so none outlives the run.
            servers[key] = Server(key, argv, port, work, log, marker=str(work),
                                  stop_argv=["passenger", "stop", "--pid-file", str(pid_file)],
                                  pid_file=pid_file, env={"TMPDIR": str(work)})
    return servers


def ensure_package(module: str, spec: str) -> None:
    """Install ``spec`` into the venv when ``module`` is missing (it is in the ``bench``
    extra)."""
    if subprocess.run([PYTHON, "-c", f"import {module}"], capture_output=True).returncode == 0:
        return
    print(f"{module} is not importable by {PYTHON}: installing {spec} with pip "
          "(the 'bench' extra)")
    done = subprocess.run([PYTHON, "-m", "pip", "install", "-q", spec],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise Skip(f"{module} missing and pip install failed: {tail_text(done.stderr)}")


def apt_install(packages: list[str]) -> bool:
    """``apt-get update`` then ``apt-get install -y PACKAGES`` (as root, or through
    ``sudo -n``); True if it succeeded. Says what it does."""
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if not shutil.which("apt-get") or (sudo and not shutil.which("sudo")):
        print(f"cannot install {' '.join(packages)}: needs apt-get and root (or sudo)")
        return False
    print(f"installing {' '.join(packages)} from Debian: "
          f"{shlex.join([*sudo, 'apt-get', 'install', '-y', *packages])}", flush=True)
    quiet = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive"]  # survives sudo's env reset
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        try:
            done = subprocess.run([*quiet, *argv], timeout=600, check=False)
        except subprocess.TimeoutExpired:
            return False
        if done.returncode != 0:
            return False
    return True


def tail_text(text: str) -> str:
    return " | ".join(text.strip().splitlines()[-3:])


# ----------------------------------------------------------------------------------- wrk


@dataclass
class Run:
    """One wrk run: throughput, latency percentiles (ms) and what went wrong, if anything."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    problem: str = ""
    #: CPU seconds per 10k requests during the run: the first process (the manager, for
    #: tui-passenger) and every process of the system together (0 when not measured).
    cpu_first: float = 0.0
    cpu_total: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problem


def to_ms(value: str) -> float:
    """``'812.00us'`` / ``'1.20ms'`` / ``'2.01s'`` → milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value.strip())
    if not match:
        raise ValueError(f"unknown wrk time {value!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_wrk(text: str) -> Run:
    """Parse ``wrk --latency`` output; a run with errors or non-2xx answers is not ok."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    total = re.search(r"^\s+(\d+) requests in", text, re.M)
    if not (rps and p50 and p99 and total):
        return Run(0, 0, 0, 0, 0, 0, f"could not parse wrk output: {tail_text(text)}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = int(bad[1]) if bad else 0
    socket_errors = sum(int(g) for g in errs.groups()) if errs else 0
    problems = []
    if non_2xx:
        problems.append(f"{non_2xx} non-2xx/3xx responses")
    if socket_errors:
        problems.append(f"socket errors ({errs[0].split(': ', 1)[1]})")  # type: ignore[index]
    if int(total[1]) == 0:
        problems.append("no request completed")
    return Run(float(rps[1]), to_ms(p50[1]), to_ms(p99[1]), int(total[1]), non_2xx,
               socket_errors, "; ".join(problems))


def wrk(port: int, connections: int, duration: float) -> Run:
    """One ``wrk -t1 --latency`` run against 127.0.0.1:port (bounded by a timeout)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency",
            f"http://127.0.0.1:{port}/"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired:
        return Run(0, 0, 0, 0, 0, 0, "wrk did not finish in time")
    return parse_wrk(done.stdout + done.stderr)


# ------------------------------------------------------------------ c=1: proxy vs worker

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n\r\n"


def get_once(sock: socket.socket) -> bool:
    """Send one GET on a keep-alive connection, read the whole response; True if 200 and the
    connection can be reused."""
    sock.sendall(REQUEST)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = int(headers.get("content-length", "-1"))
    if length < 0:
        raise ConnectionError("response without Content-Length")
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    if lines[0].split()[1] != "200":
        raise ConnectionError(f"answered {lines[0]!r}")
    return headers.get("connection", "").lower() != "close"


def sequential(connect: Callable[[], socket.socket], duration: float) -> dict[str, Any]:
    """Sequential keep-alive GETs for ``duration`` seconds (after a short warm-up): p50/p99."""
    times: list[float] = []
    reconnects = errors = 0
    sock = connect()
    try:
        end_warm = time.monotonic() + min(1.0, duration / 3)
        end = end_warm + duration
        while (now := time.monotonic()) < end:
            t0 = time.perf_counter()
            try:
                reusable = get_once(sock)
            except OSError as exc:
                errors += 1
                if errors > 10:
                    raise Skip(f"too many errors ({exc})") from exc
                reusable = False
            else:
                if now >= end_warm:
                    times.append(time.perf_counter() - t0)
            if not reusable:
                sock.close()
                sock, reconnects = connect(), reconnects + 1
    finally:
        sock.close()
    if len(times) < 10:
        raise Skip(f"only {len(times)} requests completed")
    q = statistics.quantiles(times, n=100, method="inclusive")
    return {"requests": len(times), "p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3,
            "errors": errors, "reconnects": reconnects}


def tcp_connector(port: int) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    return connect


def unix_connector(path: str) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(path)
        return sock
    return connect


def worker_socket(pid: int) -> str:
    """The Unix socket ``w<pid>.sock`` one of tui-passenger's worker processes listens on."""
    try:
        import psutil
    except ImportError as exc:
        raise Skip("psutil is not importable") from exc
    for child in psutil.Process(pid).children(recursive=True):
        try:
            conns = (child.net_connections("unix") if hasattr(child, "net_connections")
                     else child.connections("unix"))
        except psutil.Error:
            continue
        for conn in conns:
            if isinstance(conn.laddr, str) and os.path.basename(conn.laddr) == f"w{child.pid}.sock":
                return conn.laddr
    raise Skip(f"no worker socket w<pid>.sock found among the children of pid {pid}")


def wrk_c1(port: int, duration: float) -> dict[str, Any]:
    """``wrk -c1`` as a dict, or the reason it failed."""
    run = wrk(port, 1, duration)
    return asdict(run) if run.ok else {"skipped": f"wrk: {run.problem}"}


def latency_c1(tp: Server, ready: bool, duration: float) -> dict[str, Any]:
    """c=1 through the proxy (wrk and the python client) and straight to one worker."""
    out: dict[str, Any] = {}
    parts: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("worker_unix_python", lambda: sequential(unix_connector(worker_socket(tp.proc.pid)),
                                                  duration))]
    if ready:
        parts += [("proxy_tcp_python", lambda: sequential(tcp_connector(tp.port), duration)),
                  ("proxy_wrk_c1", lambda: wrk_c1(tp.port, duration))]
    else:
        out["proxy_tcp_python"] = out["proxy_wrk_c1"] = {"skipped": "proxy not answering"}
    for name, measure in parts:
        try:
            out[name] = measure()
        except (Skip, OSError) as exc:
            why = str(exc) if isinstance(exc, Skip) else f"{type(exc).__name__}: {exc}"
            out[name] = {"skipped": why}
    proxy, worker = out["proxy_tcp_python"], out["worker_unix_python"]
    if "p50_ms" in proxy and "p50_ms" in worker:
        out["added_p50_ms"] = proxy["p50_ms"] - worker["p50_ms"]
    return out


# --------------------------------------------------------------------------- reporting


def version_info() -> dict[str, str]:
    """nproc, CPU model, the servers' python and the versions of the servers themselves."""
    cpu = "?"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip()
                   for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    probe = ("import sys, importlib.metadata as m\nprint(sys.version.split()[0])\n"
             "for n in ('gunicorn', 'aiohttp', 'tui-passenger', 'uvicorn'):\n"
             "    try: print(m.version(n))\n    except m.PackageNotFoundError: print('-')\n")
    found = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True).stdout.split()
    py, gunicorn, aiohttp, tp, uvicorn = (found + ["?"] * 5)[:5]
    passenger = "-"
    if shutil.which("passenger"):
        text = subprocess.run(["passenger", "--version"], capture_output=True, text=True).stdout
        passenger = text.split()[-1] if text.split() else "?"
    return {"nproc": str(len(os.sched_getaffinity(0))), "cpu": cpu, "python": py,
            "tui_passenger": tp, "gunicorn": gunicorn, "uvicorn": uvicorn,
            "passenger": passenger, "aiohttp": aiohttp}


def summarize(runs: list[Run | None]) -> dict[str, Any]:
    good = [r for r in runs if r and r.ok]
    if not good:
        return {"ok_rounds": 0, "failed_rounds": len(runs)}
    rps, p50, p99 = ([getattr(r, f) for r in good] for f in ("rps", "p50_ms", "p99_ms"))
    return {"ok_rounds": len(good), "failed_rounds": len(runs) - len(good),
            "rps_median": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
            "p50_ms": statistics.median(p50), "p50_min": min(p50), "p50_max": max(p50),
            "p99_ms": statistics.median(p99), "p99_min": min(p99), "p99_max": max(p99),
            "cpu_total": statistics.median(r.cpu_total for r in good),
            "cpu_first": statistics.median(r.cpu_first for r in good)}


def ratio(results: dict[str, list[Run | None]], top: str, bottom: str) -> dict[str, Any]:
    """top / bottom (req/s, p50 and p99), per round where both ran cleanly, then the median
    (and the min–max of the per-round req/s ratios); {} when no round has both."""
    rounds = max(len(results.get(top, [])), len(results.get(bottom, [])))
    pairs = [(a, b) for a, b in zip(results.get(top, [None] * rounds),
                                    results.get(bottom, [None] * rounds), strict=True)
             if a and b and a.ok and b.ok]
    if not pairs:
        return {}
    rps = [a.rps / b.rps for a, b in pairs]
    return {"rps": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
            "p50": statistics.median(a.p50_ms / b.p50_ms for a, b in pairs),
            "p99": statistics.median(a.p99_ms / b.p99_ms for a, b in pairs),
            "cpu_total": statistics.median(a.cpu_total / b.cpu_total if b.cpu_total else 0.0
                                           for a, b in pairs),
            "rounds": len(pairs), "of": top}


def ratios(results: dict[str, list[Run | None]]) -> dict[str, dict[str, Any]]:
    """The headless tui-passenger serving the same app / each baseline (``PAIRS``; the
    dashboard is compared with headless separately)."""
    return {key: r for key in results if key in PAIRS
            if (r := ratio(results, PAIRS[key], key))}


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM behaves like Ctrl+C: unwind through the ``finally`` that stops the servers."""
    raise KeyboardInterrupt


def start_all(servers: dict[str, Server], status: dict[str, str], timeout: float,
              connections: int, warmup: float = 2.0) -> list[str]:
    """Start every system not already skipped, wait for each, warm it up (``warmup`` s of
    wrk); returns the keys that can be measured."""
    live = [s for k, s in servers.items() if k not in status]
    for server in live:
        server.start()
    for server in live:
        try:
            server.wait_ready(timeout)
            warm = wrk(server.port, connections, warmup)
            status[server.key] = "ok" if warm.ok else f"warm-up problem: {warm.problem}"
            server.remember()
        except Skip as exc:
            status[server.key] = f"failed: {exc}"
        print(f"{server.name:<{W}} port {server.port:<6} {status[server.key]}")
    return [k for k in servers if status.get(k, "").startswith(("ok", "warm-up"))]


def measure(servers: dict[str, Server], running: list[str], args: argparse.Namespace
            ) -> dict[str, list[Run | None]]:
    """The rounds: every running system once per round, the order rotated each round."""
    results: dict[str, list[Run | None]] = {k: [] for k in running}
    for rnd in range(args.rounds if running else 0):
        shift = rnd % len(running)
        for key in running[shift:] + running[:shift]:
            first, total = servers[key].cpu_seconds()
            run = wrk(servers[key].port, args.connections, args.duration)
            if run.requests:
                first_after, total_after = servers[key].cpu_seconds()
                run.cpu_first = (first_after - first) * 10_000 / run.requests
                run.cpu_total = (total_after - total) * 10_000 / run.requests
            if servers[key].died():
                run.problem = f"server {servers[key].died()}"
            results[key].append(run)
            note = f"  FAILED: {run.problem}" if not run.ok else ""
            print(f"round {rnd + 1} {SYSTEMS[key]:<{W}} {run.rps:>10.0f} req/s  "
                  f"p50 {run.p50_ms:7.3f} ms  p99 {run.p99_ms:7.3f} ms  "
                  f"CPU-s/10k {run.cpu_total:5.2f} (first process {run.cpu_first:5.2f}){note}")
    return results


def report(keys: list[str], status: dict[str, str], results: dict[str, list[Run | None]],
           c1: dict[str, Any], rounds: int) -> dict[str, Any]:
    """Print the summary table, the ratios and the c=1 figures; return them for --json."""
    summary = {k: summarize(v) for k, v in results.items()}
    print(f"\n{'system':<{W}} {'req/s (median)':>14} {'min–max':>17} {'p50 ms':>8} {'p99 ms':>8}"
          f"  {'CPU-s/10k':>9}  rounds ok")
    for key in keys:
        s = summary.get(key)
        if not s or not s["ok_rounds"]:
            why = status.get(key, "no clean round")
            why = why if why.startswith("skipped") else "failed, see above"
            print(f"{SYSTEMS[key]:<{W}} {why}")
            continue
        spread = f"{s['rps_min']:.0f}–{s['rps_max']:.0f}"
        print(f"{SYSTEMS[key]:<{W}} {s['rps_median']:>14.0f} {spread:>17} {s['p50_ms']:>8.3f} "
              f"{s['p99_ms']:>8.3f}  {s['cpu_total']:>9.2f}  {s['ok_rounds']}/{rounds}")
    vs_tp = ratios(results)
    for key, r in vs_tp.items():
        pair = f"{SYSTEMS[r['of']]} / {SYSTEMS[key]}"
        print(f"{pair:<{2 * W}} req/s ×{r['rps']:.2f}   p50 ×{r['p50']:.2f}   "
              f"p99 ×{r['p99']:.2f}   CPU/request ×{r['cpu_total']:.2f}   "
              f"(median of {r['rounds']} per-round ratios)")
    dash = ratio(results, "tpdash", "tp")
    if dash:
        print(f"tui-passenger dashboard / tui-passenger headless  req/s ×{dash['rps']:.2f}   "
              f"p50 ×{dash['p50']:.2f}   (median of {dash['rounds']} per-round ratios; "
              f"target ≥ ×{DASHBOARD_TARGET:.2f})")
    if c1:
        print("\nc=1, sequential keep-alive GETs (python client unless noted):")
        for name, value in c1.items():
            if isinstance(value, dict) and "skipped" in value:
                print(f"  {name:<20} skipped: {value['skipped']}")
            elif isinstance(value, dict):
                print(f"  {name:<20} p50 {value['p50_ms']:.3f} ms  p99 {value['p99_ms']:.3f} ms"
                      + (f"  ({value['rps']:.0f} req/s)" if "rps" in value else ""))
        if "added_p50_ms" in c1:
            print(f"  added by the proxy (p50): {c1['added_p50_ms'] * 1000:.0f} µs")
    return {"summary": summary, "ratios_vs_tp": vs_tp, "ratio_dashboard_vs_headless": dash}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes per system")
    parser.add_argument("--connections", "-c", type=int, default=16, help="wrk connections")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(SYSTEMS),
                        help=f"comma-separated subset of {','.join(SYSTEMS)}")
    parser.add_argument("--startup-timeout", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of wrk on each system before the rounds")
    parser.add_argument("--no-c1", action="store_true",
                        help="skip the c=1 proxy-vs-worker latency test after the rounds")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--base", metavar="REV",
                        help="also run tui-passenger as of git revision REV (A/B of a change)")
    parser.add_argument("--install", action="store_true",
                        help="first run 'apt-get install -y wrk passenger tmux' (needs root)")
    args = parser.parse_args()
    only = args.only.split(",") + (["tpbase"] if args.base else [])
    keys = [k for k in SYSTEMS if k in only and (k != "tpbase" or args.base)]
    if args.install:
        apt_install(["wrk", "passenger", "tmux"])
    if not shutil.which("wrk"):
        print("wrk not found: install it with 'apt-get install wrk' (or rerun with --install)")
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored

    status: dict[str, str] = {}
    results: dict[str, list[Run | None]] = {}
    c1: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="tp-bench-"))
    servers = make_servers(keys, args.workers, tmp,
                           base_tree(args.base, tmp) if args.base else None)
    try:
        if "passenger" in servers and not shutil.which("passenger"):
            status["passenger"] = ("skipped: Debian package 'passenger' not installed "
                                   "(apt-get install passenger, or rerun with --install)")
        if "tpdash" in servers and not shutil.which("tmux"):
            status["tpdash"] = ("skipped: tmux not installed, the dashboard needs a terminal "
                                "(apt-get install tmux, or rerun with --install)")
        elif "tpdash" in servers and importlib.util.find_spec("psutil") is None:
            status["tpdash"] = (f"skipped: psutil not importable by {sys.executable}, needed "
                                "to find and stop the dashboard's processes")
        for key, (module, spec) in PACKAGES.items():
            if key in servers and key not in status:
                try:
                    ensure_package(module, spec)
                except (Skip, subprocess.TimeoutExpired) as exc:
                    status.update({k: f"skipped: {exc}" for k, (m, _) in PACKAGES.items()
                                   if m == module and k in servers})
        machine = version_info()
        print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
        print(f"load: wrk -t1 -c{args.connections} -d{args.duration:g}s, {args.rounds} rounds, "
              f"{args.workers} workers each, apps sample_apps/hello_wsgi and hello_asgi\n")
        for key, why in status.items():
            print(f"{SYSTEMS[key]:<{W}} {why}")
        running = start_all(servers, status, args.startup_timeout, args.connections,
                            args.warmup)
        results = measure(servers, running, args)
        tp = servers.get("tp")
        if tp and tp.proc and not tp.died() and not args.no_c1:
            c1 = latency_c1(tp, status.get("tp") == "ok", args.duration)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        for server in servers.values():
            server.stop()
        drop_base_tree(tmp)
        shutil.rmtree(tmp, ignore_errors=True)

    figures = report(keys, status, results, c1, args.rounds)
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine, "params": {k: str(v) for k, v in vars(args).items()
                                              if k != "json"},  # where this file is
            "systems": {k: SYSTEMS[k] for k in keys}, "pairs": PAIRS,
            "asgi": [k for k in keys if k in ASGI_SYSTEMS],
            "status": status, **figures, "latency_c1": c1,
            "rounds": {k: [asdict(r) if r else None for r in v] for k, v in results.items()},
        }, indent=2))
        print(f"\nresults written to {args.json}")
    return 0 if any(s["ok_rounds"] for s in figures["summary"].values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every server was stopped", file=sys.stderr)
        sys.exit(130)
