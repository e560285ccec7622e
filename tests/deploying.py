"""What the deployment tests share: a tiny app that reports what it sees, a config writer,
and a ``tui-passenger --headless`` subprocess whose log lines can be waited for."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

PYTHON = sys.executable
REPO = Path(__file__).resolve().parent.parent

#: The app: its pid, REMOTE_ADDR, the forwarding headers it got and the environment
#: variables that must not leak from systemd into the apps' processes.
APP = '''
import json, os

LEAKS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def application(environ, start_response):
    body = json.dumps({
        "pid": os.getpid(), "remote_addr": environ.get("REMOTE_ADDR"),
        "xff": environ.get("HTTP_X_FORWARDED_FOR"),
        "proto": environ.get("HTTP_X_FORWARDED_PROTO"),
        "request_id": environ.get("HTTP_X_REQUEST_ID"),
        "leaked": [name for name in LEAKS if name in os.environ],
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def short_dir(mode: int = 0o700) -> Path:
    """A fresh directory with a short path (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="tp-d-", dir="/tmp"))
    path.chmod(mode)
    return path


def write_config(directory: Path, server: str, *, min_instances: int = 1) -> Path:
    """A passenger.toml in ``directory`` serving the app above; ``server`` holds the
    [server] lines saying where to listen."""
    app = directory / "app"
    app.mkdir(exist_ok=True)
    (app / "app.py").write_text(APP)
    config = directory / "passenger.toml"
    config.write_text(
        "[server]\naccess_log = false\nallow_root = true\nshutdown_timeout = 5\n"
        f'admin_socket = "{directory / "admin" / "admin.sock"}"\n{server}\n'
        f'[[app]]\nname = "probe"\nroot = "{app}"\nentry = "app:application"\n'
        f"min_instances = {min_instances}\nstart_timeout = 20\n")
    return config


class Instance:
    """A ``tui-passenger`` subprocess; its stderr is read in a thread and kept."""

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str] | None = None,
                 command: Sequence[str] | None = None, pass_fds: Sequence[int] = (),
                 stdin: int | None = None, stdout: int | None = None) -> None:
        self.proc = subprocess.Popen(
            command or [PYTHON, "-m", "tui_passenger", *args], stderr=subprocess.PIPE,
            stdin=stdin, stdout=stdout, text=True, pass_fds=pass_fds, cwd=REPO,
            env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # end of output
            self._changed.notify_all()

    @property
    def text(self) -> str:
        """Everything written to stderr so far."""
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0, count: int = 1) -> list[str]:
        """Wait for ``count`` lines matching ``pattern``; fails (with the log) if the output
        ends or the time is up first."""
        regex = re.compile(pattern)
        with self._changed:
            def found() -> list[str]:
                return [m.group(0) for line in self.lines if (m := regex.search(line))]

            done = self._changed.wait_for(
                lambda: len(found()) >= count or (self.lines and self.lines[-1] == ""),
                timeout)
            matches = found()
            assert done and len(matches) >= count, f"no {pattern!r} in:\n{self.text}"
            return matches

    def finish(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit (all its output read); returns its exit status."""
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def stop(self) -> int:
        """SIGTERM, then wait for the exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.finish()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
