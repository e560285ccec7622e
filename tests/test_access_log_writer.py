"""The access log's writer process: lines formatted off the proxy's loop, nothing lost when
the writer is behind, signalled or gone, no process left after a stop."""

from __future__ import annotations

import logging
import os
import select
import signal
from pathlib import Path

import psutil
import pytest

from tests.serving import get, running, wait_until
from tui_passenger.logwriter import Sink
from tui_passenger.proxy.accesslog import AccessLog
from tui_passenger.proxy.request import Request

APP = {"name": "probe"}


def gone(pid: int) -> bool:
    """No such process any more (exited and reaped: not even a zombie)."""
    try:
        psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    return False


async def test_the_server_writes_through_a_writer_process_that_ends_with_it(
        tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    async with running([APP], access_log=True, access_log_file=str(path),
                       access_log_flush=0.05) as srv:
        access_log = srv.proxy.access_log
        assert access_log is not None and access_log.writer_pid is not None
        writer = psutil.Process(access_log.writer_pid)
        assert "access log writer" in " ".join(writer.cmdline())  # named for ps and top
        assert writer.ppid() == os.getpid()
        for i in range(5):
            assert (await get(srv, f"/w/{i}"))[0] == 200
        await wait_until(lambda: path.read_text().count("\n") == 5)
        pid = writer.pid
    assert gone(pid), "the writer outlived the server"
    assert [line.split('"')[1] for line in path.read_text().splitlines()] == [
        f"GET /w/{i} HTTP/1.1" for i in range(5)]


async def test_signals_for_the_group_do_not_lose_lines(tmp_path: Path) -> None:
    """Ctrl-C in a terminal or systemd's SIGTERM reach the writer too: it keeps going until
    the manager has closed its pipe, so the last lines are written."""
    path = tmp_path / "access.log"
    async with running([APP], access_log=True, access_log_file=str(path),
                       access_log_flush=3600) as srv:
        access_log = srv.proxy.access_log
        assert access_log is not None and access_log.writer_pid is not None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(access_log.writer_pid, sig)
        for _ in range(7):
            assert (await get(srv, "/"))[0] == 200
    assert path.read_text().count("\n") == 7


async def test_a_writer_that_dies_is_replaced_by_writing_on_the_loop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tui_passenger.proxy")
    path = tmp_path / "access.log"
    async with running([APP], access_log=True, access_log_file=str(path),
                       access_log_flush=0.02) as srv:
        access_log = srv.proxy.access_log
        assert access_log is not None and access_log.writer_pid is not None
        pid = access_log.writer_pid
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
        for _ in range(3):
            assert (await get(srv, "/"))[0] == 200
        await wait_until(lambda: path.read_text().count("\n") == 3)
        assert access_log.writer_pid is None and gone(pid)  # reaped
    assert any("writer process exited" in r.getMessage() for r in caplog.records)
    assert path.read_text().count("\n") == 3


async def test_a_writer_that_is_behind_gets_every_line_later(tmp_path: Path) -> None:
    """A stopped writer (a stuck disk): batches wait in the manager, beyond what the pipe
    holds, and all are written once it goes on; the loop never blocks meanwhile."""
    path = tmp_path / "access.log"
    access_log = AccessLog(os.open(path, os.O_WRONLY | os.O_CREAT), None, False, 3600)
    assert access_log.writer_pid is not None
    os.kill(access_log.writer_pid, signal.SIGSTOP)
    lines = 12_000  # about 3 MiB of frames: more than the pipe takes
    for i in range(lines):
        request = Request()
        request.agent = b"agent %d " % i + b"x" * 200
        access_log.record("127.0.0.1", request, 200, i, "app", 0.0, b"id-%d" % i)
    access_log.flush()
    assert access_log._backlog, "the pipe took it all: the test no longer tests a backlog"
    os.kill(access_log.writer_pid, signal.SIGCONT)
    await wait_until(lambda: not access_log._backlog)
    access_log.close()
    written = path.read_text().splitlines()
    assert len(written) == lines
    # In order, none twice (the bytes field carries the row's number).
    assert [int(line.split('" 200 ')[1].split()[0]) for line in written] == list(range(lines))


def test_to_a_pipe_lines_go_in_whole_pieces_no_other_writer_can_cut() -> None:
    """The main log's stream may be a pipe or a socket shared with the manager's own lines:
    only writes of up to PIPE_BUF bytes are never interleaved with another process's."""
    read, write = os.pipe()
    writer = Sink(write, "the main log", lambda level, text: None)
    data = b"".join(b"line %d %s\n" % (i, b"x" * (i % 300)) for i in range(600))
    data += b"y" * 9000 + b"\n" + b"last\n"  # one line longer than a piece
    pieces = writer._pieces(data)
    assert b"".join(pieces) == data and len(pieces) > 1
    for piece in pieces:
        assert piece.endswith(b"\n")
        assert len(piece) <= select.PIPE_BUF or piece.count(b"\n") == 1
    os.set_blocking(read, False)
    got = b""
    for piece in pieces[:3]:  # what the pipe holds at once
        writer.write(piece)
        got += os.read(read, 1 << 16)
    assert got == b"".join(pieces[:3])
    os.close(read)
    os.close(write)
