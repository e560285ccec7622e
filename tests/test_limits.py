"""The manager raises its own limit on open files, so a burst of a thousand clients (a
client connection and a worker connection each) does not hit the usual soft limit of 1,024;
its workers inherit it. A real headless instance started under a low soft limit."""

from __future__ import annotations

import http.client
import json
import resource
import shutil
from pathlib import Path

from tests.deploying import PYTHON, Instance, short_dir, write_config
from tui_passenger.engine.system import WANTED_OPEN_FILES

#: Start tui-passenger with a soft limit of 256 open files (the hard limit unchanged).
LOW_LIMIT = ("import resource, runpy, sys\n"
             "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
             "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
             "sys.argv[0] = 'tui-passenger'\n"
             "runpy.run_module('tui_passenger', run_name='__main__', alter_sys=True)\n")


def soft_open_files(pid: int) -> int:
    """The soft 'Max open files' of a process, from /proc."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-files line for {pid}")


def test_the_manager_and_its_workers_get_room_for_a_burst_of_clients():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    expected = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(
        WANTED_OPEN_FILES, hard)
    directory = short_dir()
    config = write_config(directory, 'address = "127.0.0.1"\nport = 0')
    instance = Instance([], command=[PYTHON, "-c", LOW_LIMIT, "--headless", "-c",
                                     str(config)])
    try:
        port = int(instance.wait_for(r"listening on http://127\.0\.0\.1:(\d+)/")[0]
                   .rsplit(":", 1)[1].rstrip("/"))
        assert soft_open_files(instance.proc.pid) == max(256, expected)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/")
        worker = json.loads(connection.getresponse().read())["pid"]
        connection.close()
        assert soft_open_files(worker) == max(256, expected)
    finally:
        assert instance.stop() == 0
        shutil.rmtree(directory, ignore_errors=True)
