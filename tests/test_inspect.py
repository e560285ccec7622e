"""tui_passenger.inspect against real processes: memory, CPU, fd sharing through fork, sampler."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import assert_no_children
from tui_passenger.inspect import (
    CpuMeter,
    FdEntry,
    MemoryUsage,
    ProcessInfo,
    Sampler,
    SocketTable,
    direct_estimate,
    inventory,
    read_fds,
    read_smaps_rollup,
    read_status,
    same_description,
    smart_total,
)

WAIT = 5.0  # upper bound for anything to happen; only reached when a test fails
STDIO = frozenset({0, 1, 2})

# Every child prints one JSON line when ready, then blocks reading stdin until the test closes it.
IDLE = "import sys, json\nprint(json.dumps({}), flush=True)\nsys.stdin.read()\n"


class Children:
    """Python child processes that report readiness on stdout; all killed and reaped at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.grandchildren: list[int] = []

    def spawn(self, code: str, *args: str) -> tuple[subprocess.Popen[str], Any]:
        """Start ``python -c code args``; returns it and the JSON it printed when ready."""
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], WAIT)
        assert ready, "child did not start in time"
        line = proc.stdout.readline()
        assert line, f"child exited early with {proc.wait(WAIT)}"
        return proc, json.loads(line)

    def close(self) -> None:
        """Close every stdin (children exit on EOF); kill whatever does not exit in time."""
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]
        for proc in self.procs:
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                for pid in self.grandchildren:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                proc.kill()
                proc.wait(WAIT)
            proc.stdout.close()  # type: ignore[union-attr]
        for pid in self.grandchildren:  # adopted by us (subreaper) if their parent was killed
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    try:
        yield kids
    finally:
        kids.close()
    assert_no_children()


