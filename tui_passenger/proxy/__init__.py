"""The front proxy: takes public HTTP requests and relays them to the pool's workers."""

from tui_passenger.proxy.front import FrontServer, Stats

__all__ = ["FrontServer", "Stats"]
