"""Started as root: apps run as their configured user, and never as root by accident."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import psutil
import pytest

from tests.conftest import assert_no_children
from tests.serving import get, running

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs to be started as root")


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    assert_no_children()


def _interpreter_for_nobody() -> dict:
    """App settings giving ``nobody`` an interpreter it can read: ours, or the system's
    python3 of the same version with our packages on PYTHONPATH."""
    if _reachable_by_nobody():
        return {}
    system = "/usr/bin/python3"
    site = Path(sysconfig.get_paths()["purelib"])
    repo = Path(__file__).resolve().parent.parent
    if not os.path.exists(system) or subprocess.run(
            [system, "-c", f"import sys; sys.exit(sys.version_info[:2] != {sys.version_info[:2]})"],
            check=False).returncode:
        pytest.skip("this Python installation is not readable by other users, and no "
                    "system python3 of the same version is there")
    from tui_passenger.engine.identity import Identity, first_inaccessible

    nobody = Identity("nobody", 65534, 65534, (65534,), "/nonexistent")
    if any(first_inaccessible(p, nobody) for p in (site, repo)):
        pytest.skip("the packages or the repo are not readable by other users")
    return {"python": system, "env": {"PYTHONPATH": f"{repo}:{site}"}}


@pytest.mark.parametrize("method", ["smart", "direct"])
async def test_app_runs_as_its_user(method):
    app = {"name": "app", "user": "nobody", "spawn_method": method,
           **_interpreter_for_nobody()}
    async with running([app]) as server:
        group = server.pool.groups["app"]
        status, _, _ = await get(server, "/")
        assert status == 200
        nobody = psutil.Process(group.processes[0].pid)
        assert nobody.uids().real == nobody.uids().effective == 65534
        if method == "smart":
            assert psutil.Process(group.spawner.preloader.pid).uids().effective == 65534
        socket_path = group.processes[0].worker.socket_path
        assert os.stat(socket_path).st_uid == 65534
        assert oct(os.stat(socket_path).st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("method", ["smart", "direct"])
async def test_running_as_root_needs_saying_so(method):
    app = {"name": "app", "allow_root": False, "spawn_method": method, "min_instances": 0,
           "environment": "development"}
    async with running([app]) as server:
        status, _, body = await get(server, "/")
        assert status == 500 and b"refusing to run the app as root" in body
        assert server.pool.groups["app"].processes == []


def _reachable_by_nobody() -> bool:
    from tui_passenger.engine.identity import Identity, first_inaccessible

    nobody = Identity("nobody", 65534, 65534, (65534,), "/nonexistent")
    python = Path(os.path.realpath(sys.executable))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return all(first_inaccessible(p, nobody) is None
               for p in (python, stdlib, Path(__file__).parent))


async def test_unreachable_interpreter_is_a_clear_spawn_error():
    if _reachable_by_nobody():
        pytest.skip("this Python installation is readable by other users")
    app = {"name": "app", "user": "nobody", "min_instances": 0, "environment": "development"}
    async with running([app]) as server:
        status, _, body = await get(server, "/")
        assert status == 500 and b"is out of reach of user" in body
