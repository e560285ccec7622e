"""A private memcached for tests: started on a free loopback port, stopped afterwards.

Import the fixture into a test module (``from tests.memcached import memcached_addr``).
Nothing relies on a system memcached service; without the ``memcached`` binary the tests
that use the fixture are skipped (``.ci/run`` installs it from Debian when it can).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

#: Pids of the memcached processes started here, so checks for leftover children can
#: tell them from leaked workers while they are meant to run.
RUNNING_PIDS: set[int] = set()

START_TIMEOUT = 5.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
            conn.sendall(b"version\r\n")
            return conn.recv(64).startswith(b"VERSION ")
    except OSError:
        return False


@contextlib.contextmanager
def memcached_server() -> Iterator[str]:
    """A running memcached; yields its ``"127.0.0.1:PORT"``."""
    binary = shutil.which("memcached")
    if binary is None:
        pytest.skip("memcached is not installed (apt-get install memcached; .ci/run does it)")
    errors = []
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = _free_port()
        cmd = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "16", "-c", "256"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]  # memcached refuses to run as root without -u
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        RUNNING_PIDS.add(proc.pid)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while proc.poll() is None and not _accepts(port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"memcached on port {port} did not accept connections "
                                       f"within {START_TIMEOUT:g} s")
                time.sleep(0.02)
            if proc.poll() is not None:
                errors.append(proc.stderr.read().decode(errors="replace").strip())
                continue
            yield f"127.0.0.1:{port}"
            return
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            proc.stderr.close()
            RUNNING_PIDS.discard(proc.pid)
    raise RuntimeError(f"memcached would not start: {errors}")


# Module scope, not session scope: other test modules check after each test that no
# child process is left (tests/conftest.py assert_no_children), and a memcached kept for
# the whole session would be one. Starting one takes a few milliseconds.
@pytest.fixture(scope="module")
def memcached_addr() -> Iterator[str]:
    """``"127.0.0.1:PORT"`` of a memcached running for the tests of one module."""
    with memcached_server() as addr:
        yield addr
