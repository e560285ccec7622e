"""``[server] bind``: TCP and Unix sockets at once, the Unix socket's mode and group, stale
and live socket files, forwarding headers from a Unix-socket peer, and a real nginx in front
over the Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import shutil
import socket
import stat
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.deploying import Instance, short_dir, write_config
from tests.helpers import unix_request
from tui_passenger.config import load_config
from tui_passenger.listeners import StartError
from tui_passenger.server import Server
from tui_passenger.status import snapshot


@contextlib.asynccontextmanager
async def serving(directory: Path, server_lines: str) -> AsyncIterator[Server]:
    server = Server(load_config(write_config(directory, server_lines)))
    await server.start()
    try:
        await server.pool.wait_started(30)
        yield server
    finally:
        await server.stop()


async def unix_get(path: Path, headers: dict[str, str] | None = None) -> dict:
    status, _, body = await asyncio.to_thread(unix_request, str(path), headers=headers)
    assert status == 200, body
    return json.loads(body)


def _http_get(url: str, headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def http_get(url: str, headers: dict[str, str] | None = None) -> dict:
    """GET over TCP, off the event loop the server runs on."""
    return await asyncio.to_thread(_http_get, url, headers)


@pytest.fixture
def directory():
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_serves_on_every_bind_address(directory):
    sock = directory / "run" / "http.sock"
    binds = f'bind = ["127.0.0.1:0", "unix:{sock}", "[::1]:0"]\nbind_mode = "0640"'
    async with serving(directory, binds) as server:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o640
        v4, unix, v6 = server.addresses
        assert v4.startswith("http://127.0.0.1:") and unix == f"unix:{sock}"
        assert v6.startswith("http://[::1]:") and server.url == v4
        assert (await http_get(v4 + "/"))["remote_addr"] == "127.0.0.1"
        assert (await http_get(v6 + "/"))["remote_addr"] == "::1"
        reply = await unix_get(sock)
        assert reply["remote_addr"] == "127.0.0.1" and reply["leaked"] == []
        assert snapshot(server).to_json()["server"]["addresses"] == server.addresses
    assert not sock.exists()  # removed on stop: it was ours


async def test_a_unix_socket_peer_is_the_trusted_local_proxy(directory):
    """No address of its own: nothing added to X-Forwarded-For, which it may set (as nginx
    does); a TCP client's X-Forwarded-For is replaced, as before."""
    sock = directory / "http.sock"
    async with serving(directory, f'bind = ["127.0.0.1:0", "unix:{sock}"]') as server:
        plain = await unix_get(sock)
        assert plain["xff"] is None and plain["proto"] == "http"
        proxied = await unix_get(sock, {"X-Forwarded-For": "203.0.113.9",
                                        "X-Forwarded-Proto": "https", "X-Request-Id": "r-1"})
        assert (proxied["xff"], proxied["proto"], proxied["request_id"]) == (
            "203.0.113.9", "https", "r-1")
        assert proxied["remote_addr"] == "127.0.0.1"
        direct = await http_get(server.url + "/", {"X-Forwarded-For": "203.0.113.9"})
        assert direct["xff"] == "127.0.0.1"


async def test_a_stale_socket_file_is_replaced_and_a_live_one_refused(directory):
    sock = directory / "http.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()  # the file stays: the way a killed instance leaves it
    async with serving(directory, f'bind = ["unix:{sock}"]') as server:
        assert server.address is None and server.url == f"unix:{sock}"
        assert (await unix_get(sock))["pid"]
        inode = os.stat(sock).st_ino
        (directory / "b").mkdir()
        second = Server(load_config(write_config(directory / "b", f'bind = ["unix:{sock}"]')))
        with pytest.raises(StartError, match="another process is listening there"):
            await second.start()
        assert os.stat(sock).st_ino == inode  # the live one's file is untouched
        assert (await unix_get(sock))["pid"]
        assert not second.runtime.path.exists()


async def test_a_failed_bind_closes_and_removes_what_was_opened_before_it(directory):
    sock = directory / "http.sock"
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    server = Server(load_config(write_config(
        directory, f'bind = ["unix:{sock}", "127.0.0.1:{port}"]')))
    try:
        with pytest.raises(StartError, match=rf"127\.0\.0\.1:{port}: the address is already "
                                             r"in use.*change \[server\] bind"):
            await server.start()
    finally:
        taken.close()
    assert not sock.exists() and not server.runtime.path.exists()
    assert not (directory / "admin" / "admin.sock").exists()


