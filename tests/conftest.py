"""Fixtures: apps written into temporary directories, spawners that clean up after themselves."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest

from tui_passenger.config import AppConfig, parse_config
from tui_passenger.engine import RuntimeDir, Spawner, become_subreaper, make_spawner

REPO = Path(__file__).resolve().parent.parent
SAMPLE_APPS = REPO / "sample_apps"


@pytest.fixture(scope="session", autouse=True)
def _subreaper() -> None:
    # The manager adopts forked workers whose preloader has exited; so does the test process.
    become_subreaper()


@pytest.fixture
def runtime_dir() -> AsyncIterator[Path]:
    rd = RuntimeDir(prefix="tp-test-")
    yield rd.path
    rd.close()


def app_config(root: Path, *, name: str = "app", **settings: object) -> AppConfig:
    """An AppConfig for the app in ``root`` built through the real config parser."""
    lines = ["[[app]]", f'name = "{name}"', f'root = "{root}"', "allow_root = true"]
    for key, value in settings.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        else:
            lines.append(f"{key} = {value}")
    return parse_config("\n".join(lines) + "\n", path="test.toml").apps[0]


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., AppConfig]:
    """Write ``code`` as ``app.py`` in a fresh directory and configure it."""
    counter = iter(range(1000))

    def make(code: str, *, entry: str = "app:application", **settings: object) -> AppConfig:
        root = tmp_path / f"app{next(counter)}"
        root.mkdir()
        (root / "app.py").write_text(textwrap.dedent(code))
        settings.setdefault("start_timeout", 20)
        return app_config(root, entry=entry, **settings)

    return make


@pytest.fixture
async def spawners(runtime_dir: Path) -> AsyncIterator[Callable[..., Spawner]]:
    """Make spawners; at teardown stop their workers and preloaders and check nothing is left."""
    made: list[Spawner] = []
    workers: list = []

    def make(app: AppConfig, method: str | None = None, on_output=None) -> Spawner:
        spawner = make_spawner(app, runtime_dir, method, on_output=on_output)
        original = spawner.spawn

        async def spawn_and_track():
            worker = await original()
            workers.append(worker)
            return worker

        spawner.spawn = spawn_and_track  # type: ignore[method-assign]
        made.append(spawner)
        return spawner

    yield make
    await asyncio.gather(*(w.stop(5) for w in workers))
    await asyncio.gather(*(s.close() for s in made))
    assert_no_children()


def assert_no_children(timeout: float = 5.0) -> None:
    """No process of ours is left: no live children, no zombies, none adopted."""
    me = psutil.Process()
    deadline = time.monotonic() + timeout
    while True:
        # Not psutil.wait_procs: it would reap zombies and so hide them.
        leftover = []
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.append((child.pid, child.name(), child.status(),
                                 " ".join(child.cmdline()[-3:])[:80]))
        if not leftover:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes left behind (zombies included): {leftover}")
        time.sleep(0.05)



def pytest_asyncio_loop_factories(config, item):
    """Run the tests on the event loop the product uses (uvloop where installed)."""
    try:
        import uvloop
    except ImportError:
        return {"asyncio": asyncio.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}
