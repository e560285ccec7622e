"""The systems under test of bench/throughput.py and bench/soak.py: a server process group
started in its own session (:class:`Server`), or tui-passenger with its dashboard open in a
detached session of a private tmux server (:class:`TmuxServer`); both know every process of
their system, to read its CPU time and to stop all of it."""

from __future__ import annotations

import contextlib
import http.client
import os
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    name: str
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
