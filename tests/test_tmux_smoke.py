"""The real ``tui-passenger`` dashboard in a real terminal (tmux): start, scale up, quit clean.

tmux runs on its own socket in the test's temporary directory with no config file, so
neither a developer's tmux server nor their ``.tmux.conf`` is involved.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
PROBE_APP = REPO / "tests" / "apps" / "proxy_probe"
APP_NAME = "smokeapp"  # appears nowhere else on screen (not in any path)

T = TypeVar("T")

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (apt-get install tmux)")


class Tmux:
    """One tmux server on a private socket, holding one session."""

    def __init__(self, socket: Path, session: str) -> None:
        self.socket = socket
        self.session = session

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-S", str(self.socket), "-f", os.devnull, *args],
                              capture_output=True, text=True, timeout=10, check=check)

    def start(self, command: list[str], *, cwd: Path) -> None:
        # remain-on-exit is set in the same client call, before the command can exit, so
        # the last screen and the exit status survive the process for the assertions.
        self.run("new-session", "-d", "-s", self.session, "-x", "100", "-y", "30",
                 "-c", str(cwd), shlex.join(command),
                 ";", "set-option", "-t", self.session, "remain-on-exit", "on")

    def screen(self) -> str:
        result = self.run("capture-pane", "-p", "-t", self.session, check=False)
        return result.stdout if result.returncode == 0 else ""

    def send(self, key: str) -> None:
        self.run("send-keys", "-t", self.session, "-l", key)

    def pane(self, fmt: str) -> str:
        return self.run("display-message", "-p", "-t", self.session, fmt).stdout.strip()

    def pane_dead(self) -> bool:
        result = self.run("display-message", "-p", "-t", self.session, "#{pane_dead}",
                          check=False)
        # No session at all counts as ended too.
        return result.returncode != 0 or result.stdout.strip() == "1"

    def exit_status(self) -> str:
        """"status/signal" of the dead pane ("0/", "/15"), "" until tmux knows it."""
        # Two calls: tmux 3.3 prints nothing for "#{pane_dead_status}/#{pane_dead_signal}".
        status, signal = (
            self.run("display-message", "-p", "-t", self.session, fmt, check=False)
            for fmt in ("#{pane_dead_status}", "#{pane_dead_signal}"))
        if status.returncode or signal.returncode:
            return ""
        text = f"{status.stdout.strip()}/{signal.stdout.strip()}"
        return "" if text == "/" else text

    def server_pid(self) -> int | None:
        result = self.run("display-message", "-p", "#{pid}", check=False)
        return int(result.stdout) if result.returncode == 0 and result.stdout.strip() else None

    def kill(self) -> None:
        self.run("kill-server", check=False)


def wait_for(probe: Callable[[], T | None], timeout: float, what: str,
             describe: Callable[[], str] = lambda: "") -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{describe()}")
        time.sleep(0.1)


def status(admin_socket: Path) -> dict | None:
    """``tui-passenger status --json``, or None while the instance does not answer."""
    if not admin_socket.exists():
        return None
    result = subprocess.run(
        [sys.executable, "-m", "tui_passenger", "status", "--json",
         "--admin-socket", str(admin_socket)],
        capture_output=True, text=True, timeout=15, cwd=REPO)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)


def app_state(state: dict | None) -> dict | None:
    if state is None:
        return None
    return next((app for app in state["apps"] if app["name"] == APP_NAME), None)


def pids_of(state: dict) -> set[int]:
    """The manager, the app's preloader and its workers."""
    pids = {state["server"]["pid"]}
    app = app_state(state)
    if app is not None:
        if app.get("preloader"):
            pids.add(app["preloader"]["pid"])
        pids.update(process["pid"] for process in app["processes"])
    return pids


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts; ours are reaped here)."""
    try:
        if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return True
    # conftest makes this process a subreaper, so an escaped process would end up here.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return True


def write_config(tmp_path: Path, admin_socket: Path) -> Path:
    config = tmp_path / "passenger.toml"
    config.write_text(
        "[server]\n"
        "allow_root = true\n"
        'address = "127.0.0.1"\n'
        "port = 0\n"
        f"admin_socket = {json.dumps(str(admin_socket))}\n"
        "access_log = false\n"
        "shutdown_timeout = 5\n"
        "\n"
        "[[app]]\n"
        f'name = "{APP_NAME}"\n'
        f"root = {json.dumps(str(PROBE_APP))}\n"
        'entry = "app:application"\n'
        "min_instances = 1\n"
        "start_timeout = 30\n")
    return config


def clean_up(tmux: Tmux, seen: set[int], children_before: set[int],
             tmux_pid: int | None) -> None:
    """Kill the tmux server and, on a failure, whatever the test started that is still
    running (conftest makes this process a subreaper: escapees are re-parented here)."""
    tmux.kill()
    adopted = [child for child in psutil.Process().children()
               if child.pid not in children_before]
    for pid in seen | {child.pid for child in adopted} - {tmux_pid}:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    for child in adopted:  # reap, rather than leave zombies behind
        with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
            child.wait(timeout=5)


def test_dashboard_scales_up_and_quits_cleanly(tmp_path: Path) -> None:
    admin_socket = tmp_path / "admin.sock"
    config = write_config(tmp_path, admin_socket)
    tmux = Tmux(tmp_path / "tmux.sock", f"tp-smoke-{uuid.uuid4().hex[:8]}")
    seen: set[int] = set()
    tmux_pid: int | None = None
    # conftest makes the test process a subreaper: whatever escapes the manager (and the
    # daemonized tmux server) is re-parented here. Those are cleaned up in the finally.
    children_before = {child.pid for child in psutil.Process().children()}

    def screen() -> str:
        return "last screen:\n" + tmux.screen()

    def observe() -> dict | None:
        if tmux.pane_dead():  # fail now, with the traceback on screen, not at the timeout
            pytest.fail(f"tui-passenger exited early (exit status/signal "
                        f"{tmux.exit_status() or 'unknown'})"
                        f"\n{screen()}")
        state = status(admin_socket)
        if state is not None:
            seen.update(pids_of(state))
        return state

    try:
        tmux.start([sys.executable, "-m", "tui_passenger", "-c", str(config)], cwd=REPO)
        tmux_pid = tmux.server_pid()

        # 1. The dashboard is up: the app's worker is ready and its row is on screen.
        def one_worker() -> dict | None:
            app = app_state(observe())
            ready = [p for p in app["processes"] if p["state"] == "ready"] if app else []
            return app if ready else None

        app = wait_for(one_worker, 20, "a ready worker in `status --json`", screen)
        worker = app["processes"][0]["pid"]

        def dashboard_shows_worker() -> bool:
            text = tmux.screen()
            return APP_NAME in text and re.search(rf"(?m)^.*\b{worker}\b", text) is not None

        wait_for(dashboard_shows_worker, 20,
                 f"the dashboard to show {APP_NAME!r} and worker pid {worker}", screen)

        # 2. "+" keeps one more worker warm.
        tmux.send("+")

        def two_workers() -> dict | None:
            app = app_state(observe())
            if app and len([p for p in app["processes"] if p["state"] == "ready"]) >= 2:
                return app
            return None

        app = wait_for(two_workers, 20, "a second ready worker after '+'", screen)
        assert len(app["processes"]) == 2, app["processes"]
        observe()  # every pid, including the new worker's, for the check below

        # 3. "q" quits: the process in the pane ends, with status 0.
        tmux.send("q")
        wait_for(tmux.pane_dead, 20, "the dashboard to exit after 'q'", screen)
        # tmux 3.3 marks the pane dead when the terminal closes, and may never learn the
        # exit status if that happens before the process exits: check it when it is known.
        deadline = time.monotonic() + 2
        while not tmux.exit_status() and time.monotonic() < deadline:
            time.sleep(0.05)
        exit_status = tmux.exit_status()
        assert exit_status in ("", "0/"), f"exit status/signal {exit_status}\n{screen()}"

        # 4. Nothing is left behind.
        assert len(seen) >= 4, f"expected manager, preloader and two workers, saw {seen}"
        wait_for(lambda: all(gone(pid) for pid in seen), 5,
                 "every process to have exited",
                 lambda: "still alive: " + ", ".join(
                     str(pid) for pid in sorted(seen) if not gone(pid)))
        assert not admin_socket.exists(), "the admin socket was not removed"
    finally:
        clean_up(tmux, seen, children_before, tmux_pid)


def test_detach_then_attach_again_and_quit_stops_the_server(tmp_path: Path) -> None:
    admin_socket = tmp_path / "admin.sock"
    config = write_config(tmp_path, admin_socket)
    tmux = Tmux(tmp_path / "tmux.sock", f"tp-detach-{uuid.uuid4().hex[:8]}")
    seen: set[int] = set()
    children_before = {child.pid for child in psutil.Process().children()}
    tmux_pid: int | None = None

    def screen() -> str:
        return "last screen:\n" + tmux.screen()

    def ready_worker() -> dict | None:
        state = status(admin_socket)
        app = app_state(state)
        if state is None or not app or not any(p["state"] == "ready" for p in app["processes"]):
            return None
        seen.update(pids_of(state))
        return state

    def on_screen(text: str) -> Callable[[], bool]:
        return lambda: text in tmux.screen()

    try:
        # 1. The dashboard starts the server (a process of its own) and shows it.
        tmux.start([sys.executable, "-m", "tui_passenger", "-c", str(config)], cwd=REPO)
        tmux_pid = tmux.server_pid()
        state = wait_for(ready_worker, 20, "a ready worker", screen)
        manager = state["server"]["pid"]
        wait_for(on_screen(APP_NAME), 20, "the dashboard", screen)

        # 2. "d" detaches: the dashboard exits 0 and says how to come back; it serves on.
        tmux.send("d")
        wait_for(on_screen("keeps running in the background"), 20, "the detach message",
                 screen)
        assert f"tui-passenger attach -c {config}" in tmux.screen().replace("\n", "")
        assert f"ctl stop -c {config}" in tmux.screen().replace("\n", "")
        assert status(admin_socket)["server"]["pid"] == manager

        # 3. attach shows it again; "q" there stops it, as the first dashboard would have.
        tmux.kill()
        tmux.start([sys.executable, "-m", "tui_passenger", "attach", "-c", str(config)],
                   cwd=REPO)
        tmux_pid = tmux.server_pid()
        wait_for(on_screen(APP_NAME), 20, "the attached dashboard", screen)
        tmux.send("q")
        wait_for(tmux.pane_dead, 20, "the dashboard to exit after 'q'", screen)
        wait_for(lambda: all(gone(pid) for pid in seen), 15, "every process to have exited",
                 lambda: "still alive: " + ", ".join(
                     str(pid) for pid in sorted(seen) if not gone(pid)))
        assert not admin_socket.exists(), "the admin socket was not removed"
    finally:
        clean_up(tmux, seen, children_before, tmux_pid)
