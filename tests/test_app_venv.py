"""Apps on their own interpreter: a bare virtualenv with nothing installed in it.

A real server serves an app whose ``python`` is a ``venv --without-pip`` virtualenv (made
from this machine's Python, and from 3.9 and 3.13 when pyenv has them), smart and direct,
WSGI and ASGI, answering a real request; the worker then runs on that interpreter with the
pure-Python request parser, and nothing of the manager's environment is importable there. An
interpreter too old, or not Python, is a spawn error that says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import site
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.serving import get, running
from tui_passenger.config import AppConfig
from tui_passenger.engine import SpawnError
from tui_passenger.engine.interpreter import PACKAGE_DIR, bootstrap
from tui_passenger.engine.spawner import Spawner

PYENV = Path("/root/.pyenv/versions")
#: Interpreters the bare virtualenvs are made from: this machine's Python (the one the
#: manager's own virtualenv is based on), the oldest one supported and the newest at hand.
BASES = {
    "machine": Path(getattr(sys, "_base_executable", sys.executable)),
    **{version: next(iter(sorted(PYENV.glob(f"{version}.*/bin/python{version}"))),
                     PYENV / f"{version}-absent") for version in ("3.9", "3.13")},
}

APP = '''
import json, os, sys

import tui_passenger

hooked = []

@tui_passenger.on_event("starting_worker_process")
def started(forked):
    hooked.append(forked)

def importable(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True

def report():
    from tui_passenger.runtime import http_common
    return json.dumps({
        "prefix": sys.prefix, "version": list(sys.version_info[:2]), "path": sys.path,
        "hooked": hooked, "parser": http_common.PARSER.__name__,
        "imports": {name: importable(name) for name in ("httptools", "textual", "aiohttp")},
    }).encode()

def application(environ, start_response):
    body = report()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]

async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    body = report()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
'''


@pytest.fixture(scope="module", params=list(BASES))
def bare_venv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv without pip (nothing installed at all); its directory."""
    base = BASES[str(request.param)]
    if not os.access(base, os.X_OK):
        pytest.skip(f"no {request.param} interpreter at {base}")
    venv = tmp_path_factory.mktemp(f"venv-{request.param}")
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True, timeout=120)
    return venv


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
@pytest.mark.parametrize("method", ["direct", "smart"])
async def test_app_in_a_bare_virtualenv_is_served(bare_venv: Path, tmp_path: Path, method: str,
                                                  interface: str) -> None:
    root = tmp_path / "app"
    root.mkdir()
    (root / "app.py").write_text(textwrap.dedent(APP))
    entry = "app:application" if interface == "wsgi" else "app:asgi"
    app = {"name": "venv", "root": str(root), "entry": entry, "interface": interface,
           "spawn_method": method, "python": str(bare_venv / "bin" / "python")}
    async with running([app]) as server:
        status, _, body = await get(server, "/x")
    assert status == 200, body
    seen = json.loads(body)
    assert Path(seen["prefix"]).resolve() == bare_venv.resolve()
    assert seen["hooked"] == [method == "smart"]  # our hooks work without installing us
    # Nothing of the manager's environment leaks in: its site-packages are not on sys.path
    # and what is installed there (httptools included) cannot be imported.
    assert seen["imports"] == {"httptools": False, "textual": False, "aiohttp": False}
    assert seen["parser"] == "tui_passenger.runtime.http_parser"
    ours = {os.path.realpath(p) for p in site.getsitepackages()}
    assert not ours & {os.path.realpath(p) for p in seen["path"]}
    assert str(Path(__file__).resolve().parents[1]) not in seen["path"]


CHILD_CHECK = """
import importlib, json, pkgutil, sys
import tui_passenger.runtime

names = ["tui_passenger.hooks", "tui_passenger.worker", "tui_passenger.preloader"]
names += ["tui_passenger.runtime." + m.name for m in pkgutil.iter_modules(
    tui_passenger.runtime.__path__)]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "package": tui_passenger.__file__}))
"""


def test_every_module_a_child_runs_imports_there(bare_venv: Path, tmp_path: Path) -> None:
    # All of runtime/ (what is imported lazily too), through the real bootstrap: nothing but
    # the standard library, and nothing the oldest supported Python cannot run.
    (tmp_path / "child_check.py").write_text(CHILD_CHECK)
    result = subprocess.run(
        [str(bare_venv / "bin" / "python"), "-c", bootstrap("child_check")],
        env={**os.environ, "PYTHONPATH": str(tmp_path)}, cwd="/", capture_output=True,
        text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert "tui_passenger.runtime.http_parser" in seen["imported"]
    assert Path(seen["package"]).parent == Path(PACKAGE_DIR)


async def _refused(make_app: Callable[..., AppConfig], spawners: Callable[..., Spawner],
                   method: str, python: Path) -> str:
    """Spawning on ``python`` fails as an interpreter error naming it; the message."""
    app = dataclasses.replace(make_app("def application(environ, start_response): pass\n"),
                              python=str(python))
    with pytest.raises(SpawnError) as info:
        await spawners(app, method).spawn()
    assert info.value.category == "interpreter"
    assert str(python) in info.value.message
    return info.value.message


@pytest.mark.parametrize("method", ["direct", "smart"])
async def test_interpreter_too_old_is_a_spawn_error(method: str, make_app: Callable[..., AppConfig],
                                                    spawners: Callable[..., Spawner]) -> None:
    old = next(iter(sorted(PYENV.glob("3.8.*/bin/python3.8"))), None)
    if old is None:
        pytest.skip("no Python 3.8 to try")
    message = await _refused(make_app, spawners, method, old)
    assert "Python 3.8." in message
    assert "needs Python 3.9 or newer" in message


@pytest.mark.parametrize("method", ["direct", "smart"])
async def test_not_python_is_a_spawn_error(method: str, make_app: Callable[..., AppConfig],
                                           spawners: Callable[..., Spawner],
                                           tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'this is no python'\n")
    fake.chmod(0o755)
    message = await _refused(make_app, spawners, method, fake)
    assert "not a Python interpreter" in message
    assert "this is no python" in message
