"""Find and load an application callable, and tell WSGI from ASGI.

``entry`` is either ``"module:callable"`` (the callable may be a dotted attribute path and
may end in ``()`` to call a factory), or a startup file such as ``passenger_wsgi.py`` whose
``application`` is used. No entry means ``passenger_wsgi.py`` in the app root, as Passenger.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

DEFAULT_STARTUP_FILE = "passenger_wsgi.py"
STARTUP_FILE_CALLABLE = "application"


class AppLoadError(Exception):
    """The entry point could not be turned into an application callable."""


def enter_root(root: str) -> None:
    """Make the app root the working directory and the first place imports look."""
    os.chdir(root)
    if sys.path[:1] != [root]:
        sys.path.insert(0, root)


def load_app(root: str, entry: str | None) -> Callable[..., Any]:
    """Import the application named by ``entry`` from ``root`` and return its callable."""
    enter_root(root)
    entry = entry or DEFAULT_STARTUP_FILE
    if entry.endswith(".py"):
        return _load_startup_file(os.path.join(root, entry))
    module_name, _, attr_path = entry.partition(":")
    module = importlib.import_module(module_name)
    return _resolve(module, attr_path or STARTUP_FILE_CALLABLE, entry)


def _load_startup_file(path: str) -> Callable[..., Any]:
    if not os.path.isfile(path):
        raise AppLoadError(f"startup file {path} does not exist")
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot load startup file {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before running so the file can import itself (pickle, dataclasses, ...).
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return _resolve(module, STARTUP_FILE_CALLABLE, path)


def _resolve(module: Any, attr_path: str, entry: str) -> Callable[..., Any]:
    factory = attr_path.endswith("()")
    target: Any = module
    for part in attr_path.removesuffix("()").split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppLoadError(
                f"{entry}: {module.__name__!r} has no attribute {attr_path.removesuffix('()')!r}"
            ) from None
    if factory:
        target = target()
    if not callable(target):
        raise AppLoadError(f"{entry}: {attr_path!r} is {type(target).__name__}, not callable")
    app: Callable[..., Any] = target
    return app


def detect_interface(app: Callable[..., Any], declared: str = "auto") -> str:
    """``"wsgi"`` or ``"asgi"``: the declared interface, or what the callable looks like."""
    if declared in ("wsgi", "asgi"):
        return declared
    if inspect.iscoroutinefunction(app):
        return "asgi"
    call = getattr(app, "__call__", None)  # noqa: B004 - instances with an async __call__
    if call is not None and inspect.iscoroutinefunction(call):
        return "asgi"
    return "wsgi"
