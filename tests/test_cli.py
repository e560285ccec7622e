"""The command line: config errors, a headless server stopped by a signal, and the admin
commands (options before or after the command, help, a reader that goes away)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from tests.serving import config_text, running, wait_until
from tui_passenger.server import Server

PYTHON = sys.executable


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "tui_passenger", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("text, expected", [
    ("[server\nport = 1\n", r"bad\.toml:1:\d+: TOML syntax error"),
    ("[server]\nprot = 1\n", r"bad\.toml:2: \[server\]: unknown key 'prot' .*did you mean 'port'"),
    ('[[app]]\nname = "a"\nroot = "."\nentry = "m:app"\nspawn_method = "fast"\n',
     r'bad\.toml:5: \[\[app\]\] #1 \("a"\): spawn_method: must be "smart" or "direct"'),
])
def test_config_errors_name_file_line_and_key(tmp_path, text, expected):
    (tmp_path / "bad.toml").write_text(text)
    result = run_cli("-c", str(tmp_path / "bad.toml"), "--headless")
    assert result.returncode == 2
    assert re.search(expected, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_is_a_clear_error(tmp_path):
    result = run_cli("-c", str(tmp_path / "nope.toml"))
    assert result.returncode == 2 and "nope.toml" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_headless_drains_and_exits_cleanly_on_signal(tmp_path, sig):
    config = tmp_path / "passenger.toml"
    config.write_text(config_text({}, [{"name": "app", "min_instances": 2,
                                        "max_instances": 2}]))
    proc = subprocess.Popen([PYTHON, "-m", "tui_passenger", "--headless", "-c", str(config)],
                            stderr=subprocess.PIPE, text=True)
    try:
        port = None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
            if port and len(re.findall(r"worker \d+ spawned", "".join(lines))) == 2:
                break
        assert port, "".join(lines)
        ours = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert len(ours) >= 3  # preloader + 2 workers
        result = {}

        def slow_request() -> None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/slow?1.0", timeout=20) as r:
                result["reply"] = (r.status, json.loads(r.read()))

        client = threading.Thread(target=slow_request)
        client.start()
        for line in proc.stderr:  # the worker prints when the request is in
            lines.append(line)
            if "slow request started" in line:
                break
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=30)
        client.join(20)
        assert proc.returncode == 0, "".join(lines) + rest
        assert result["reply"][0] == 200 and result["reply"][1]["slept"]
        assert not [pid for pid in ours if psutil.pid_exists(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the admin commands: options before or after the command, help, a closed pipe -----------

APPS = [{"name": "app", "min_instances": 1, "max_instances": 3}]


@contextlib.asynccontextmanager
async def instance(tmp_path: Path) -> AsyncIterator[tuple[Server, Path]]:
    """A running server and the config file it was started with (admin socket included)."""
    socket = str(tmp_path / "admin" / "admin.sock")
    config = tmp_path / "passenger.toml"
    config.write_text(config_text({"admin_socket": socket}, APPS))
    async with running(APPS, admin_socket=socket) as server:
        assert server.admin is not None and str(server.admin.path) == socket
        yield server, config


async def cli(*args: str, stdout: int = asyncio.subprocess.PIPE) -> tuple[int, str, str]:
    """The real command line in a subprocess, without blocking the server's event loop."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "tui_passenger", *args, stdout=stdout, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, (out or b"").decode(), err.decode()


async def test_options_are_accepted_before_and_after_the_command(tmp_path):
    async with instance(tmp_path) as (server, config):
        group = server.pool.groups["app"]
        for args in (["ctl", "scale", "app", "2", "-c", str(config)],
                     ["ctl", "-c", str(config), "scale", "app", "2"],
                     ["-c", str(config), "ctl", "scale", "app", "2"],
                     ["--config", str(config), "ctl", "scale", "app", "2"]):
            code, out, err = await cli(*args)
            assert (code, out, err) == (0, "app: keeping 2 worker(s) warm\n", ""), args
        await wait_until(lambda: group.live_count() == 2, 30)
        for args in (["status", "--json", "-c", str(config)],
                     ["-c", str(config), "status", "--json"],
                     ["status", "--admin-socket", str(server.admin.path), "--json"]):
            code, out, err = await cli(*args)
            assert code == 0 and json.loads(out)["apps"][0]["min_instances"] == 2, (args, err)
        code, out, err = await cli("memory", "-c", str(config))
        assert code == 0 and "saves" in out, err
        victim = group.processes[0].pid
        code, out, err = await cli("ctl", "kill", str(victim), "--admin-socket",
                                   str(server.admin.path))
        assert code == 0 and out.startswith(f"app: worker {victim} stopped ("), err
        assert victim not in {p.pid for p in group.processes}


async def test_status_into_a_closed_pipe_exits_quietly(tmp_path):
    async with instance(tmp_path) as (_, config):
        # What `status --json | head -1` does once head has its line: nobody reads any more.
        read, write = os.pipe()
        os.close(read)
        try:
            code, _, err = await cli("status", "--json", "-c", str(config), stdout=write)
        finally:
            os.close(write)
        assert (code, err) == (0, "")
        shell = f"{PYTHON} -m tui_passenger status --json -c {config} | head -1"
        proc = await asyncio.create_subprocess_shell(
            shell, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err_bytes = await asyncio.wait_for(proc.communicate(), 60)
        assert (proc.returncode, out, err_bytes) == (0, b"{\n", b"")


def test_help_lists_every_command_and_every_ctl_action():
    actions = ["scale", "kill", "restart", "spawn-method", "refork", "stack", "reload",
               "reopen-logs", "stop"]
    top = run_cli("--help")
    assert top.returncode == 0, top.stderr
    for word in ["attach", "status", "memory", "ctl", *actions]:
        assert re.search(rf"\b{word}\b", top.stdout), word
    ctl = run_cli("ctl", "--help")
    assert ctl.returncode == 0, ctl.stderr
    listed = re.findall(r"^    (\S+)\s", ctl.stdout, re.MULTILINE)
    assert listed == actions, ctl.stdout


def test_attach_takes_its_options_after_the_command(tmp_path):
    socket = tmp_path / "run" / "admin.sock"
    config = tmp_path / "x.toml"
    config.write_text(config_text({"admin_socket": str(socket)}, APPS))
    for args in (["attach", "-c", str(config)], ["-c", str(config), "attach"],
                 ["attach", "--admin-socket", str(socket)]):
        result = run_cli(*args)
        assert result.returncode == 3, (args, result.stderr)
        assert f"no tui-passenger instance answers on {socket}" in result.stderr


@pytest.mark.parametrize("args, expected", [
    (["--port", "80", "status"], "--port is for running the server, not for status"),
    (["status", "--port", "80"], "unrecognized arguments: --port 80"),
    (["-c", "a.toml", "ctl", "restart", "app", "--admin-socket", "s"],
     "-c/--config: not allowed with argument --admin-socket"),
    (["--admin-socket", "s"], "--admin-socket is for attach, status, memory and ctl"),
    (["ctl", "spawn-method", "app", "fast"], "invalid choice: 'fast'"),
])
def test_options_that_do_not_fit_the_command_are_usage_errors(args, expected):
    result = run_cli(*args)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
