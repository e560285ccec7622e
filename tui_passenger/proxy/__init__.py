"""The front proxy: an aiohttp server that routes requests to the pool's workers."""

from tui_passenger.proxy.front import ProxyHandler, Stats

__all__ = ["ProxyHandler", "Stats"]
