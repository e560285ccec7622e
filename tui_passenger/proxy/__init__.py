"""The front proxy: takes public HTTP requests and relays them to the pool's workers."""

from tui_passenger.proxy.front import FrontServer
from tui_passenger.proxy.request import Stats

__all__ = ["FrontServer", "Stats"]
