"""The sampled part of the status schema: a process's memory, fds, CPU and threads as the
sampler last read them, and their JSON form (see :mod:`tui_passenger.snapshot`).

Plain data only, like the snapshot: the sampler's frozen records are held as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tui_passenger.inspect.fds import FdEntry
from tui_passenger.inspect.memory import MemoryUsage

#: The memory fields of one process, in bytes, in schema order.
MEMORY_KEYS = ("rss", "pss", "uss", "shared", "private_dirty", "swap")
#: The memory fields of an app or of all apps: the sums, then the estimate against direct.
TOTAL_KEYS = (*MEMORY_KEYS, "direct_estimate", "saving")

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class MemoryTotals(MemoryUsage):
    """Memory summed over an app's workers and preloader (or over every app), in bytes.

    ``direct_estimate``: the PSS the same workers would take if spawned directly;
    ``saving`` = direct_estimate - pss (0 for directly spawned apps).
    """

    direct_estimate: int
    saving: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MemoryTotals:
        """Rebuild from the schema's ``memory`` object of an app or ``totals``."""
        return cls(**{key: data[key] for key in TOTAL_KEYS})


def memory_json(memory: MemoryUsage) -> JSON:
    """A process's ``memory`` object, or an app's or the ``totals`` one for MemoryTotals.

    Not ``as_dict()``: ``dataclasses.asdict`` copies recursively and costs several times more.
    """
    keys = TOTAL_KEYS if isinstance(memory, MemoryTotals) else MEMORY_KEYS
    return {key: getattr(memory, key) for key in keys}


def memory_from_json(data: Mapping[str, Any] | None) -> MemoryUsage | None:
    """A process's ``memory`` object (null until first sampled) as a MemoryUsage."""
    return None if data is None else MemoryUsage(**{key: data[key] for key in MEMORY_KEYS})


def fd_from_json(data: Mapping[str, Any]) -> FdEntry:
    """One entry of a process's ``fds`` (``warning`` is the entry's note when it has a level)."""
    return FdEntry(fd=data["fd"], kind=data["kind"], target=data["target"],
                   inode=data["inode"], cloexec=data["cloexec"],
                   shared_with=tuple(data["shared_with"]), level=data["level"],
                   note=data["warning"] or "", own=data["own"])


@dataclass(frozen=True, slots=True, kw_only=True)
class Sampled:
    """What the sampler last read of one process; None/empty until it first has."""

    #: Percent of one core.
    cpu: float | None = None
    threads: int | None = None
    memory: MemoryUsage | None = None
    fds: tuple[FdEntry, ...] = ()
    #: Texts: fds at level warning (and, for a worker, threads lost in the fork).
    warnings: tuple[str, ...] = ()
    #: Texts: fds at level info.
    notes: tuple[str, ...] = ()

    def sampled_json(self) -> JSON:
        """The sampled keys of a process object."""
        return {
            "cpu": self.cpu,
            "threads": self.threads,
            "memory": None if self.memory is None else memory_json(self.memory),
            "fds": [entry.as_dict() for entry in self.fds],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }

    @staticmethod
    def sampled_fields(data: Mapping[str, Any]) -> JSON:
        """The keyword arguments for the sampled fields, from a process object."""
        return {
            "cpu": data["cpu"],
            "threads": data["threads"],
            "memory": memory_from_json(data["memory"]),
            "fds": tuple(fd_from_json(entry) for entry in data["fds"]),
            "warnings": tuple(data["warnings"]),
            "notes": tuple(data["notes"]),
        }