def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def proc_rollup(pid: int) -> dict[str, int]:
    """The test's own parse of smaps_rollup, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        values[name.rstrip(":")] = int(value) * 1024
    return values


ALLOCATE = """
import sys, json
block = bytearray(b"\\x01") * 50_000_000   # written, so resident and private
print(json.dumps({}), flush=True)
sys.stdin.read()
"""


def test_memory_of_a_process_holding_50_mb(children: Children) -> None:
    proc, _ = children.spawn(ALLOCATE)
    mem = read_smaps_rollup(proc.pid)
    direct = proc_rollup(proc.pid)
    assert mem.uss >= 45_000_000
    assert mem.private_dirty >= 45_000_000
    assert mem.pss <= mem.rss
    assert mem.shared == mem.rss - mem.uss
    slack = 512 * 1024  # the idle child may touch a page or two between the two reads
    assert abs(mem.rss - direct["Rss"]) <= slack
    assert abs(mem.pss - direct["Pss"]) <= slack
    assert abs(mem.uss - direct["Private_Clean"] - direct["Private_Dirty"]) <= slack
    assert abs(mem.private_dirty - direct["Private_Dirty"]) <= slack
    assert mem.swap == direct["Swap"] or abs(mem.swap - direct["Swap"]) <= slack
    assert {f.name for f in dataclasses.fields(mem)} == {"rss", "pss", "uss", "shared",
                                                         "private_dirty", "swap"}

    wait_for(lambda: read_status(proc.pid).state == "S", "the child to block on stdin")
    status = read_status(proc.pid)
    assert status.threads == 1
    assert abs(status.rss - mem.rss) <= 1024 * 1024


def test_vanished_process_raises_process_lookup_error(children: Children) -> None:
    proc, _ = children.spawn(IDLE)
    proc.stdin.close()  # type: ignore[union-attr]
    proc.wait(WAIT)
    for read in (read_smaps_rollup, read_status, read_fds):
        with pytest.raises(ProcessLookupError):
            read(proc.pid)


def test_direct_estimate_and_smart_total() -> None:
    workers = [MemoryUsage(100, 40, 20, 80, 20, 0), MemoryUsage(120, 50, 25, 95, 25, 0)]
    preloader = MemoryUsage(90, 30, 15, 75, 15, 0)
    assert direct_estimate(workers, preloader) == 220  # sum of the workers' RSS, no preloader
    assert smart_total(workers, preloader) == 120
    assert smart_total(workers, None) == 90


BUSY = """
import json, select, sys
print(json.dumps({}), flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:  # spin until the test closes stdin
    pass
"""


def test_cpu_meter_busy_and_idle(children: Children) -> None:
    busy, _ = children.spawn(BUSY)
    idle, _ = children.spawn(IDLE)
    meter = CpuMeter()
    assert meter.sample(busy.pid) == 0.0
    assert meter.sample(idle.pid) == 0.0
    time.sleep(0.5)
    idle_cpu = meter.sample(idle.pid)
    busy_cpu = meter.sample(busy.pid)
    deadline = time.monotonic() + WAIT
    while busy_cpu <= 50 and time.monotonic() < deadline:  # a loaded machine: try more windows
        time.sleep(0.5)
        busy_cpu = meter.sample(busy.pid)
    assert busy_cpu > 50
    assert idle_cpu < 10
    meter.forget(busy.pid)
    assert meter.sample(busy.pid) == 0.0  # forgotten: a first sample again


FORKING_PRELOADER = """
import json, os, socket, sys
port, log_path = int(sys.argv[1]), sys.argv[2]
conn = socket.create_connection(("127.0.0.1", port))  # "memcached", opened while loading
log = open(log_path, "a")
r, w = os.pipe()
control = socket.socketpair()  # stands for the runtime's own channel
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        sys.stdin.read()
        os._exit(0)
    kids.append(pid)
print(json.dumps({"kids": kids, "conn": conn.fileno(), "local": conn.getsockname(),
                  "log": log.fileno(), "pipe": [r, w], "control": control[0].fileno()}),
      flush=True)
sys.stdin.read()
for pid in kids:
    os.waitpid(pid, 0)
"""

OPENER = """
import json, sys
log = open(sys.argv[1], "a")
print(json.dumps({"log": log.fileno()}), flush=True)
sys.stdin.read()
"""


def by_fd(entries: list[FdEntry]) -> dict[int, FdEntry]:
    return {e.fd: e for e in entries}


def test_fork_shared_socket_file_and_pipe(children: Children, tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    log_path = tmp_path / "app.log"
    parent, info = children.spawn(FORKING_PRELOADER, str(port), str(log_path))
    children.grandchildren.extend(info["kids"])
    accepted, _ = listener.accept()
    other, other_info = children.spawn(OPENER, str(log_path))
    kid1, kid2 = info["kids"]
    own = STDIO | {info["control"]}
    processes = {
        parent.pid: ProcessInfo("preloader", "app", own),
        kid1: ProcessInfo("worker", "app", own),
        kid2: ProcessInfo("worker", "app", own),
        other.pid: ProcessInfo("worker", "app", STDIO),
    }
    try:
        found = inventory(processes)
        alone = inventory({parent.pid: processes[parent.pid]})  # only the given pids compared
        # We hold the write end of the children's stdin pipe, they the read end: not shared.
        manager = inventory({os.getpid(): ProcessInfo("manager"), **processes})[os.getpid()]
    finally:
        accepted.close()
        listener.close()
    assert set(found) == set(processes)
    forked = [parent.pid, kid1, kid2]
    for pid in forked:
        fds = by_fd(found[pid])
        others = tuple(sorted(set(forked) - {pid}))

        conn = fds[info["conn"]]
        assert conn.kind == "tcp"
        assert conn.target == f"127.0.0.1:{info['local'][1]} → 127.0.0.1:{port}"
        assert conn.level == "warning"
        assert conn.shared_with == others
        assert "starting_worker_process" in conn.note
        assert all(str(p) in conn.note for p in others)
        assert conn.as_dict()["warning"] == conn.note
        assert conn.as_dict()["shared_with"] == list(others)

        log = fds[info["log"]]
        assert (log.kind, log.target, log.level) == ("file", str(log_path), "info")
        assert log.shared_with == others  # not the process that opened the file itself
        assert "interleave" in log.note

        for fd, end in zip(info["pipe"], ("read end", "write end"), strict=True):
            assert (fds[fd].kind, fds[fd].level, fds[fd].shared_with) == ("pipe", "info", others)
            assert f"pipe ({end})" in fds[fd].note

        control = fds[info["control"]]
        assert control.own and control.level is None and control.shared_with == ()
        assert control.kind == "unix" and control.target == "(unnamed)"
        for fd in STDIO:
            assert fds[fd].own and fds[fd].level is None

    independent = by_fd(found[other.pid])[other_info["log"]]
    assert independent.kind == "file" and independent.target == str(log_path)
    assert independent.shared_with == () and independent.level is None
    assert independent.as_dict()["warning"] is None
    assert same_description(parent.pid, info["log"], kid1, info["log"]) is True
    assert same_description(parent.pid, info["log"], other.pid, other_info["log"]) is False
    stdin = by_fd(manager)[parent.stdin.fileno()]  # type: ignore[union-attr]
    assert (stdin.kind, stdin.shared_with, stdin.level) == ("pipe", (), None)
    conn = by_fd(alone[parent.pid])[info["conn"]]
    assert conn.shared_with == () and conn.level is None


def test_cloexec_flag() -> None:
    with_flag = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    without = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(without, True)  # Python sets O_CLOEXEC on everything by default
    try:
        fds = {r.fd: r for r in read_fds(os.getpid())}
        assert fds[with_flag].cloexec is True
        assert fds[without].cloexec is False
        assert fds[with_flag].link == os.devnull
    finally:
        os.close(with_flag)
        os.close(without)


def test_socket_table_listeners_and_unix(tmp_path: Path) -> None:
    tcp = socket.create_server(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "s.sock"))
    unix.listen()
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0tp-test-{os.getpid()}")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    expected = {tcp: ("tcp", f"listening 127.0.0.1:{tcp.getsockname()[1]}"),
                unix: ("unix", f"listening {tmp_path / 's.sock'}"),
                abstract: ("unix", f"(abstract) tp-test-{os.getpid()}"),
                udp: ("udp", f"bound 127.0.0.1:{udp.getsockname()[1]}")}
    with contextlib.suppress(OSError):  # no IPv6 here
        tcp6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        expected[tcp6] = ("tcp6", f"listening [::1]:{tcp6.getsockname()[1]}")
    try:
        table = SocketTable.read()
        inode = {s: os.fstat(s.fileno()).st_ino for s in expected}
        assert {s: table.describe(inode[s]) for s in expected} == expected
        only = SocketTable.read(inodes={inode[tcp]})
        assert len(only) == 1 and only.describe(inode[udp]) is None
    finally:
        for s in expected:
            s.close()


def test_sampler_thread(children: Children) -> None:
    stay, _ = children.spawn(IDLE)
    leave, _ = children.spawn(IDLE)
    ticks: list[dict[int, Any]] = []
    targets = {stay.pid: ProcessInfo("worker", "app", STDIO),
               leave.pid: ProcessInfo("worker", "app", STDIO)}
    sampler = Sampler(lambda: dict(targets), interval=0.05, smaps_interval=0.2,
                      on_sample=ticks.append)
    sampler.start()
    try:
        wait_for(lambda: set(sampler.latest) == {stay.pid, leave.pid}, "both pids sampled")
        sample = sampler.latest[stay.pid]
        assert sample.status is not None and sample.status.rss > 0
        assert sample.memory is not None  # a new pid gets its smaps read at once
        assert {e.fd for e in sample.fds} >= {0, 1, 2}

        leave.stdin.close()  # type: ignore[union-attr]
        leave.wait(WAIT)  # gone (and reaped) while still among the targets
        wait_for(lambda: set(sampler.latest) == {stay.pid}, "the vanished pid skipped")
        assert sampler.running

        sampler.pause()
        time.sleep(0.15)  # let a tick in flight finish
        paused_at = len(ticks)
        time.sleep(0.3)
        assert len(ticks) == paused_at
        sampler.resume()
        wait_for(lambda: len(ticks) > paused_at, "ticks after resume")
    finally:
        sampler.stop()
    assert not sampler.running
    assert not any(t.name == "tp-sampler" for t in threading.enumerate())
    assert ticks and all(isinstance(t, dict) for t in ticks)


def test_sample_now_includes_memory_and_fds(children: Children) -> None:
    proc, _ = children.spawn(ALLOCATE)
    gone, _ = children.spawn(IDLE)
    gone.stdin.close()  # type: ignore[union-attr]
    gone.wait(WAIT)
    sampler = Sampler(lambda: {proc.pid: ProcessInfo("worker", "app", STDIO),
                               gone.pid: ProcessInfo("worker", "app", STDIO)})
    result = sampler.sample_now()
    assert set(result) == {proc.pid}
    sample = result[proc.pid]
    assert sample.memory is not None and sample.memory.uss >= 45_000_000
    assert sample.memory_at is not None and sample.memory_at <= sample.sampled_at + 1
    assert sample.status is not None and sample.status.state in ("R", "S")
    assert sample.cpu == 0.0  # first sample of this pid
    assert {e.fd for e in sample.fds} >= {0, 1, 2}
    assert all(e.own for e in sample.fds if e.fd in STDIO)
    assert sampler.latest is result


def test_same_description_without_kcmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tui_passenger.inspect import fds as fds_module

    monkeypatch.setattr(fds_module, "_kcmp_nr", None)  # as on a kernel without kcmp
    path = tmp_path / "data"
    path.write_bytes(b"0123456789")
    first = os.open(path, os.O_RDONLY)
    second = os.open(path, os.O_RDONLY)
    dup = os.dup(first)
    try:
        os.lseek(second, 5, os.SEEK_SET)
        me = os.getpid()
        assert same_description(me, first, me, dup) is True
        assert same_description(me, first, me, second) is False  # other offset
        assert same_description(me, first, me, 10_000) is None  # no such descriptor
    finally:
        for fd in (first, second, dup):
            os.close(fd)


GROW = """
import sys, json
blocks = []
print(json.dumps({}), flush=True)
for line in sys.stdin:
    blocks.append(b"x" * (16 << 20))
    print(json.dumps({}), flush=True)
"""


def test_sampler_reads_smaps_again_when_rss_moved_or_someone_looks(
        children: Children, monkeypatch: pytest.MonkeyPatch) -> None:
    from tui_passenger.inspect import sampler as sampler_module

    grower, _ = children.spawn(GROW)
    reads: list[int] = []

    def counted(pid: int) -> Any:
        reads.append(pid)
        return read_smaps_rollup(pid)

    monkeypatch.setattr(sampler_module, "read_smaps_rollup", counted)
    sampler = Sampler(lambda: {grower.pid: ProcessInfo("worker", "app", STDIO)},
                      interval=0.01, smaps_interval=0.05, idle_age=60)
    sampler._sample(full=False)  # one tick (the thread's), synchronously
    assert reads == [grower.pid]  # a new pid: read at once
    time.sleep(0.1)  # older than smaps_interval
    for _ in range(3):
        sampler._sample(full=False)
    assert len(reads) == 1  # nobody looks and its RSS did not move: not read again

    assert grower.stdin is not None and grower.stdout is not None
    grower.stdin.write("\n")
    grower.stdin.flush()
    grower.stdout.readline()  # it holds 16 MiB more
    sample = sampler._sample(full=False)[grower.pid]
    assert len(reads) == 2  # RSS moved: read again
    assert sample.memory is not None and sample.memory.uss >= 16 << 20

    assert not sampler.watched
    _ = sampler.latest  # someone looks (the status, a dashboard): old ones are read again
    assert sampler.watched
    time.sleep(0.1)
    sampler._sample(full=False)
    assert len(reads) == 3
