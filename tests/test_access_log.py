"""The access log through a real server: both formats, flushing, a failing disk, config."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from pathlib import Path

import pytest

from tests.serving import get, running, wait_until
from tui_passenger.config import ConfigError, ServerConfig, parse_config
from tui_passenger.proxy.accesslog import BUFFER_LINES, AccessLog
from tui_passenger.proxy.request import Request

APP = {"name": "probe"}
COMBINED = re.compile(
    r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
    r'"(GET|POST|HEAD) (\S+) HTTP/1\.1" (\d{3}) (\d+) "([^"]*)" "([^"]*)" app=(\S+) '
    r'\d+\.\d\dms id=(\S+)\n')


AGENT = {"User-Agent": 'probe/1.0 "quoted"'}


async def serve_requests(path: Path, count: int, **server: object) -> list[str]:
    """Answer ``count`` requests, stop gracefully, return their X-Request-Ids."""
    ids = []
    async with running([APP], access_log=True, access_log_file=str(path),
                       access_log_flush=3600, **server) as srv:
        for i in range(count):
            status, headers, body = await get(srv, f"/n/{i}?q=x",
                                              skip_auto_headers=["User-Agent"])
            assert status == 200 and len(body) == int(headers["Content-Length"])
            ids.append(headers["X-Request-Id"])
        assert not path.read_text()  # nothing written yet: buffered for an hour
    return ids


async def test_combined_lines_and_graceful_stop_writes_all(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    ids = await serve_requests(path, 25)
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 25
    for i, (line, rid) in enumerate(zip(lines, ids, strict=True)):
        match = COMBINED.fullmatch(line)
        assert match, line
        assert match.groups() == ("GET", f"/n/{i}?q=x", "200", match[4], "-", "-", "probe",
                                  rid)
        assert int(match[4]) > 0  # the body's bytes


async def test_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "access.jsonl"
    ids = await serve_requests(path, 5, access_log_format="json")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in records] == ids
    for i, record in enumerate(records):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record.pop("time"))
        assert isinstance(record.pop("ms"), float)
        del record["id"]
        assert record.pop("bytes") > 0
        assert record == {"ip": "127.0.0.1", "method": "GET", "url": f"/n/{i}?q=x",
                          "version": "1.1", "status": 200, "referer": "", "user_agent": "",
                          "app": "probe"}


async def test_bytes_referer_and_user_agent(tmp_path: Path) -> None:
    """The combined format's fields as nginx writes them: body bytes sent (0 for HEAD, the
    proxy's own page's too), the Referer and User-Agent as sent, escaped."""
    lines: dict[bool, list[str]] = {}
    for json_format in (False, True):
        path = tmp_path / f"{json_format}.log"
        async with running([{**APP, "base_uri": "/a"}], access_log=True,
                           access_log_file=str(path),
                           access_log_format="json" if json_format else "combined") as srv:
            sizes = []
            for method, where in (("GET", "/a"), ("HEAD", "/a"), ("GET", "/not/routed")):
                _, _, body = await get(srv, where, method=method, headers={
                    **AGENT, "referer": "https://example.com/from?x=1"})
                sizes.append(len(body))
        lines[json_format] = path.read_text().splitlines(keepends=True)
        assert len(lines[json_format]) == 3
    assert sizes[0] > 0 and sizes[1] == 0 and b"no application" in body  # 404: the proxy's
    combined = [COMBINED.fullmatch(line) for line in lines[False]]
    assert all(combined), lines[False]
    assert [int(m[4]) for m in combined if m] == sizes
    for m in combined:
        assert m is not None
        assert (m[5], m[6]) == ("https://example.com/from?x=1", "probe/1.0 \\x22quoted\\x22")
    records = [json.loads(line) for line in lines[True]]
    assert [r["bytes"] for r in records] == sizes
    assert {(r["referer"], r["user_agent"]) for r in records} == {
        ("https://example.com/from?x=1", AGENT["User-Agent"])}


async def test_flush_interval_writes_without_a_stop(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    async with running([APP], access_log=True, access_log_file=str(path),
                       access_log_flush=0.05) as srv:
        status, headers, _ = await get(srv, "/")
        assert status == 200
        await wait_until(lambda: path.read_text().count("\n") == 1)
        assert headers["X-Request-Id"] in path.read_text()
        status, _, _ = await get(srv, "/missing-app", headers={"Host": "nowhere"})
        await wait_until(lambda: path.read_text().count("\n") == 2)


async def test_a_failing_disk_is_reported_once_and_requests_go_on(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tui_passenger.proxy")

    def reports() -> list[str]:
        return [r.getMessage() for r in caplog.records if "access log" in r.getMessage()]

    async with running([APP], access_log=True, access_log_file="/dev/full",
                       access_log_flush=0.02) as srv:
        access_log = srv.proxy.access_log
        assert access_log is not None
        for _batch in range(3):
            for _ in range(3):
                assert (await get(srv, "/"))[0] == 200
            await wait_until(lambda: access_log._timer is None)  # this batch went out
    # The writer reports into the main log when it gets to it; once stopped, all it said
    # has been read: one report for the three batches it could not write.
    assert len(reports()) == 1, reports()
    assert "cannot write to /dev/full (No space left on device)" in reports()[0]


async def test_quotes_and_control_characters_are_escaped(tmp_path: Path) -> None:
    request = Request()
    request.url = b'/a"b\\c\x01\xe9'
    lines = []
    for json_format in (False, True):
        path = tmp_path / f"{json_format}.log"
        access_log = AccessLog(os.open(path, os.O_WRONLY | os.O_CREAT), None, json_format)
        access_log.record("::1", request, 404, 0, "-", 0.001, b'proxy "id" 1')
        access_log.close()
        lines.append(path.read_text())
    assert lines[0].split('"')[1] == "GET /a\\x22b\\x5Cc\\x01\\xE9 HTTP/1.1"
    assert lines[0].endswith("app=- 1.00ms id=proxy\\x20\\x22id\\x22\\x201\n")
    record = json.loads(lines[1])
    assert (record["url"], record["id"]) == ('/a"b\\c\x01\xe9', 'proxy "id" 1')


async def test_a_batch_formats_each_line_as_if_alone(tmp_path: Path) -> None:
    """Lines are formatted at flush, a batch at a time: one that needs escaping among plain
    ones (a url with a quote, an id with a space or a quote) changes no other line."""
    requests = []
    for url in (b"/plain?a=1", b'/q"uote', b"/caf\xe9", b"/next"):
        request = Request()
        request.url = url
        requests.append(request)
    ids = [b"id-1", b"with space", b'q"id', b""]

    def written(json_format: bool, rows: list[tuple[Request, bytes]]) -> list[str]:
        path = tmp_path / "batch.log"
        path.unlink(missing_ok=True)
        access_log = AccessLog(os.open(path, os.O_WRONLY | os.O_CREAT), None, json_format)
        for request, rid in rows:
            access_log.record("127.0.0.1", request, 200, 12, "app", 0.00125, rid)
        access_log.close()
        return [re.sub(r"\d\d:\d\d:\d\d(?= \+0000\]|Z)", "T", line)  # the second may tick
                for line in path.read_text().splitlines()]

    for json_format in (False, True):
        for rows in ([*zip(requests, ids, strict=True)],
                     [(requests[0], ids[0]), (requests[3], ids[0])]):  # plain only
            alone = [line for row in rows for line in written(json_format, [row])]
            assert written(json_format, rows) == alone
            assert len(alone) == len(rows)


async def test_a_full_buffer_is_written_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "full.log"
    access_log = AccessLog(os.open(path, os.O_WRONLY | os.O_CREAT), None, False, 3600)
    request = Request()
    for _ in range(BUFFER_LINES - 1):
        access_log.record("127.0.0.1", request, 200, 0, "app", 0.0, b"id")
    assert not path.read_text()
    access_log.record("127.0.0.1", request, 200, 0, "app", 0.0, b"id")
    # Sent to the writer at once (not an hour later): it writes them on its own.
    await wait_until(lambda: path.read_text().count("\n") == BUFFER_LINES)
    access_log.close()


def test_config_errors_of_the_new_keys() -> None:
    def error(line: str) -> str:
        with pytest.raises(ConfigError) as info:
            parse_config(f"[server]\n{line}\n", path="t.toml")
        return str(info.value)

    assert error('access_log_format = "common"').endswith(
        't.toml:2: [server]: access_log_format: must be "combined" or "json", got "common"')
    assert "t.toml:2: [server]: access_log_file: must not be empty" in error(
        'access_log_file = ""')
    assert "access_log_flush: must be greater than 0, got 0" in error("access_log_flush = 0")
    config = parse_config('[server]\naccess_log_file = "logs/a.log"\n[[app]]\nname = "a"\n'
                          'root = "/"\nentry = "m:app"\n', path="/srv/t.toml")
    assert config.server.access_log_file == "/srv/logs/a.log"
    assert config.server.access_log_format == "combined"
    assert config.server.access_log_flush == 1.0


async def test_by_default_lines_go_where_the_main_log_goes(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = logging.FileHandler(tmp_path / "main.log")
    try:
        root.handlers[:] = [handler]
        root.setLevel(logging.WARNING)  # --log-level warning: no access lines, as before
        assert AccessLog.open(ServerConfig()) is None
        root.setLevel(logging.INFO)
        access_log = AccessLog.open(ServerConfig())
        assert access_log is not None and access_log.where == "the main log"
        logging.getLogger("tui_passenger.proxy").warning("before")
        access_log.record("127.0.0.1", Request(), 200, 0, "app", 0.0, b"id-1")
        access_log.close()
        logging.getLogger("tui_passenger.proxy").warning("after")
    finally:
        root.handlers[:], root.level = saved
        handler.close()
    lines = (tmp_path / "main.log").read_text().splitlines()
    assert [line.split()[-1] for line in lines] == ["before", "id=id-1", "after"]


async def send_raw(srv, data: bytes) -> bytes:
    """Raw bytes on a fresh connection; what comes back until the server closes it."""
    reader, writer = await asyncio.open_connection(*srv.address)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_requests_the_proxy_refuses_are_logged_too(tmp_path: Path) -> None:
    """As nginx logs its 400s: a malformed request line ("-"), a head the proxy refuses
    after reading its request line (that line, and the Referer and User-Agent read), a
    pipelined refusal after a served one."""
    path = tmp_path / "access.log"
    host = b"Host: x\r\n"
    async with running([APP], access_log=True, access_log_file=str(path)) as srv:
        assert (await send_raw(srv, b"G(T / HTTP/1.1\r\n" + host + b"\r\n")).startswith(
            b"HTTP/1.1 400 ")
        # Refused at the second Range, before the User-Agent after it was looked at.
        assert (await send_raw(srv, b"GET /two HTTP/1.1\r\n" + host + b"Referer: /from\r\n"
                               b"Range: bytes=0-1\r\nRange: bytes=2-3\r\n"
                               b"User-Agent: refused/1\r\n\r\n")
                ).startswith(b"HTTP/1.1 400 ")
        reply = await send_raw(srv, b"GET /ok HTTP/1.1\r\n" + host + b"\r\n"
                               b"GET /bad HTTP/1.1\r\nX Y: 1\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 400 " in reply
    lines = path.read_text().splitlines()
    assert len(lines) == 4, lines
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^]]+\] "-" 400 \d+ "-" "-" app=- '
                        r'\d+\.\d\dms id=-', lines[0]), lines[0]
    assert '"GET /two HTTP/1.1" 400 ' in lines[1] and lines[1].endswith("id=-")
    assert '"/from" "refused/1" app=-' in lines[1]  # the fields read before the refusal
    assert '"GET /ok HTTP/1.1" 200 ' in lines[2] and "app=probe" in lines[2]
    assert '"-" 400 ' in lines[3]  # its head broke before its request line was whole
    for line in lines[:2]:
        assert int(line.split('" 400 ')[1].split()[0]) > 0  # the error page's bytes
