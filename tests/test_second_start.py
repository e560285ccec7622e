"""A start that cannot run (the config already running, the port taken) says who is there
and what to do, and leaves the running instance's admin socket, log and files untouched,
with real processes."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import socket
import subprocess

import pytest

from tests.deploying import PYTHON, Instance, short_dir, write_config
from tests.helpers import unix_json


@pytest.fixture
def first():
    """A running headless instance (port chosen by the OS) and its config's directory."""
    directory = short_dir()
    config = write_config(directory, 'address = "127.0.0.1"\nport = 0')
    instance = Instance(["--headless", "-c", str(config)])
    try:
        port = int(instance.wait_for(r"listening on http://127\.0\.0\.1:(\d+)/")[0]
                   .rsplit(":", 1)[1].rstrip("/"))
        yield instance, config, port
    finally:
        instance.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def private_tmp():
    """TMPDIR for a second start: its runtime directory is made there, so we can see that
    it is removed again."""
    path = short_dir()
    yield {"TMPDIR": str(path)}
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("same_port", [False, True])
def test_a_second_start_with_the_same_config_leaves_the_first_alone(first, same_port,
                                                                   private_tmp):
    instance, config, port = first
    admin = config.parent / "admin" / "admin.sock"
    before = os.stat(admin)
    env = private_tmp
    args = ["--headless", "-c", str(config)] + (["--port", str(port)] if same_port else [])
    second = Instance(args, env=env)
    assert second.finish() == 1, second.text
    message = second.text
    assert "already running with this config" in message, message
    assert f"pid {instance.proc.pid}" in message and f"http://127.0.0.1:{port}" in message
    assert "tui-passenger attach" in message and "--port" in message
    assert "Traceback" not in message and "Errno" not in message
    # The first one's admin socket is the same file, and it still answers.
    after = os.stat(admin)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert unix_json(str(admin), "/status")["server"]["pid"] == instance.proc.pid
    assert not os.listdir(env["TMPDIR"])
    # Nothing it said reached the first one's log (headless: the first one's stderr).
    assert "already running" not in instance.text


def test_status_lists_every_address(first):
    instance, config, port = first
    result = subprocess.run([PYTHON, "-m", "tui_passenger", "status", "--json", "-c", str(config)],
                            capture_output=True, text=True, timeout=30)
    server = json.loads(result.stdout)["server"]
    assert server["addresses"] == [f"http://127.0.0.1:{port}"] == [server["url"]]


def test_port_in_use_names_the_address_and_the_fix(private_tmp):
    directory = short_dir()
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        config = write_config(directory, f'address = "127.0.0.1"\nport = {port}')
        env = private_tmp
        second = Instance(["--headless", "-c", str(config)], env=env)
        assert second.finish() == 1, second.text
        assert re.search(rf"cannot listen on 127\.0\.0\.1:{port}: the address is already in "
                         r"use .*--port PORT", second.text), second.text
        assert "Errno" not in second.text and "Traceback" not in second.text
        assert not os.listdir(env["TMPDIR"])  # its runtime directory is gone
        assert not (directory / "admin" / "admin.sock").exists()
    finally:
        taken.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_port_in_use_with_the_dashboard_too():
    """On a terminal (a pty), the dashboard's start fails the same clear way before the
    dashboard takes the screen."""
    directory = short_dir()
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    master, slave = pty.openpty()
    try:
        config = write_config(directory, f'address = "127.0.0.1"\nport = {port}')
        second = Instance(["-c", str(config)], stdin=slave, stdout=slave)
        assert second.finish() == 1, second.text
        assert re.search(rf"tui-passenger: cannot listen on 127\.0\.0\.1:{port}: the address "
                         r"is already in use .*--port PORT", second.text), second.text
        assert "Errno" not in second.text
    finally:
        os.close(master)
        os.close(slave)
        taken.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_a_live_admin_socket_is_never_taken_over_by_a_server():
    """Below the command line too: Server.start refuses before binding anything."""
    import asyncio

    from tui_passenger.config import load_config
    from tui_passenger.listeners import StartError
    from tui_passenger.server import Server

    directory = short_dir()
    admin = directory / "admin" / "admin.sock"
    admin.parent.mkdir(mode=0o700)
    holder = socket.socket(socket.AF_UNIX)
    holder.bind(str(admin))
    holder.listen()
    config = load_config(write_config(directory, 'address = "127.0.0.1"\nport = 0'))

    async def start() -> Server:
        server = Server(config)
        with pytest.raises(StartError, match=f"pid {os.getpid()}"):
            await server.start()
        return server

    try:
        server = asyncio.run(start())
        assert admin.exists() and not server.runtime.path.exists()
        assert server.listeners == []
    finally:
        holder.close()
        shutil.rmtree(directory, ignore_errors=True)
