"""The control channel: typed messages on the wire, the manager's ControlChannel over real
sockets, and its ready handshake against real child processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap

import pytest

from tui_passenger.engine.channel import ControlChannel, NotReady
from tui_passenger.engine.process import ExitStatus
from tui_passenger.runtime import protocol
from tui_passenger.runtime.protocol import ProtocolError

EVERY_KIND = [
    protocol.SpawnRequest(7, 3, 1),
    protocol.BecomeMold(2),
    protocol.PreloaderReady(0.25, ("main", "flusher"), (0, 1, 2, 5)),
    protocol.WorkerReady("/run/w1.sock", 10, "asgi", 100, ("flusher",), (0, 1, 2, 3, 4)),
    protocol.Forked(7, 1234),
    protocol.SpawnRefused(7, "fork: out of memory"),
    protocol.ChildExited(1234, None, 9),
    protocol.IdleExit(),
    protocol.Failed("import", "ImportError: no module", "Traceback ..."),
]


@pytest.mark.parametrize("message", EVERY_KIND, ids=lambda m: type(m).__name__)
def test_every_message_survives_the_wire(message):
    data = protocol.encode(message)
    assert protocol.decode(data) == message


@pytest.mark.parametrize(("packet", "says"), [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not an object"),
    (b'{"kind": "teleport"}', "unknown control message kind 'teleport'"),
    (b'{"id": 3}', "unknown control message kind None"),
    (b'{"kind": "forked", "id": 3}', "expected ['id', 'pid']"),
    (b'{"kind": "forked", "id": 3, "pid": 4, "extra": 1}', "expected ['id', 'pid']"),
    (b'{"kind": "forked", "id": 3, "pid": "4"}', "pid='4' is not int"),
    (b'{"kind": "preloader-ready", "load_seconds": 1, "threads": [1], "own_fds": []}',
     "threads=[1] is not tuple[str, ...]"),
])
def test_malformed_packets_are_refused_with_a_reason(packet, says):
    with pytest.raises(ProtocolError) as info:
        protocol.decode(packet)
    assert says in str(info.value)


def test_a_long_traceback_is_cut_to_fit_keeping_its_end():
    tail = "ValueError: the actual cause\n"
    failed = protocol.Failed("import", "ValueError: the actual cause", "x" * 300_000 + tail)
    data = protocol.encode(failed)
    assert len(data) <= protocol.MAX_MESSAGE
    decoded = protocol.decode(data)
    assert isinstance(decoded, protocol.Failed)
    assert decoded.traceback.startswith("…") and decoded.traceback.endswith(tail)
    assert decoded.message == failed.message


async def test_send_carries_descriptors_to_the_child_end():
    ours, theirs = protocol.channel_pair()
    channel = ControlChannel(ours)
    read_end, write_end = os.pipe()
    try:
        await channel.send(protocol.SpawnRequest(1, 1, 0), (write_end,))
        os.close(write_end)
        message, fds = protocol.receive(theirs, max_fds=protocol.SPAWN_FDS)
        assert message == protocol.SpawnRequest(1, 1, 0) and len(fds) == 1
        os.write(fds[0], b"through the passed descriptor")
        os.close(fds[0])
        assert os.read(read_end, 100) == b"through the passed descriptor"
    finally:
        os.close(read_end)
        channel.close()
        theirs.close()


async def test_what_arrived_before_the_peer_closed_stays_readable():
    ours, theirs = protocol.channel_pair()
    channel = ControlChannel(ours)
    protocol.send(theirs, protocol.ChildExited(5, 0, None))
    theirs.send(b'{"kind": "nonsense"}')
    protocol.send(theirs, protocol.IdleExit())
    theirs.close()
    assert await channel.receive() == protocol.ChildExited(5, 0, None)
    with pytest.raises(ProtocolError):
        await channel.receive()
    assert await channel.receive() == protocol.IdleExit()  # a bad packet does not stop it
    assert await channel.receive() is None
    assert channel.closed  # end of file closed our end too
    with pytest.raises(BrokenPipeError):
        await channel.send(protocol.BecomeMold(1))


async def test_close_is_idempotent_keeps_unread_messages_and_wakes_a_receiver():
    ours, theirs = protocol.channel_pair()
    channel = ControlChannel(ours)
    waiting = asyncio.ensure_future(channel.receive())
    await asyncio.sleep(0)  # let it wait
    channel.close()
    assert await asyncio.wait_for(waiting, 5) is None
    channel.close()
    assert channel.closed and await channel.receive() is None

    ours, theirs2 = protocol.channel_pair()
    channel = ControlChannel(ours)
    protocol.send(theirs2, protocol.IdleExit())
    channel.close()  # before the loop had a chance to read it
    assert await channel.receive() == protocol.IdleExit()
    assert await channel.receive() is None
    theirs.close()
    theirs2.close()


CHILD = """
import os, signal, socket, sys, time
from tui_passenger.runtime import protocol
control = socket.socket(fileno=int(sys.argv[1]))
{body}
"""


async def handshake_with(body: str, timeout: float = 20.0
                         ) -> tuple[protocol.WorkerReady | NotReady, ExitStatus | None]:
    """Run a child that does ``body`` with its end of a channel and handshake with it: the
    outcome, and how the child ended if it had ended when the handshake returned."""
    ours, theirs = protocol.channel_pair()
    channel = ControlChannel(ours)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD.format(body=textwrap.dedent(body)), str(theirs.fileno()),
        pass_fds=(theirs.fileno(),))
    theirs.close()
    exited: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()

    async def watch() -> None:
        exited.set_result(ExitStatus.from_wait(await proc.wait()))

    watcher = asyncio.ensure_future(watch())
    outcome: protocol.WorkerReady | NotReady
    try:
        outcome = await channel.handshake(protocol.WorkerReady, exited=exited, kill=proc.kill,
                                          timeout=timeout, who="worker", task="start")
    except NotReady as failure:
        outcome = failure
        assert channel.closed  # a failed handshake leaves nothing open
    status = exited.result() if exited.done() else None
    channel.close()  # the child leaves when its channel closes
    await asyncio.wait_for(watcher, 10)
    return outcome, status


async def test_handshake_returns_the_ready_message():
    ready, status = await handshake_with("""
        protocol.send(control, protocol.WorkerReady("/s", os.getppid(), "wsgi", 1, (), (0,)))
        control.recv(1)  # until the manager closes its end
    """)
    assert isinstance(ready, protocol.WorkerReady) and status is None
    assert ready.socket == "/s" and ready.ppid == os.getpid()


async def test_handshake_reports_the_childs_error_sent_right_before_it_exited():
    failure, status = await handshake_with("""
        protocol.send(control, protocol.Failed("hook", "ValueError: no", "Traceback: x"))
        os._exit(5)
    """)
    assert isinstance(failure, NotReady) and status == ExitStatus(code=5)
    assert (failure.category, failure.message, failure.traceback) == (
        "hook", "ValueError: no", "Traceback: x")


async def test_handshake_refuses_a_message_out_of_turn_and_stops_the_child():
    failure, status = await handshake_with("""
        protocol.send(control, protocol.Forked(1, 2))
        control.recv(1)  # leaves once the manager closes the channel
    """)
    assert isinstance(failure, NotReady) and failure.category == "protocol"
    assert "Forked(id=1, pid=2)" in failure.message
    assert status == ExitStatus(code=0)  # it left by itself once the channel closed


async def test_handshake_names_the_exit_of_a_child_that_died_silently():
    failure, status = await handshake_with("os.kill(os.getpid(), signal.SIGKILL)")
    assert isinstance(failure, NotReady) and failure.category == "exited"
    assert failure.message == "worker exited (killed by SIGKILL) before it was ready"


async def test_handshake_kills_a_child_that_is_not_ready_in_time():
    failure, status = await handshake_with("""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)
    """, timeout=0.5)
    assert isinstance(failure, NotReady) and failure.category == "timeout"
    assert failure.message == ("worker did not start within start_timeout (0.5 s); "
                               "killed it")
    assert status == ExitStatus(signal=signal.SIGKILL)
