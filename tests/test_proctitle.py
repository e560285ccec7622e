"""Process titles as ``ps`` and ``top`` see them (``/proc/PID/cmdline`` and ``comm``) for real
processes: the manager, preloaders, forked and direct workers, a mold; with setproctitle and
with the standard library alone."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, assert_no_children
from tests.helpers import unix_request
from tests.serving import config_text, running, wait_until
from tui_passenger.runtime.proctitle import COMM_LEN, PREFIX

PYTHON = sys.executable

APP = """
    def application(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
"""


def cmdline(pid: int) -> str:
    """The command line as ``ps`` shows it: arguments joined by spaces."""
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode()


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().rstrip("\n")


def assert_titled(pid: int, title: str, name: str) -> None:
    assert cmdline(pid) == PREFIX + title
    assert comm(pid) == name[:COMM_LEN]


@pytest.fixture
def bare_python(tmp_path: Path) -> str:
    """An interpreter without site-packages (so without setproctitle) that still finds
    this package: what an app's own virtualenv may be."""
    # httptools alone comes along, for as long as the worker runtime wants it.
    lib = tmp_path / "lib"
    lib.mkdir()
    httptools = importlib.util.find_spec("httptools")
    if httptools is not None and httptools.submodule_search_locations:
        (lib / "httptools").symlink_to(list(httptools.submodule_search_locations)[0])
    wrapper = tmp_path / "bare-python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}:{lib}" exec "{PYTHON}" -S "$@"\n')
    wrapper.chmod(0o755)
    check = subprocess.run([str(wrapper), "-c", "import setproctitle"], capture_output=True)
    assert check.returncode != 0  # really without it
    return str(wrapper)


@pytest.mark.parametrize("bare", [False, True], ids=["setproctitle", "stdlib"])
async def test_preloader_and_forked_workers_are_named_with_number_and_generation(
        bare, make_app, spawners, request):
    python = request.getfixturevalue("bare_python") if bare else PYTHON
    spawner = spawners(make_app(APP, name="hello", python=python), "smart")
    first, second = [await spawner.spawn() for _ in range(2)]
    preloader = spawner.preloader.pid
    assert_titled(preloader, "preloader hello (gen 0)", "tp-preload hello")
    # Forked children renamed themselves: not the preloader's title they inherited.
    assert (first.number, second.number) == (1, 2)
    assert_titled(first.pid, "worker hello #1 (gen 0)", "tp-worker hello")
    assert_titled(second.pid, "worker hello #2 (gen 0)", "tp-worker hello")
    assert "--spec" not in cmdline(preloader)


@pytest.mark.parametrize("bare", [False, True], ids=["setproctitle", "stdlib"])
async def test_direct_workers_are_named_with_their_number(bare, make_app, spawners, request):
    python = request.getfixturevalue("bare_python") if bare else PYTHON
    spawner = spawners(make_app(APP, name="api", python=python), "direct")
    workers = [await spawner.spawn() for _ in range(2)]
    for number, worker in enumerate(workers, start=1):
        assert_titled(worker.pid, f"worker api #{number} (direct)", "tp-worker api")


async def test_a_long_app_name_is_cut_in_the_process_name_only(make_app, spawners):
    spawner = spawners(make_app(APP, name="inventory-service"), "direct")
    worker = await spawner.spawn()
    assert_titled(worker.pid, "worker inventory-service #1 (direct)", "tp-worker inventory")


async def test_numbers_go_on_across_a_spawn_method_switch_and_a_mold_is_a_preloader():
    app = {"name": "app", "root": str(REPO / "tests" / "apps" / "refork_probe"),
           "min_instances": 2, "max_instances": 2}
    async with running([app], max_pool_size=4) as server:
        group = server.pool.groups["app"]
        assert sorted(p.worker.number for p in group.processes) == [1, 2]
        assert await server.pool.refork(group) >= 1
        mold = group.spawner.preloader
        assert mold.mold is not None and mold.generation == 1
        assert_titled(mold.pid, "preloader app (gen 1)", "tp-preload app")
        await wait_until(lambda: {p.worker.generation for p in group.processes} == {1}
                         and len(group.processes) == 2, 20)
        for process in group.processes:
            assert_titled(process.pid, f"worker app #{process.worker.number} (gen 1)",
                          "tp-worker app")
        await server.pool.set_spawn_method(group, "direct")
        await wait_until(lambda: {p.worker.spawn_method for p in group.processes} == {"direct"}
                         and len(group.processes) == 2, 30)
        numbers = sorted(p.worker.number for p in group.processes)
        assert numbers[0] > 2 and len(set(numbers)) == 2  # new numbers, never reused
        for process in group.processes:
            assert_titled(process.pid, f"worker app #{process.worker.number} (direct)",
                          "tp-worker app")
    assert_no_children()


def test_the_manager_is_named_after_its_config(tmp_path):
    (tmp_path / "passenger.toml").write_text(config_text({}, [{"name": "app"}]))
    proc = subprocess.Popen([PYTHON, "-m", "tui_passenger", "--headless", "-c", "passenger.toml"],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:  # the first worker's spawn: the whole tree is up
            lines.append(line)
            if re.search(r"worker \d+ spawned", line):
                break
        assert_titled(proc.pid, "manager passenger.toml", "tp-manager")
        titles = sorted(cmdline(child.pid)
                        for child in psutil.Process(proc.pid).children(recursive=True))
        assert titles == [PREFIX + "preloader app (gen 0)", PREFIX + "worker app #1 (gen 0)"], \
            "".join(lines)
        proc.terminate()
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_standard_library_way_fits_the_title_in_the_original_command_line():
    script = textwrap.dedent("""
        import os, sys
        from tui_passenger.runtime import proctitle
        print(proctitle.set_title(os.environ["TITLE"], "tp-test"), flush=True)
        sys.stdin.read()
    """)
    title = "worker app #12 (gen 3) " + "x" * 1000  # longer than the room there is
    argv = [PYTHON, "-S", "-c", script]
    env = {"PYTHONPATH": str(REPO), "TITLE": title}
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ctypes"  # no setproctitle without site
        # Cut to the room the original arguments took (each with its NUL), less one NUL...
        room = sum(len(arg.encode()) + 1 for arg in argv)
        assert cmdline(proc.pid) == (PREFIX + title)[:room - 1]
        # ... and not one byte of the environment, which lies right after it.
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert f"TITLE={title}".encode() in environ
        assert comm(proc.pid) == "tp-test"
    finally:
        proc.communicate("", timeout=10)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
@pytest.mark.parametrize("site", [True, False], ids=["setproctitle", "stdlib"])
def test_a_process_that_switched_user_still_names_itself(site):
    # Switching user makes a process non-dumpable: its /proc/self files become root's.
    script = textwrap.dedent("""
        import ctypes, os, sys
        from tui_passenger.runtime import proctitle
        try:
            import setproctitle  # here, the interpreter is in root's home: load it first
        except ImportError:
            pass
        os.setgroups([]); os.setgid(65534); os.setuid(65534)
        print(proctitle.name_worker("app", 7, 2), flush=True)
        sys.stdin.read()
    """)
    flags = [] if site else ["-S"]
    proc = subprocess.Popen([PYTHON, *flags, "-c", script, "--spec", "x" * 60],
                            env={"PYTHONPATH": str(REPO)}, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == ("setproctitle" if site else "ctypes")
        assert psutil.Process(proc.pid).uids().real == 65534
        assert_titled(proc.pid, "worker app #7 (gen 2)", "tp-worker app")
    finally:
        proc.communicate("", timeout=10)


async def test_titles_do_not_change_what_the_app_sees(make_app, spawners):
    code = APP.replace('[b"ok"]', '[" ".join(__import__("sys").argv).encode()]')
    spawner = spawners(make_app(code, name="argv"), "direct")
    worker = await spawner.spawn()
    _, _, body = await asyncio.to_thread(unix_request, worker.socket_path)
    assert b"--spec" in body  # sys.argv is Python's own copy, untouched
    assert "--spec" not in cmdline(worker.pid)


def test_a_title_that_cannot_be_set_never_breaks_the_start():
    """setproctitle refuses a NUL or a lone surrogate: the process starts all the same."""
    pytest.importorskip("setproctitle")
    from tui_passenger.runtime.proctitle import set_title

    assert set_title("bad\x00title", "tp-bad") == "none"
    assert set_title("bad \udcff title", "tp-bad") == "none"
