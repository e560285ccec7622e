"""tui-passenger: a process manager for Python web apps.

Importing this package from an application is cheap and has no side effects: it only
exposes the hook decorator. Everything else lives in submodules imported on demand.
"""

from tui_passenger.hooks import EVENTS, on_event

__version__ = "0.1.0"
__all__ = ["EVENTS", "on_event", "__version__"]
