"""Log rotation: after logrotate moves the log files away, SIGUSR1 or ``ctl reopen-logs``
makes the instance write to new files by the same names, losing no line."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.deploying import PYTHON, REPO, Instance, short_dir, write_config
from tests.serving import running, wait_until
from tui_passenger.operations import Operations


def paths_in(log: Path) -> list[str]:
    """The request paths of an access log's lines, in order."""
    if not log.exists():
        return []
    return [line.split('"')[1].split()[1] for line in log.read_text().splitlines()]


async def lines_in(log: Path, paths: list[str]) -> None:
    await wait_until(lambda: paths_in(log) == paths)


@pytest.fixture
def instance():
    """A headless instance writing its access log to a file (flushed every 50 ms)."""
    directory = short_dir()
    config = write_config(directory, 'address = "127.0.0.1"\nport = 0')
    config.write_text(config.read_text().replace(
        "access_log = false", f'access_log_file = "{directory / "access.log"}"\n'
                              "access_log_flush = 0.05"))
    running_instance = Instance(["--headless", "-c", str(config)])
    try:
        port = int(running_instance.wait_for(r"listening on http://127\.0\.0\.1:(\d+)/")[0]
                   .rsplit(":", 1)[1].rstrip("/"))
        yield running_instance, config, port, directory / "access.log"
    finally:
        running_instance.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def test_sigusr1_and_ctl_reopen_the_access_log_after_a_move(instance) -> None:
    proc, config, port, log = instance

    def get(path: str) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            assert reply.status == 200

    get("/a")
    await lines_in(log, ["/a"])
    rotated = log.with_suffix(".log.1")
    log.rename(rotated)  # what logrotate does first
    get("/b")  # still to the moved file, until told
    await lines_in(rotated, ["/a", "/b"])
    proc.proc.send_signal(signal.SIGUSR1)  # logrotate's postrotate
    proc.wait_for(r"reopened the access log " + str(log))
    get("/c")
    await lines_in(log, ["/c"])
    assert paths_in(rotated) == ["/a", "/b"]

    log.rename(log.with_suffix(".log.2"))
    done = subprocess.run([PYTHON, "-m", "tui_passenger", "ctl", "reopen-logs", "-c",
                           str(config)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert f"reopened the access log {log}" in done.stdout
    get("/d")
    await lines_in(log, ["/d"])
    assert paths_in(log.with_suffix(".log.2")) == ["/c"]


async def test_the_main_log_file_is_reopened_too(tmp_path: Path) -> None:
    root = logging.getLogger()
    handler = logging.FileHandler(tmp_path / "main.log")
    root.addHandler(handler)
    try:
        async with running([{"name": "probe"}]) as srv:
            logging.getLogger("tui_passenger").warning("before")
            (tmp_path / "main.log").rename(tmp_path / "main.log.1")
            done = await Operations(srv).reopen_logs()
            logging.getLogger("tui_passenger").warning("after")
    finally:
        root.removeHandler(handler)
        handler.close()
    assert done.reply["log_file"] == str(tmp_path / "main.log")
    assert "before" in (tmp_path / "main.log.1").read_text()
    assert "after" in (tmp_path / "main.log").read_text()
    assert "after" not in (tmp_path / "main.log.1").read_text()
