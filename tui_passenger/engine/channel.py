"""The manager's end of a control channel: send, receive, the ready handshake, closing.

One :class:`ControlChannel` owns the socket from the moment the pair is made until it is
closed, which happens once (``close()`` may be called any number of times): when the
manager lets go of the child, when the child is known to have exited, or when the child
closes its end. A reader registered on the event loop moves every packet into an inbox as
it arrives, so closing never races a pending receive, and a report the child sent just
before it exited is still there to read after the exit.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tui_passenger.runtime import protocol
from tui_passenger.runtime.protocol import Failed, Message, ProtocolError

if TYPE_CHECKING:
    from tui_passenger.engine.process import ExitStatus

#: How long a child that reported a failure may take to exit before it is killed.
EXIT_AFTER_FAILURE = 5.0

_Ready = TypeVar("_Ready", protocol.WorkerReady, protocol.PreloaderReady)


class NotReady(Exception):
    """The ready handshake failed: the child reported an error, exited, or took too long.

    ``category`` is a ``SpawnError`` category; the child is gone when this is raised.
    """

    def __init__(self, category: str, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.category = category
        self.message = message
        self.traceback = traceback


class ControlChannel:
    """The manager's end of one child's control channel (asyncio, non-blocking)."""

    __slots__ = ("_sock", "_loop", "_inbox", "_waiter", "_open")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        #: Received and not yet taken: messages, or the error a malformed packet raised.
        self._inbox: deque[Message | ProtocolError] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._open = True
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def __repr__(self) -> str:
        return f"<ControlChannel {'open' if self._open else 'closed'}>"

    @property
    def closed(self) -> bool:
        """True once the channel is closed (by us, or because the child closed its end)."""
        return not self._open

    # -- receiving -----------------------------------------------------------------------

    def _read_waiting(self) -> bool:
        """Move every packet already waiting into the inbox; True at end of file."""
        while True:
            try:
                data = self._sock.recv(protocol.MAX_MESSAGE)
            except BlockingIOError:
                return False
            except OSError:
                return True
            if not data:
                return True
            try:
                self._inbox.append(protocol.decode(data))
            except ProtocolError as exc:
                self._inbox.append(exc)

    def _on_readable(self) -> None:
        if self._read_waiting():
            self.close()
        else:
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def receive(self) -> Message | None:
        """The next message; None once the channel is closed and nothing is left unread.

        Raises ProtocolError for a malformed packet (the next call goes on after it).
        """
        while not self._inbox:
            if not self._open:
                return None
            if self._waiter is not None:
                raise RuntimeError("receive() is already waiting on this channel")
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._inbox.popleft()
        if isinstance(item, ProtocolError):
            raise item
        return item

    # -- sending -------------------------------------------------------------------------

    async def send(self, message: Message, fds: tuple[int, ...] = ()) -> None:
        """Send one message, with descriptors attached if given; OSError if the child is gone."""
        data = protocol.encode(message)
        while True:
            if not self._open:
                raise BrokenPipeError("control channel closed")
            try:
                protocol.send_packet(self._sock, data, fds)
                return
            except BlockingIOError:
                pass
            writable = self._loop.create_future()
            self._loop.add_writer(self._sock.fileno(), writable.set_result, None)
            try:
                await writable
            finally:
                self._loop.remove_writer(self._sock.fileno())

    # -- the handshake -------------------------------------------------------------------

    async def handshake(self, expected: type[_Ready], *, exited: asyncio.Future[ExitStatus],
                        kill: Callable[[], object], timeout: float, who: str,
                        task: str) -> _Ready:
        """Wait for the child's ready message of type ``expected``.

        On failure (the child reported an error, exited or closed its end, did not answer
        within ``timeout``, or the wait was cancelled) the channel is closed, the child is
        made to exit (``kill`` after a grace period, at once on timeout or cancellation)
        and NotReady says why (CancelledError is re-raised as is). ``who`` and ``task``
        word the messages: "preloader did not load the app within start_timeout".
        """
        receive = asyncio.ensure_future(self.receive())
        waiting: set[asyncio.Future[Any]] = {receive, exited}
        try:
            done, _ = await asyncio.wait(waiting, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await _dropped(receive)
            await self._settle(exited, kill, at_once=True)
            raise
        message: Message | ProtocolError | None
        if receive in done:
            try:
                message = receive.result()
            except ProtocolError as exc:
                message = exc
        else:
            message = await _dropped(receive)
        if receive not in done and message is None:
            if not exited.done():
                await self._settle(exited, kill, at_once=True)
                raise NotReady("timeout", f"{who} did not {task} within start_timeout "
                                          f"({timeout:g} s); killed it")
            # It exited first; a report it sent right before is in the socket already.
            self.close()
            message = self._inbox.popleft() if self._inbox else None
        if isinstance(message, expected):
            if exited.done():
                self.close()
            return message
        await self._settle(exited, kill, at_once=False)
        if isinstance(message, Failed):
            raise NotReady(message.category, message.message, message.traceback)
        if isinstance(message, ProtocolError):
            raise NotReady("protocol", f"{who} sent a malformed message: {message}")
        if message is not None:
            raise NotReady("protocol", f"{who} sent {message!r} instead of ready")
        raise NotReady("exited", f"{who} exited ({exited.result().describe()}) before it "
                                 "was ready")

    async def _settle(self, exited: asyncio.Future[ExitStatus], kill: Callable[[], object], *,
                      at_once: bool) -> None:
        """Close the channel and make sure the child exits (it does by itself after an
        error report or once its channel is closed; else it is killed)."""
        self.close()
        if at_once:
            kill()
        try:
            await asyncio.wait_for(asyncio.shield(exited), EXIT_AFTER_FAILURE)
        except asyncio.TimeoutError:
            kill()
            await asyncio.shield(exited)

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop reading and close the socket; what had arrived stays readable. Idempotent."""
        if not self._open:
            return
        self._read_waiting()
        self._open = False
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._wake()


async def _dropped(receive: asyncio.Future[Message | None]) -> Message | ProtocolError | None:
    """Cancel a pending receive and wait until it is gone (so the channel is free again);
    what it received if it finished first."""
    receive.cancel()
    try:
        return await receive
    except asyncio.CancelledError:
        return None
    except ProtocolError as exc:
        return exc
