"""What the pool reports: one small dataclass per kind of event, each saying what it means.

The server appends :meth:`PoolEvent.entries` to its event log (the dashboard and
``tui-passenger logs`` show them) and hands the event itself to its ``on_event`` callback.
Events are made only when something happens to a process or a group, never per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tui_passenger.engine import ExitStatus, SpawnError

if TYPE_CHECKING:
    from tui_passenger.pool.group import Group, PoolProcess

#: Receives every event the pool emits.
EventSink = Callable[["PoolEvent"], None]


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """Something that happened to a process or a group."""

    #: Whether processes appeared or went away (the server re-reads what to sample).
    changes_processes: ClassVar[bool] = False
    #: The level of its entry in the event log: "info", "warning" or "error".
    level: ClassVar[str] = "info"
    #: Its line in the event log, formatted with the event as ``self``.
    template: ClassVar[str] = ""

    @property
    def app(self) -> str:
        """The app's name."""
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """The process concerned, if any."""
        return None

    @property
    def text(self) -> str:
        """The line shown in the event log."""
        return self.template.format(self=self)

    def entries(self) -> Iterator[tuple[str, str]]:
        """The event log entries it makes: (text, level), oldest first."""
        yield self.text, self.level

    def log(self, logger: logging.Logger) -> None:
        """Write it to the Python log (group events say it where they happen)."""


@dataclass(frozen=True, slots=True)
class GroupEvent(PoolEvent):
    """Something that happened to an app's group as a whole."""

    group: Group

    @property
    def app(self) -> str:
        """The app's name."""
        return self.group.name


@dataclass(frozen=True, slots=True)
class ProcessEvent(PoolEvent):
    """Something that happened to one worker."""

    process: PoolProcess

    @property
    def app(self) -> str:
        """The app's name."""
        return self.process.group.name

    @property
    def pid(self) -> int | None:
        """The worker's pid."""
        return self.process.pid

    #: The word for it in the logs ("worker 12 stopping (reason)").
    kind: ClassVar[str] = ""
    template: ClassVar[str] = "worker {self.pid} {self.kind} ({self.why})"

    @property
    def detail(self) -> str:
        """What the Python log says in parentheses after it."""
        return ""

    @property
    def why(self) -> str:
        """What the event log says in parentheses after it."""
        return self.detail or "requested"

    def log(self, logger: logging.Logger) -> None:
        """One info line: the app, the pid, what happened and why."""
        detail = self.detail
        logger.info("%s: worker %d %s%s", self.app, self.process.pid, self.kind,
                    f" ({detail})" if detail else "")


@dataclass(frozen=True, slots=True)
class Spawned(ProcessEvent):
    """A new worker is ready and takes requests."""

    changes_processes: ClassVar[bool] = True
    kind: ClassVar[str] = "spawned"

    @property
    def text(self) -> str:
        """``worker 12 ready in 35.2 ms (smart)``."""
        worker = self.process.worker
        return (f"worker {worker.pid} ready in {(worker.spawn_duration or 0) * 1000:.1f} ms "
                f"({worker.spawn_method})")

    def entries(self) -> Iterator[tuple[str, str]]:
        """A warning first if threads of the preloader did not survive the fork."""
        worker = self.process.worker
        if worker.lost_threads:
            yield (f"worker {worker.pid}: threads lost in the fork: "
                   f"{', '.join(worker.lost_threads)}", "warning")
        yield self.text, self.level


@dataclass(frozen=True, slots=True)
class _Ended(ProcessEvent):
    """A worker's process has exited."""

    status: ExitStatus
    changes_processes: ClassVar[bool] = True

    @property
    def detail(self) -> str:
        """How it ended."""
        return self.status.describe()


@dataclass(frozen=True, slots=True)
class Exited(_Ended):
    """A worker exited because it was asked to (stopped, drained, killed by an operator)."""

    kind: ClassVar[str] = "exited"


@dataclass(frozen=True, slots=True)
class Crashed(_Ended):
    """A worker exited without being asked to."""

    kind: ClassVar[str] = "crashed"
    level: ClassVar[str] = "error"


@dataclass(frozen=True, slots=True)
class _Reasoned(ProcessEvent):
    """Something done to a worker for a reason."""

    reason: str

    @property
    def detail(self) -> str:
        """Why."""
        return self.reason


@dataclass(frozen=True, slots=True)
class Draining(_Reasoned):
    """A worker takes no new request and stops once its running ones are done."""

    kind: ClassVar[str] = "draining"


@dataclass(frozen=True, slots=True)
class Stopping(_Reasoned):
    """A worker has been told to stop (or killed)."""

    kind: ClassVar[str] = "stopping"


