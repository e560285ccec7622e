"""Process inspection from /proc (Linux): memory, CPU, open file descriptors, and a sampler.

Core code: stdlib only, no UI. The expensive reads (smaps_rollup, fd inventory) run in the
``Sampler`` thread, never on the event loop.
"""

from __future__ import annotations

from .fds import FdEntry, ProcessInfo, RawFd, inventory, read_fds, same_description
from .memory import (
    CpuMeter,
    MemoryUsage,
    StatusSample,
    direct_estimate,
    read_smaps_rollup,
    read_status,
    smart_total,
)
from .sampler import ProcessSample, Sampler
from .sockets import SocketTable

__all__ = [
    "CpuMeter",
    "FdEntry",
    "MemoryUsage",
    "ProcessInfo",
    "ProcessSample",
    "RawFd",
    "Sampler",
    "SocketTable",
    "StatusSample",
    "direct_estimate",
    "inventory",
    "read_fds",
    "read_smaps_rollup",
    "read_status",
    "same_description",
    "smart_total",
]