async def test_the_unix_socket_gets_the_group_asked_for(directory):
    others = [g for g in os.getgroups() if g != os.getegid()]
    if os.geteuid() == 0:
        group = grp.getgrnam("nogroup") if "nogroup" in {g.gr_name for g in grp.getgrall()} \
            else grp.getgrgid(1)
    elif others:
        group = grp.getgrgid(others[0])
    else:
        pytest.skip("no group to give the socket but our own")
    sock = directory / "http.sock"
    lines = f'bind = ["unix:{sock}"]\nbind_group = "{group.gr_name}"'
    async with serving(directory, lines):
        assert os.stat(sock).st_gid == group.gr_gid
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660  # the default mode


# -- nginx in front, over the Unix socket (the README's server block) -----------------------

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream tui_passenger {{
        server unix:{sock};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://tui_passenger;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_nginx_in_front_over_the_unix_socket():
    directory = short_dir(0o755)  # nginx's worker must reach the socket
    sock = directory / "run" / "http.sock"
    group = "nogroup" if os.geteuid() == 0 else grp.getgrgid(os.getgid()).gr_name
    config = write_config(directory, f'bind = ["unix:{sock}"]\nbind_group = "{group}"')
    instance = Instance(["--headless", "-c", str(config)])
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    (directory / "nginx.conf").write_text(NGINX_CONF.format(
        dir=directory, sock=sock, port=port,
        user=f"user nobody {group};" if os.geteuid() == 0 else ""))
    nginx = None
    try:
        instance.wait_for(r"worker \d+ spawned")
        nginx = subprocess.Popen([NGINX, "-p", str(directory), "-c",
                                  str(directory / "nginx.conf"), "-e", "stderr"],
                                 stderr=subprocess.PIPE)
        replies = []
        for _ in range(3):  # keep-alive upstream: the same worker connection is reused
            replies.append(_get_until_up(f"http://127.0.0.1:{port}/", nginx,
                                         directory / "nginx.pid"))
        assert {r["xff"] for r in replies} == {"127.0.0.1"}  # the client, as nginx saw it
        assert all(r["remote_addr"] == "127.0.0.1" and r["request_id"] for r in replies)
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        assert instance.stop() == 0, instance.text
        shutil.rmtree(directory, ignore_errors=True)


def _get_until_up(url: str, nginx: subprocess.Popen, pid_file: Path) -> dict:
    """GET ``url`` once nginx listens: it writes its pid file after opening its sockets."""
    deadline = time.monotonic() + 30
    while not pid_file.exists():
        assert nginx.poll() is None, nginx.stderr.read() if nginx.stderr else "nginx exited"
        assert time.monotonic() < deadline, "nginx never started"
        time.sleep(0.02)
    return _http_get(url)


@pytest.mark.parametrize("lines, expected", [
    ('bind = ["127.0.0.1:3000"]\nport = 3001',
     r"p\.toml:2: \[server\]: bind: give either bind or address and port, not both"),
    ('address = "0.0.0.0"\nbind = ["127.0.0.1:3000"]', r"p\.toml:3: \[server\]: bind: give either"),
    ('bind = ["localhost"]', r'bind: "localhost" is not an address: "HOST:PORT", "\[IPv6\]:PORT"'),
    ('bind = ["127.0.0.1:70000"]', r'bind: "127\.0\.0\.1:70000" is not an address'),
    ("bind = []", r"bind: must list at least one address"),
    ('bind_mode = "rw"', r'bind_mode: expected a file mode such as "0660", got "rw"'),
    ('bind_group = "no-such-group-here"', r'bind_group: no group "no-such-group-here"'),
])
def test_bind_config_errors_name_the_key_and_line(lines, expected):
    from tui_passenger.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=expected):
        parse_config(f"[server]\n{lines}\n", path="p.toml")


def test_bind_values_are_normalised(directory):
    from tui_passenger.config import apply_overrides, parse_config

    config = parse_config('[server]\nbind = ["[::1]:3000", "unix:run/http.sock", '
                          '"127.0.0.1:3000", "[::1]:3000"]\nbind_mode = 0o600\n'
                          '[[app]]\nname = "a"\nroot = "."\nentry = "m:app"\n',
                          path=directory / "p.toml")
    assert config.server.bind == ("[::1]:3000", f"unix:{directory}/run/http.sock",
                                  "127.0.0.1:3000")
    assert config.server.bind_mode == 0o600
    with pytest.raises(Exception, match="--port: the config's \\[server\\] bind says where"):
        apply_overrides(config, port=4000)
