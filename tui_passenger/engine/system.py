"""Process-wide settings the manager needs from the OS (Linux)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import shutil
import tempfile
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
#: Open files the manager asks for: a client connection and a worker connection per
#: request in flight, so 1,000 clients need over 2,000 (the usual soft limit is 1,024).
WANTED_OPEN_FILES = 65536


def become_subreaper() -> bool:
    """Adopt orphaned descendants (forked workers whose preloader has exited).

    Without this they would be re-parented to PID 1, which may never reap them; with it the
    manager reaps them itself and learns their exit status.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        result: int = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        return False
    return result == 0


def raise_open_files_limit(wanted: int = WANTED_OPEN_FILES) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (never above the
    hard limit, never lowered), as nginx's worker_rlimit_nofile; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return soft
        return target
    return soft


class RuntimeDir:
    """A private (0700) directory for worker sockets, removed on close."""

    def __init__(self, prefix: str = "tui-passenger-") -> None:
        base = os.environ.get("XDG_RUNTIME_DIR")
        # As root, apps may run as other users who must reach their socket directory:
        # a 0700 XDG_RUNTIME_DIR would shut them out, the temp dir does not.
        if not base or not os.access(base, os.W_OK) or os.geteuid() == 0:
            base = None
        # Unix socket paths are limited to 107 bytes: keep the directory short.
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        if len(str(self.path)) > 80:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))

    def close(self) -> None:
        """Remove the directory and whatever sockets are left in it."""
        shutil.rmtree(self.path, ignore_errors=True)
