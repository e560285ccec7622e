"""The messages the manager exchanges with preloaders and workers, and their wire format.

Every control channel is an ``AF_UNIX`` ``SOCK_SEQPACKET`` socket pair: one JSON object per
packet, so message boundaries survive and file descriptors can ride along with a message
(``SCM_RIGHTS``). The object's ``kind`` names the message; its other keys are the fields of
the dataclass below registered under that kind. The child watches its end for EOF: when the
manager goes away, the child exits instead of running unsupervised.

Manager to preloader: :class:`SpawnRequest` (with :data:`SPAWN_FDS` descriptors).
Manager to a forked worker: :class:`BecomeMold`.
Preloader (or mold) to manager: :class:`PreloaderReady`, :class:`Forked`,
:class:`SpawnRefused`, :class:`ChildExited`, :class:`IdleExit`, :class:`Failed`.
Worker to manager: :class:`WorkerReady`, :class:`Failed`.

This module is imported by the worker runtime, so it uses nothing but the standard library.
The manager's asynchronous end is ``tui_passenger.engine.channel``; the blocking
:func:`send` and :func:`receive` here are the child's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import traceback
from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from typing import TypeAlias

#: Largest message either side sends; long tracebacks are cut to fit.
MAX_MESSAGE = 128 * 1024
#: File descriptors that travel with one spawn request: worker control, stdout, stderr.
SPAWN_FDS = 3
#: Text fields shortened (in this order) when a message would not fit in a packet.
TRIMMABLE = ("traceback", "message")


class ExitCode(IntEnum):
    """Exit statuses with a meaning, so the manager can tell why a child stopped."""

    OK = 0
    #: The application could not be imported (a spawn error, not worth retrying at once).
    APP_LOAD_ERROR = 4
    #: A ``starting_worker_process`` hook raised.
    HOOK_ERROR = 5
    #: The server could not start (socket bind, ASGI lifespan startup failure).
    STARTUP_ERROR = 6


class ProtocolError(ValueError):
    """A packet that is not a well-formed message of a known kind."""


#: Checks for the field types messages may use; JSON arrays become tuples.
_FIELD_CHECKS: dict[str, Callable[[object], bool]] = {
    "int": lambda v: type(v) is int,
    "int | None": lambda v: v is None or type(v) is int,
    "float": lambda v: type(v) in (int, float),
    "str": lambda v: type(v) is str,
    "tuple[int, ...]": lambda v: type(v) is list and all(type(x) is int for x in v),
    "tuple[str, ...]": lambda v: type(v) is list and all(type(x) is str for x in v),
}


class _Wire:
    """What every message has: the ``kind`` it travels under."""

    __slots__ = ()
    KIND: ClassVar[str]


@dataclasses.dataclass(frozen=True)
class SpawnRequest(_Wire):
    """Fork one worker; carries its control channel, stdout and stderr as descriptors."""

    KIND = "spawn"
    id: int
    #: The worker's number within its app and the preloader's generation (its title).
    number: int
    generation: int


@dataclasses.dataclass(frozen=True)
class BecomeMold(_Wire):
    """To an idle forked worker: stop serving and become the next preloader (refork)."""

    KIND = "mold"
    #: The generation it is the preloader of.
    generation: int


@dataclasses.dataclass(frozen=True)
class RetireWebSockets(_Wire):
    """To a worker about to get SIGTERM: once stopping, let its open WebSockets go on up to
    ``grace`` seconds, then close them with ``code`` (1012 when it is being replaced, 1001
    when it is going away). Without it a stopping worker closes them at once with 1001."""

    KIND = "retire-websockets"
    code: int
    grace: float


@dataclasses.dataclass(frozen=True)
class PreloaderReady(_Wire):
    """The preloader loaded the app (or a worker became the mold) and takes spawn requests."""

    KIND = "preloader-ready"
    load_seconds: float
    #: Threads running after the load (a forked worker loses them).
    threads: tuple[str, ...]
    #: Descriptors of our runtime (shown, never flagged as inherited by the app).
    own_fds: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class WorkerReady(_Wire):
    """The worker accepts requests on ``socket`` (its ``own_fds`` as above)."""

    KIND = "worker-ready"
    socket: str
    ppid: int
    interface: str
    concurrency: int
    #: Threads of the preloader that did not survive the fork (empty when not forked).
    lost_threads: tuple[str, ...]
    own_fds: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Forked(_Wire):
    """Answer to :class:`SpawnRequest` ``id``: the new worker's pid."""

    KIND = "forked"
    id: int
    pid: int


@dataclasses.dataclass(frozen=True)
class SpawnRefused(_Wire):
    """Answer to :class:`SpawnRequest` ``id``: no worker, and why."""

    KIND = "spawn-refused"
    id: int
    reason: str


