"""Application hooks, the equivalent of Passenger's ``PhusionPassenger.on_event``.

An application registers callbacks while it is imported::

    import tui_passenger

    @tui_passenger.on_event("starting_worker_process")
    def reconnect(forked: bool) -> None: ...

Outside a managed worker the decorator only records the callback; the worker runtime calls
:func:`run_hooks` at the right moments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: Events an application can hook, with the arguments their callbacks receive.
EVENTS: dict[str, tuple[str, ...]] = {
    "starting_worker_process": ("forked",),
    "stopping_worker_process": (),
    #: Refork: this worker stopped serving and is about to become the preloader that forks
    #: the next generation. Close what was opened during requests (database connections,
    #: client sockets): otherwise every worker of the new generation shares them.
    "starting_mold": (),
}

# One registry per interpreter, like ``atexit``: hooks are registered by importing the app,
# and each worker process (fresh or forked) runs its own copy.
_registry: dict[str, list[Callable[..., Any]]] = {name: [] for name in EVENTS}


def on_event(event: str) -> Callable[[F], F]:
    """Register the decorated function to run on ``event`` in every worker process."""
    if event not in EVENTS:
        known = ", ".join(sorted(EVENTS))
        raise ValueError(f"unknown tui_passenger event {event!r} (known: {known})")

    def register(func: F) -> F:
        if not callable(func):
            raise TypeError(f"on_event({event!r}) needs a callable, got {func!r}")
        _registry[event].append(func)
        return func

    return register


def registered(event: str) -> tuple[Callable[..., Any], ...]:
    """The callbacks registered for ``event``, in registration order."""
    return tuple(_registry[event])


def run_hooks(event: str, **kwargs: Any) -> None:
    """Call every callback of ``event`` in order; the first exception propagates."""
    for func in registered(event):
        func(**kwargs)
