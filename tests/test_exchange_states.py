"""The exchange's states and its one way off a worker, driven in memory: a real
UpstreamConnection parsing real response bytes, with the pool, the client connection and
the front standing in (their real behaviour is in test_proxy, test_faults and
test_pipelining, with real workers)."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace

from tui_passenger.pool.group import READY
from tui_passenger.proxy.exchange import DONE, ON_WORKER, QUEUED, RELAYING, Exchange
from tui_passenger.proxy.request import Request, Stats
from tui_passenger.proxy.routing import Router
from tui_passenger.proxy.upstream import UpstreamConnection

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n"


class Transport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class Client:
    """The client connection as an exchange sees it (ClientSide)."""

    ip, address, trusted = "192.0.2.1", b"192.0.2.1:5000", False
    forwarding = b"X-Forwarded-For: 192.0.2.1\r\n"

    def __init__(self) -> None:
        self.closed = self.paused_writing = self.aborted = False
        self.written = b""
        self.finished_with: list[bool] = []

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = self.closed = True

    def finished(self, keep_alive: bool) -> None:
        self.finished_with.append(keep_alive)


class Pool:
    """Hands out the processes it is given, in turn; records what the exchange tells it."""

    def __init__(self, *processes: SimpleNamespace) -> None:
        self.free = list(processes)
        self.calls: list[tuple[str, int]] = []
        self.waiters: list[object] = []

    def try_checkout(self, group: object) -> SimpleNamespace | None:
        if not self.free:
            return None
        process = self.free.pop(0)
        process.sessions += 1
        return process

    def try_pipeline(self, group: object) -> None:
        return None

    def enqueue(self, group: object, callback: object, pipelinable: bool) -> object:
        self.waiters.append(callback)
        return callback

    def withdraw(self, group: object, waiter: object) -> None:
        self.waiters.remove(waiter)
        self.calls.append(("withdraw", 0))

    def unqueue(self, process: SimpleNamespace, request: object) -> None:
        if request in process.queued:
            process.queued.remove(request)

    def release(self, process: SimpleNamespace) -> None:
        process.sessions -= 1
        self.calls.append(("release", process.pid))

    def drain(self, process: SimpleNamespace, reason: str) -> None:
        self.calls.append(("drain", process.pid))

    def kill(self, process: SimpleNamespace, *, force: bool, reason: str) -> None:
        self.calls.append(("kill", process.pid))


def worker(pid: int, group: SimpleNamespace) -> tuple[SimpleNamespace, Transport]:
    """A pool process with one idle connection (whose transport is returned)."""
    transport = Transport()
    connection = UpstreamConnection()
    connection.connection_made(transport)  # type: ignore[arg-type]
    process = SimpleNamespace(pid=pid, group=group, sessions=0, state=READY, queued=deque(),
                              connections=[connection],
                              worker=SimpleNamespace(concurrency=1, socket_path=None))
    return process, transport


def exchange(*pids: int, method: str = "GET") -> tuple[Exchange, Client, Pool, list]:
    """A started exchange for ``GET /`` and the workers (with transports) it may get."""
    app = SimpleNamespace(max_request_time=0, environment="production")
    group = SimpleNamespace(name="app", app=app, requests=0)
    workers = [worker(pid, group) for pid in pids]
    pool = Pool(*(process for process, _ in workers))
    front = SimpleNamespace(router=Router([((), "/", True, group)]), pool=pool, stats=Stats(),
                            access_log=None, closing=False, on_request=None,
                            request_id=lambda peer, request: b"req-1")
    request = Request()
    request.method, request.url, request.host = method, b"/", "example.test"
    client = Client()
    ex = Exchange(front, client, request)  # type: ignore[arg-type]
    ex.start()
    return ex, client, pool, workers


def test_a_response_goes_through_the_states_and_the_connection_is_kept():
    ex, client, pool, [(process, transport)] = exchange(1)
    connection = ex.upstream
    assert ex.state is ON_WORKER and transport.written.startswith(b"GET / HTTP/1.1\r\n")
    connection.data_received(HEAD + b"hello")
    assert ex.state is RELAYING and client.written.endswith(b"\r\n\r\nhello")
    connection.data_received(b"world")
    assert ex.state is DONE and client.written.endswith(b"helloworld")
    assert ex.process is None and ex.upstream is None
    assert process.connections == [connection] and not transport.closed
    assert pool.calls == [("release", 1)] and process.sessions == 0
    assert client.finished_with == [True]


def test_client_gone_mid_response_closes_the_connection_and_frees_the_worker():
    ex, client, pool, [(process, transport)] = exchange(1)
    connection = ex.upstream
    connection.data_received(HEAD + b"hel")
    client.closed = True
    ex.client_gone()
    assert ex.state is DONE and ex.upstream is None and connection.sink is None
    assert transport.closed and process.connections == []
    assert pool.calls == [("release", 1)] and client.finished_with == [False]


def test_client_gone_while_queued_leaves_the_queue():
    ex, client, pool, _ = exchange()
    assert ex.state is QUEUED and len(pool.waiters) == 1
    ex.client_gone()
    assert ex.state is DONE and pool.waiters == [] and pool.calls == [("withdraw", 0)]


def test_a_queued_request_gets_a_worker_later():
    ex, client, pool, _ = exchange()
    process, transport = worker(2, ex.group)
    process.sessions = 1
    pool.waiters[0](process, None)
    assert ex.state is ON_WORKER and ex.waiter is None and transport.written
    ex.client_gone()  # now on the worker: the connection is dropped, the slot released
    assert ex.state is DONE and transport.closed and pool.calls == [("release", 2)]


def test_a_reclaimed_request_leaves_its_worker_and_asks_again():
    ex, client, pool, [(first, first_transport), (second, second_transport)] = exchange(1, 2)
    ex.reclaim()  # the pool has already unqueued it and given the slot back
    assert first_transport.closed and pool.calls == []
    assert ex.state is ON_WORKER and ex.process is second and second_transport.written
    ex.upstream.data_received(HEAD + b"helloworld")
    assert ex.state is DONE and pool.calls == [("release", 2)]


def test_a_worker_lost_before_answering_is_drained_and_the_request_retried():
    ex, client, pool, [(first, first_transport), (second, _)] = exchange(1, 2)
    ex.upstream.connection_lost(None)
    assert pool.calls == [("drain", 1), ("release", 1)] and ex.front.stats.retries == 1
    assert ex.state is ON_WORKER and ex.process is second and ex.attempt == 2
    ex.upstream.data_received(HEAD + b"helloworld")
    assert ex.state is DONE and client.finished_with == [True]


def test_a_response_cut_short_aborts_the_client_and_keeps_the_worker():
    ex, client, pool, [(process, _)] = exchange(1)
    ex.upstream.data_received(HEAD + b"hel")
    ex.upstream.connection_lost(None)
    assert ex.state is DONE and client.aborted and client.finished_with == [False]
    assert pool.calls == [("release", 1)]  # not drained: the worker itself is fine


def test_max_request_time_kills_the_worker_and_answers_504_or_cuts_the_response():
    ex, client, pool, [(process, transport)] = exchange(1)
    ex._too_long()
    assert ex.state is DONE and transport.closed and client.written.startswith(b"HTTP/1.1 504")
    assert pool.calls == [("release", 1), ("kill", 1)]

    ex, client, pool, [(process, transport)] = exchange(1)
    ex.upstream.data_received(HEAD + b"hel")
    ex._too_long()
    assert ex.state is DONE and transport.closed and client.aborted
    assert pool.calls == [("release", 1), ("kill", 1)]


async def test_a_connect_that_fails_after_the_exchange_left_the_worker_changes_nothing(tmp_path):
    ex, client, pool, [(process, _)] = exchange(1)
    ex.upstream.data_received(HEAD + b"helloworld")  # one request done: a second one now
    process.connections.clear()
    process.worker.socket_path = str(tmp_path / "no-such-socket")
    ex = Exchange(ex.front, client, ex.request)
    pool.free.append(process)
    ex.start()  # no idle connection: connecting, in a task
    assert ex.state is ON_WORKER and ex.upstream is None
    ex._too_long()
    assert ex.state is DONE and client.written.endswith(b"max_request_time (0 s)\n")
    connecting = asyncio.all_tasks() - {asyncio.current_task()}
    assert len(connecting) == 1
    await asyncio.wait(connecting, timeout=10)  # the connect attempt fails
    assert all(task.done() for task in connecting)
    assert ex.state is DONE and pool.waiters == [] and process.sessions == 0
    assert not client.aborted and client.finished_with == [True, True]
    assert ex.front.stats.retries == 0 and ex.front.stats.errors_502 == 0
