#!/usr/bin/env python3
"""CPU cost of sampling 20 processes (tui_passenger.inspect).

Starts a "preloader" python process that imports a few stdlib modules, connects a TCP socket to
a listener run here, opens a log file and a pipe, then forks 19 workers; each of the 20
processes then allocates some private memory and opens a file of its own. It then measures the
CPU time (``time.thread_time``: user + system of the sampling thread, which includes the
kernel's smaps walk) of:

- a full sample (status + CPU + smaps_rollup + fd inventory with SocketTable) of all 20,
- a per-tick sample (status + CPU only),
- and the parts alone; with psutil's equivalents for comparison when it is installed.

Each measurement is repeated (``--repeat``, 10 by default); prints median and max in ms.

    python3 dev.py bench sample_cost [--processes 20] [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tui_passenger.inspect import (  # noqa: E402
    CpuMeter,
    ProcessInfo,
    Sampler,
    SocketTable,
    inventory,
    read_smaps_rollup,
    read_status,
)

PRELOADER = """
import email.parser, http.client, json, decimal, os, socket, sqlite3, sys, xml.etree.ElementTree
port, tmp, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = socket.create_connection(("127.0.0.1", port))   # inherited by every worker (a warning)
log = open(os.path.join(tmp, "shared.log"), "a")        # inherited (info)
r, w = os.pipe()
shared_block = bytearray(b"\\x01") * 10_000_000         # shared copy-on-write after fork
kids = []
for _ in range(n - 1):
    pid = os.fork()
    if pid == 0:
        kids = None
        break
    kids.append(pid)
private = bytearray(b"\\x02") * 3_000_000              # each process's own memory
own = open(os.path.join(tmp, f"own-{os.getpid()}.log"), "a")
if kids is not None:
    print(json.dumps({"pids": [os.getpid(), *kids]}), flush=True)
sys.stdin.read()
if kids is None:
    os._exit(0)
for pid in kids:
    os.waitpid(pid, 0)
"""


def measure(label: str, func: Callable[[], object], repeat: int) -> list[float]:
    """Run ``func`` ``repeat`` times; print median and max CPU ms (and wall ms)."""
    func()  # warm up (first CpuMeter call, imports, dentry caches)
    cpu, wall = [], []
    for _ in range(repeat):
        c0, w0 = time.thread_time(), time.perf_counter()
        func()
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    print(f"{label:<44} cpu median {statistics.median(cpu):7.2f} ms  max {max(cpu):7.2f} ms"
          f"   (wall median {statistics.median(wall):7.2f} ms)")
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    listener = socket.create_server(("127.0.0.1", 0))
    with tempfile.TemporaryDirectory(prefix="tp-bench-") as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-c", PRELOADER, str(listener.getsockname()[1]), tmp,
             str(args.processes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        accepted, _ = listener.accept()
        try:
            assert proc.stdout is not None
            pids: list[int] = json.loads(proc.stdout.readline())["pids"]
            time.sleep(0.3)  # let the workers allocate
            run(pids, args.repeat)
        finally:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(10)
            accepted.close()
            listener.close()


def run(pids: list[int], repeat: int) -> None:
    """All measurements on the given pids (the first is the preloader)."""
    own = frozenset({0, 1, 2})
    targets = {pid: ProcessInfo("worker", "bench", own) for pid in pids}
    targets[pids[0]] = ProcessInfo("preloader", "bench", own)
    meter = CpuMeter()
    nfds = sum(len(v) for v in inventory(targets).values())
    print(f"{len(pids)} processes, {nfds} descriptors\n")

    def ticks() -> None:
        for pid in pids:
            read_status(pid)
            meter.sample(pid)

    sampler = Sampler(lambda: dict(targets))
    full = measure("full sample (status+cpu+smaps+fds)", sampler.sample_now, repeat)
    measure("tick (status + cpu)", ticks, repeat)
    measure("smaps_rollup only", lambda: [read_smaps_rollup(p) for p in pids], repeat)
    measure("fd inventory (incl. SocketTable)", lambda: inventory(targets), repeat)
    measure("SocketTable.read() (all sockets)", SocketTable.read, repeat)

    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        procs = [psutil.Process(p) for p in pids]
        for p in procs:
            p.cpu_percent()

        def ps_tick() -> None:
            for p in procs:
                p.memory_info()
                p.num_threads()
                p.status()
                p.cpu_percent()

        print()
        measure("psutil tick (memory_info+threads+status+cpu)", ps_tick, repeat)
        measure("psutil memory_full_info (smaps)", lambda: [p.memory_full_info() for p in procs],
                repeat)
        measure("psutil open_files + net_connections",
                lambda: [(p.open_files(), p.net_connections("all")) for p in procs], repeat)

    verdict = "OK" if statistics.median(full) < 100 else "OVER BUDGET"
    print(f"\nfull sample of {len(pids)}: median {statistics.median(full):.1f} ms CPU, "
          f"max {max(full):.1f} ms (budget 100 ms): {verdict}")


if __name__ == "__main__":
    main()
