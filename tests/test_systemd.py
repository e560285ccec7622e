"""systemd: sd_notify datagrams to a real NOTIFY_SOCKET (READY once every app is at its
min_instances, STATUS, WATCHDOG, STOPPING), and socket activation on real inherited
listening sockets (fd 3 on), with ``python -m tui_passenger --headless`` as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests.deploying import PYTHON, Instance, short_dir, write_config
from tests.helpers import unix_json, unix_request
from tui_passenger.systemd import Notifier, inherited_sockets


class NotifyListener:
    """The service manager's end: a datagram socket collecting sd_notify messages."""

    def __init__(self, directory: Path, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"tp-notify-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = str(directory / "notify.sock")
            self.sock.bind(self.address)
        self.sock.settimeout(30)
        self.messages: list[dict[str, str]] = []

    def next(self) -> dict[str, str]:
        """The next message, as its fields (waits for it)."""
        fields = dict(line.split("=", 1) for line in self.sock.recv(4096).decode().splitlines())
        self.messages.append(fields)
        return fields

    def until(self, key: str) -> dict[str, str]:
        """Messages up to the first with ``key``; returns that one."""
        while key not in (message := self.next()):
            pass
        return message


@pytest.fixture
def directory():
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_ready_status_watchdog_stopping(directory, abstract):
    listener = NotifyListener(directory, abstract)
    config = write_config(directory, 'address = "127.0.0.1"\nport = 0', min_instances=2)
    instance = Instance(["--headless", "-c", str(config)],
                        env={"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "200000"})
    try:
        ready = listener.until("READY")
        assert ready["READY"] == "1"
        # Sent once both workers are ready: the status asked right now shows them.
        admin = str(directory / "admin" / "admin.sock")
        processes = unix_json(admin, "/status")["apps"][0]["processes"]
        assert [p["state"] for p in processes if p["state"] in ("ready", "busy")] \
            == ["ready", "ready"], processes
        assert ready["STATUS"].startswith("1 app, 2 workers, ")
        pings = sum(1 for m in listener.messages if "WATCHDOG" in m)
        while pings < 3:  # every 0.1 s (half of WATCHDOG_USEC), from the event loop
            pings += "WATCHDOG" in listener.next()
        url = instance.wait_for(r"http://127\.0\.0\.1:\d+")[0] + "/"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert json.loads(response.read())["leaked"] == []
        instance.proc.terminate()
        assert listener.until("STOPPING")["STOPPING"] == "1"
        assert instance.finish() == 0, instance.text
    finally:
        instance.stop()
        listener.sock.close()


def test_without_notify_socket_nothing_is_sent():
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "1000"})
    assert not notifier.enabled and notifier.watchdog_interval == 0
    assert notifier.send("READY=1") is False


def test_socket_activation_serves_on_the_inherited_sockets(directory):
    tcp = socket.create_server(("127.0.0.1", 0))
    unix_path = directory / "http.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(unix_path))
    unix.listen()
    # The configured port is taken: a server that bound instead of using the inherited
    # sockets would fail.
    taken = socket.create_server(("127.0.0.1", 0))
    config = write_config(directory, f'address = "127.0.0.1"\nport = {taken.getsockname()[1]}')
    a, b = tcp.fileno(), unix.fileno()
    # systemd's order: fds 3 and 4, then LISTEN_PID set to the pid that is exec'd.
    script = (f"exec 3<&{a} 4<&{b} {a}<&- {b}<&-; export LISTEN_PID=$$ LISTEN_FDS=2 "
              f'LISTEN_FDNAMES=web:nginx; exec "$0" -m tui_passenger --headless -c "$1"')
    instance = Instance([], command=["bash", "-c", script, PYTHON, str(config)],
                        pass_fds=(a, b))
    try:
        port = tcp.getsockname()[1]
        instance.wait_for(rf"listening on http://127\.0\.0\.1:{port}/, unix:{unix_path}")
        instance.wait_for(r"worker \d+ spawned")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert json.loads(response.read())["leaked"] == []
        status, _, body = unix_request(str(unix_path))
        assert status == 200 and json.loads(body)["leaked"] == []
        admin = str(directory / "admin" / "admin.sock")
        assert unix_json(admin, "/status")["server"]["addresses"] == [
            f"http://127.0.0.1:{port}", f"unix:{unix_path}"]
        assert instance.stop() == 0, instance.text
        assert unix_path.exists()  # systemd's socket file, not ours to remove
    finally:
        instance.stop()
        for sock in (tcp, unix, taken):
            sock.close()


def test_sockets_meant_for_another_pid_are_left_alone():
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web", "OTHER": "x"}
    assert inherited_sockets(env) == []
    assert env == {"OTHER": "x"}  # taken out either way: children must not see them


def test_watchdog_for_another_pid_is_ignored():
    env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    notifier = Notifier.from_environment(env)
    assert notifier.enabled and notifier.watchdog_interval == 0 and env == {}
    started = time.monotonic()
    assert notifier.send("READY=1") is False  # nobody listens: no error, no wait
    assert time.monotonic() - started < 1


async def test_an_app_that_cannot_start_does_not_hold_back_ready(directory, monkeypatch):
    from tui_passenger.config import load_config
    from tui_passenger.server import Server

    listener = NotifyListener(directory, abstract=False)
    config = write_config(directory, 'address = "127.0.0.1"\nport = 0')
    with config.open("a") as file:
        file.write(f'[[app]]\nname = "broken"\nroot = "{directory / "app"}"\n'
                   'entry = "nosuch:app"\nbase_uri = "/broken"\n')
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    server = Server(load_config(config))
    await server.start()
    try:
        loop = asyncio.get_running_loop()
        while "READY" not in (message := await loop.run_in_executor(None, listener.next)):
            pass
        assert "failing to spawn: broken" in message["STATUS"]
        assert server.pool.groups["probe"].processes[0].state == "ready"
        assert server.pool.groups["broken"].last_error is not None
        await server.stop()
        assert listener.until("STOPPING")["STOPPING"] == "1"
    finally:
        if not server.stopped.is_set():
            await server.stop()
        listener.sock.close()


def test_reload_messages_for_notify_reload(directory):
    """What the config reload sends around a reload: RELOADING=1 with the monotonic time
    (Type=notify-reload wants it), then READY=1; a status is one line."""
    listener = NotifyListener(directory, abstract=True)
    notifier = Notifier(listener.address)
    try:
        before = time.monotonic_ns() // 1000
        notifier.reloading()
        message = listener.next()
        assert message["RELOADING"] == "1" and int(message["MONOTONIC_USEC"]) >= before
        notifier.ready("reloaded:\n2 apps")
        assert listener.next() == {"READY": "1", "STATUS": "reloaded: 2 apps"}
    finally:
        notifier.close()
        listener.sock.close()
