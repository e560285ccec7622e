"""The process pool: groups of workers per app and the decisions about what runs."""

from tui_passenger.pool.group import Group, PoolProcess
from tui_passenger.pool.pool import Pool, PoolClosed, QueueFull

__all__ = ["Group", "Pool", "PoolClosed", "PoolProcess", "QueueFull"]
