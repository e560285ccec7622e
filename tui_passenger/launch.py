"""The dashboard's server as a process of its own.

``tui-passenger`` (the default command) execs ``tui-passenger --headless`` with the same
options, in a session of its own (the terminal's signals are the dashboard's), logging to a
file; waits until that process listens, which it says over an inherited pipe; then attaches
to it over the admin socket, as ``attach`` does. So the dashboard's rendering never runs
on the proxy's event loop, and the server can be left running (detached) like a tmux
session. No UI code here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

#: What the server writes on the pipe once it listens; anything else is the problem.
READY = "ready"


def core_argv(args: argparse.Namespace, config: str, log_file: Path, ready_fd: int) -> list[str]:
    """The command line of the server process: headless, the same config and overrides,
    logging to ``log_file``, reporting its start on ``ready_fd``."""
    argv = [sys.executable, "-m", "tui_passenger", "--headless", "-c", config,
            "--log-file", os.fspath(log_file), "--ready-fd", str(ready_fd)]
    for option in ("port", "address", "spawn_method", "log_level"):
        value = getattr(args, option)
        if value is not None:
            argv += ["--" + option.replace("_", "-"), str(value)]
    return argv


def report_start(fd: int | None, problem: str) -> None:
    """The server's side: say how the start went ("" once listening, else the problem) on
    the pipe the dashboard gave it, then close it. Nothing without a pipe."""
    if fd is None:
        return
    text = problem or READY
    try:
        os.write(fd, text.encode("utf-8", "replace") + b"\n")
    except OSError:
        pass  # the dashboard went away: nobody is waiting
    finally:
        os.close(fd)


def start_core(args: argparse.Namespace, config: str,
               log_file: Path) -> tuple[subprocess.Popen[bytes], str | None]:
    """Exec the server process and wait until it listens (an event: the pipe is written,
    or closed by its exit). Returns the process and None when it listens, else the
    problem, once the process has exited (its status is the exit status to give)."""
    read_fd, write_fd = os.pipe()
    try:
        with open(log_file, "ab") as log:  # output before logging is set up, tracebacks
            process = subprocess.Popen(
                core_argv(args, config, log_file, write_fd), stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, pass_fds=(write_fd,), start_new_session=True)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)  # ours: the pipe ends (EOF) when the server closes its copy
    try:
        answer = _read_all(read_fd).strip()
    except BaseException:  # Ctrl+C while it starts: do not leave it behind
        process.terminate()
        process.wait()
        raise
    finally:
        os.close(read_fd)
    if answer == READY:
        return process, None
    status = process.wait()
    return process, answer or (f"the server process exited with status {status} before "
                               f"it listened; see {log_file}")


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def detached_message(where: str, pid: int | None, log_file: Path | None) -> str:
    """What the terminal says after the dashboard left its server running; ``where`` is
    how the commands find it (``-c FILE`` or ``--admin-socket PATH``)."""
    return (f"tui-passenger keeps running in the background (pid {pid}), logging to "
            f"{log_file or 'its log'}\n"
            f"  see it again:  tui-passenger attach {where}\n"
            f"  stop it:       tui-passenger ctl stop {where}   (or kill -TERM {pid})")
