"""What a preloader does around fork(): before it in the parent, right after it in the child.

The recipe is Instagram's and CPython's ``gc`` docs': import with the collector off, then
``gc.collect()`` + ``gc.freeze()`` before each fork so the children do not dirty pages by
traversing objects they never use. In the child: the collector comes back on, ``random`` is
reseeded (otherwise siblings share one sequence), the preloader's own descriptors are closed,
and the connections that well-known libraries hold are dropped so each worker opens its own.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import signal
import sys
import threading
import weakref
from typing import Any


def live_thread_names() -> list[str]:
    """Names of the threads besides the main one; a forked child will not have them."""
    main = threading.main_thread()
    return [t.name for t in threading.enumerate() if t is not main]


def before_fork(freeze: bool = True) -> None:
    """Collect, then (unless told not to) move every survivor to the permanent generation.

    The collection matters even without freezing: the preloader imports with the collector
    off, and a child whose first collection walks every import-time object would copy
    nearly all of its pages.
    """
    gc.collect()
    if freeze:
        gc.freeze()


class SharedConnections:
    """Remembers library connection pools created while the app was imported.

    Looking for them walks every GC-tracked object, so the preloader does it once after
    loading (the preloader runs no application code afterwards) instead of in every child.
    """

    __slots__ = ("_engines",)

    def __init__(self) -> None:
        self._engines: list[weakref.ref[Any]] = []

    def scan(self) -> None:
        """Find live SQLAlchemy engines, if SQLAlchemy is loaded at all."""
        if "sqlalchemy" not in sys.modules:
            return
        try:
            from sqlalchemy.engine import Engine
        except ImportError:
            return
        self._engines = [weakref.ref(o) for o in gc.get_objects() if isinstance(o, Engine)]

    def reconnect_in_child(self) -> None:
        """Drop inherited connections (Django, SQLAlchemy) in a freshly forked worker."""
        django_db = sys.modules.get("django.db")
        if django_db is not None:
            django_db.connections.close_all()
        for ref in self._engines:
            engine = ref()
            if engine is not None:
                # close=False: leave the parent's sockets alone, just forget them here.
                engine.dispose(close=False)


def after_fork_in_child(close_fds: list[int]) -> None:
    """Undo the preloader's process state in a freshly forked worker."""
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    for fd in close_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    gc.enable()
    random.seed()
