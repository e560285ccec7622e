"""The probe listener (``[server] metrics_bind``) against a real server on a real TCP port:
/metrics, /healthz, /readyz, nothing else; readiness through start-up, a failing app and a
shutdown; its config errors."""

from __future__ import annotations

import asyncio
import os
import socket

import aiohttp
import pytest

from tests.conftest import REPO
from tests.helpers import unix_request
from tests.serving import config_text, get, running, wait_until
from tui_passenger.config import ConfigError, parse_config
from tui_passenger.server import Server

BROKEN = str(REPO / "sample_apps" / "broken")
APP = {"name": "app", "min_instances": 2, "max_instances": 3}


async def probe(server, path: str, method: str = "GET") -> tuple[int, str, str]:
    """One request to the probe listener: status, content type, body."""
    host, port = server.probes.address
    async with aiohttp.ClientSession() as session, \
            session.request(method, f"http://{host}:{port}{path}") as response:
        return response.status, response.content_type, await response.text()


def metric_names(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


async def test_metrics_healthz_and_readyz_on_the_tcp_address():
    async with running([APP], metrics_bind="127.0.0.1:0") as server:
        await wait_until(lambda: len(server.pool.groups["app"].processes) == 2, 20)
        assert server.probes.address[0] == "127.0.0.1" and server.probes.address[1] > 0
        assert await probe(server, "/healthz") == (200, "text/plain", "ok\n")
        assert await probe(server, "/readyz") == (200, "text/plain", "ready\n")
        assert (await get(server, "/"))[0] == 200
        status, content_type, text = await probe(server, "/metrics")
        assert status == 200 and content_type == "text/plain"
        assert 'tui_passenger_requests_total{app="app"} 1.0' in text
        assert 'tui_passenger_processes{app="app",state="ready"} 2.0' in text
        assert 'tui_passenger_spawn_duration_seconds_count{app="app",method="smart"} 2.0' in text
        # The same families as the admin API's /metrics: one registry, two doors.
        _, _, admin_text = await asyncio.to_thread(unix_request, str(server.admin.path),
                                                   url="/metrics")
        assert metric_names(admin_text.decode()) == metric_names(text)


async def test_no_admin_action_is_reachable_and_other_methods_are_refused():
    async with running([APP], metrics_bind="127.0.0.1:0") as server:
        group = server.pool.groups["app"]
        for path in ("/status", "/events", "/apps/app/scale", "/processes/1/kill", "/",
                     "/metrics/", "/sampling"):
            assert (await probe(server, path))[0] == 404, path
            assert (await probe(server, path, "POST"))[0] == 404, path
        for path in ("/metrics", "/healthz", "/readyz"):
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                assert (await probe(server, path, method))[0] == 405, (path, method)
        assert (await probe(server, "/readyz", "HEAD"))[0] == 200
        assert group.min_instances == 2 and server.stopping is False


async def test_readyz_names_the_app_below_its_minimum_while_healthz_stays_up():
    apps = [APP, {"name": "broken", "root": BROKEN, "entry": "app:application",
                  "base_uri": "/broken"}]
    async with running(apps, metrics_bind="127.0.0.1:0") as server:
        await wait_until(lambda: len(server.pool.groups["app"].processes) == 2, 20)
        assert server.pool.groups["broken"].spawn_failures >= 1
        assert await probe(server, "/readyz") == (
            503, "text/plain", "below min_instances: broken (0 of 1)\n")
        assert (await probe(server, "/healthz"))[0] == 200
        # Scaled above what is running: not ready until the new worker is.
        server.pool.scale(server.pool.groups["app"], 3)
        reply = (await probe(server, "/readyz"))[2]
        assert reply.startswith("below min_instances: ") and "broken (0 of 1)" in reply


async def test_readyz_is_503_from_the_first_moment_until_every_app_is_up(tmp_path):
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    (tmp_path / "app.py").write_text(
        "import os\n"
        "with open(os.environ['GATE']) as gate:  # held here until the test opens the gate\n"
        "    gate.read()\n"
        + (REPO / "tests" / "apps" / "proxy_probe" / "app.py").read_text())
    app = {**APP, "root": str(tmp_path), "env": {"GATE": str(gate)}}
    config = parse_config(config_text({"metrics_bind": "127.0.0.1:0"}, [app]), path="t.toml")
    server = Server(config, admin=False)
    await server.start()
    try:
        status, _, text = await probe(server, "/readyz")
        assert (status, text) == (503, "below min_instances: app (0 of 2)\n")
        assert (await probe(server, "/healthz"))[0] == 200

        def open_gate() -> None:
            with open(gate, "w") as writer:
                writer.write("go")

        await asyncio.to_thread(open_gate)
        await wait_until(lambda: len(server.pool.groups["app"].processes) == 2, 20)
        assert (await probe(server, "/readyz"))[0] == 200
    finally:
        await server.stop()


async def test_during_the_drain_readyz_says_shutting_down_and_healthz_stays_200():
    async with running([APP], metrics_bind="127.0.0.1:0") as server:
        await wait_until(lambda: len(server.pool.groups["app"].processes) == 2, 20)
        slow = asyncio.ensure_future(get(server, "/slow?1.5"))
        await wait_until(lambda: any(p.sessions for p in server.pool.groups["app"].processes))
        address = server.probes.address
        stopping = asyncio.ensure_future(server.stop())
        await wait_until(lambda: server.stopping)
        assert await probe(server, "/readyz") == (503, "text/plain", "shutting down\n")
        assert (await probe(server, "/healthz"))[0] == 200
        assert not stopping.done()  # still draining the slow request
        assert (await slow)[0] == 200
        await stopping
    with pytest.raises(ConnectionRefusedError):  # and it is gone with the server
        socket.create_connection(address, timeout=5).close()


async def test_healthz_fails_when_the_managers_periodic_task_died():
    async with running([APP], metrics_bind="127.0.0.1:0") as server:
        def broken() -> None:
            raise RuntimeError("periodic work broke")

        server.enforce_memory_limits = broken  # what the ticker runs every second

        async def unhealthy() -> tuple[int, str, str]:
            while (reply := await probe(server, "/healthz"))[0] == 200:
                await asyncio.sleep(0.05)  # the next tick (once a second) fails
            return reply

        status, _, text = await asyncio.wait_for(unhealthy(), 5)
        assert status == 503 and "periodic work broke" in text


async def test_an_address_in_use_is_an_error_naming_metrics_bind():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        text = config_text({"metrics_bind": f"127.0.0.1:{port}"}, [APP])
        server = Server(parse_config(text, path="t.toml"))
        with pytest.raises(OSError, match=rf"metrics_bind 127\.0\.0\.1:{port}: "
                                          "Address already in use"):
            await server.start()
        await server.stop()
        assert not server.admin.path.exists()
    finally:
        taken.close()


def test_off_by_default():
    config = parse_config('[[app]]\nname = "a"\nroot = "."\nentry = "m:app"\n')
    assert config.server.metrics_bind is None


@pytest.mark.parametrize("value, parsed", [
    ('"0.0.0.0:9100"', ("0.0.0.0", 9100)),
    ('"[::]:9100"', ("::", 9100)),
    ('"Metrics.Internal:9100"', ("metrics.internal", 9100)),
])
def test_addresses(value, parsed):
    text = f'[server]\nmetrics_bind = {value}\n[[app]]\nname = "a"\nroot = "."\nentry = "m:app"\n'
    assert parse_config(text).server.metrics_bind == parsed


@pytest.mark.parametrize("value, message", [
    ('["0.0.0.0:9100", "[::]:9100"]', 'takes one address (HOST:PORT, e.g. "0.0.0.0:9100"'),
    ('"unix:/run/tp.sock"', "must be a TCP address"),
    ("9100", "expected a string, got 9100 (integer)"),
    ('"9100"', 'must be HOST:PORT, e.g. "0.0.0.0:9100" or "[::]:9100", got "9100"'),
    ('":9100"', "must be HOST:PORT"),
    ('"::1:9100"', 'write an IPv6 address in brackets, e.g. "[::1]:9100"'),
    ('"[10.0.0.1]:9100"', '"10.0.0.1" in brackets is not an IPv6 address'),
    ('"0.0.0.0:70000"', "port must be between 0 and 65535, got 70000"),
    ('"300.1.1.1:9100"', '"300.1.1.1" is not a host name or an IPv4 address'),
])
def test_config_errors_name_the_line_and_the_key(value, message):
    text = (f'[server]\nport = 3000\nmetrics_bind = {value}\n'
            '[[app]]\nname = "a"\nroot = "."\nentry = "m:app"\n')
    with pytest.raises(ConfigError) as error:
        parse_config(text, path="passenger.toml")
    assert str(error.value).startswith("passenger.toml:3: [server]: metrics_bind: ")
    assert message in str(error.value)