@dataclasses.dataclass(frozen=True)
class ChildExited(_Wire):
    """The preloader reaped worker ``pid``; ``code`` or ``signal`` says how it ended."""

    KIND = "exit"
    pid: int
    code: int | None
    signal: int | None


@dataclasses.dataclass(frozen=True)
class IdleExit(_Wire):
    """The preloader leaves: no spawn request within ``max_preloader_idle_time``."""

    KIND = "idle-exit"


@dataclasses.dataclass(frozen=True)
class Failed(_Wire):
    """Loading or starting failed; ``category`` names the step (see ``SpawnError``)."""

    KIND = "error"
    category: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, category: str, exc: BaseException) -> Failed:
        """The report of ``exc``, with its traceback."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(category, f"{type(exc).__name__}: {exc}", text)


#: Any message either side sends. A string, as Python 3.9 (an app's interpreter may be that
#: old) cannot evaluate ``X | Y`` of classes.
Message: TypeAlias = ("SpawnRequest | BecomeMold | PreloaderReady | WorkerReady | Forked"
                      " | SpawnRefused | ChildExited | IdleExit | Failed | RetireWebSockets")


def _registry(*classes: type[Message]) -> dict[str, type[Message]]:
    """The message classes by kind; each field must have a type with a wire form."""
    for cls in classes:
        for field in dataclasses.fields(cls):
            if field.type not in _FIELD_CHECKS:
                raise TypeError(f"{cls.__name__}.{field.name}: no wire form for {field.type}")
    return {cls.KIND: cls for cls in classes}


_KINDS = _registry(SpawnRequest, BecomeMold, PreloaderReady, WorkerReady, Forked, SpawnRefused,
                   ChildExited, IdleExit, Failed, RetireWebSockets)


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """A new control channel; both ends are close-on-exec until passed on deliberately."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def _dump(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def encode(message: Message) -> bytes:
    """Serialise one message, shortening its longest text fields to fit in a packet."""
    fields: dict[str, Any] = {"kind": message.KIND}
    for field in dataclasses.fields(message):
        fields[field.name] = getattr(message, field.name)
    data = _dump(fields)
    for key in TRIMMABLE:
        if len(data) <= MAX_MESSAGE:
            return data
        value = fields.get(key)
        if isinstance(value, str) and len(value) > 1024:
            excess = len(data) - MAX_MESSAGE + 64
            fields[key] = "…" + value[min(len(value) - 512, excess):]
            data = _dump(fields)
    if len(data) <= MAX_MESSAGE:
        return data
    raise ValueError(f"message too large for the control channel ({len(data)} bytes)")


def decode(data: bytes) -> Message:
    """Parse one packet; ProtocolError if it is not a well-formed message of a known kind."""
    try:
        fields = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"control message is not JSON: {data[:80]!r}") from exc
    if not isinstance(fields, dict):
        raise ProtocolError(f"control message is not an object: {data[:80]!r}")
    kind = fields.pop("kind", None)
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown control message kind {kind!r}: {data[:80]!r}")
    expected = {field.name: str(field.type) for field in dataclasses.fields(cls)}
    if fields.keys() != expected.keys():
        raise ProtocolError(f"{kind} message with fields {sorted(fields)}, "
                            f"expected {sorted(expected)}")
    for name, value in fields.items():
        if not _FIELD_CHECKS[expected[name]](value):
            raise ProtocolError(f"{kind} message: {name}={value!r} is not {expected[name]}")
        if type(value) is list:
            fields[name] = tuple(value)
    return cls(**fields)


def send_packet(sock: socket.socket, data: bytes, fds: tuple[int, ...] = ()) -> None:
    """Send one encoded message, with file descriptors attached if given."""
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def send(sock: socket.socket, message: Message, fds: tuple[int, ...] = ()) -> None:
    """Send one message (blocking), with file descriptors attached if given."""
    send_packet(sock, encode(message), fds)


def receive(sock: socket.socket, max_fds: int = 0) -> tuple[Message | None, list[int]]:
    """Receive one message (blocking); ``(None, [])`` means the peer closed the channel.

    ProtocolError if the packet is malformed (its descriptors are closed).
    """
    if max_fds:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, max_fds)
    else:
        data, fds = sock.recv(MAX_MESSAGE), []
    if not data:
        close_fds(fds)
        return None, []
    try:
        return decode(data), list(fds)
    except ProtocolError:
        close_fds(fds)
        raise


def close_fds(fds: list[int]) -> None:
    """Close descriptors that arrived with a message nobody will use."""
    for fd in fds:
        os.close(fd)


def flush_stdio() -> None:
    """Flush Python's buffered stdout/stderr (before fork, before exit)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