@dataclass(frozen=True, slots=True)
class _SpawnErrorEvent(GroupEvent):
    """Loading the app failed: the template, then the error with its details."""

    error: SpawnError
    level: ClassVar[str] = "error"

    @property
    def text(self) -> str:
        """The template's words, then the error with its details (the traceback)."""
        return f"{self.template.format(self=self)}: {self.error.details()}"


@dataclass(frozen=True, slots=True)
class SpawnFailed(_SpawnErrorEvent):
    """A spawn failed; the next one waits ``backoff`` seconds."""

    backoff: float
    template: ClassVar[str] = "spawn failed"


@dataclass(frozen=True, slots=True)
class SpawnMethodChanged(GroupEvent):
    """New workers of the app are spawned with ``method`` from now on."""

    method: str
    changes_processes: ClassVar[bool] = True  # the preloader comes or goes
    template: ClassVar[str] = "switching to {self.method} spawning"


@dataclass(frozen=True, slots=True)
class Restarting(GroupEvent):
    """A restart has loaded the app afresh (smart: a new preloader is ready); the workers
    are being replaced from it."""

    reason: str
    changes_processes: ClassVar[bool] = True  # a new preloader
    template: ClassVar[str] = "restarting ({self.reason}): the app is loaded afresh"


@dataclass(frozen=True, slots=True)
class Restarted(GroupEvent):
    """A rolling restart (or spawn-method switch) is done."""

    reason: str
    count: int
    changes_processes: ClassVar[bool] = True  # the old preloader is gone
    template: ClassVar[str] = "{self.reason}: {self.count} worker(s) replaced"


@dataclass(frozen=True, slots=True)
class RestartFailed(_SpawnErrorEvent):
    """A restart could not load the new code; the workers running keep serving."""

    reason: str
    template: ClassVar[str] = ("restart ({self.reason}) failed, the running workers keep "
                               "serving")


@dataclass(frozen=True, slots=True)
class Molding(_Reasoned):
    """Refork: a worker takes no new request and will become the next preloader."""

    kind: ClassVar[str] = "molding"
    template: ClassVar[str] = ("refork: worker {self.pid} becomes the next preloader "
                               "({self.reason})")


@dataclass(frozen=True, slots=True)
class Molded(_Reasoned):
    """Refork: a worker is now the mold (preloader) of a new generation."""

    generation: int
    changes_processes: ClassVar[bool] = True
    kind: ClassVar[str] = "molded"
    template: ClassVar[str] = ("refork: worker {self.pid} is the mold of generation "
                               "{self.generation}")


@dataclass(frozen=True, slots=True)
class Reforked(GroupEvent):
    """Refork: the older workers have been replaced by the new generation's."""

    generation: int
    count: int
    changes_processes: ClassVar[bool] = True
    template: ClassVar[str] = ("refork: generation {self.generation} in place, "
                               "{self.count} worker(s) replaced")


@dataclass(frozen=True, slots=True)
class ReforkFailed(GroupEvent):
    """A refork did not happen; spawning goes on as before."""

    reason: str
    level: ClassVar[str] = "error"
    template: ClassVar[str] = "refork failed: {self.reason}"


@dataclass(frozen=True, slots=True)
class MoldExited(GroupEvent):
    """The process of a mold (a former worker, now a preloader) has exited."""

    process: PoolProcess
    status: ExitStatus
    changes_processes: ClassVar[bool] = True
    template: ClassVar[str] = "mold {self.pid} exited ({self.detail})"

    @property
    def pid(self) -> int | None:
        """The mold's pid."""
        return self.process.pid

    @property
    def detail(self) -> str:
        """How it ended."""
        return self.status.describe()



@dataclass(frozen=True, slots=True)
class _Reconfiguration(GroupEvent):
    """A change to an app made by a configuration reload; logged at info level."""

    def log(self, logger: logging.Logger) -> None:
        """One info line: the app and what the reload did to it."""
        logger.info("%s: %s", self.app, self.text)


@dataclass(frozen=True, slots=True)
class AppAdded(_Reconfiguration):
    """A reload added the app: its minimum starts."""

    template: ClassVar[str] = "app added by a configuration reload"


@dataclass(frozen=True, slots=True)
class AppRemoved(_Reconfiguration):
    """A reload removed the app: it takes no new requests, its workers drain and stop."""

    changes_processes: ClassVar[bool] = True
    template: ClassVar[str] = ("app removed by a configuration reload: its requests finish, "
                               "then its workers and preloader stop")


@dataclass(frozen=True, slots=True)
class Reconfigured(_Reconfiguration):
    """A reload changed the app's ``keys``: applied in place, or by a rolling restart."""

    keys: tuple[str, ...]
    restart: bool

    @property
    def text(self) -> str:
        """``configuration changed (root, env): rolling restart``."""
        return (f"configuration changed ({', '.join(self.keys)}): "
                f"{'rolling restart' if self.restart else 'applied'}")
