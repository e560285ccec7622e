"""The states of an :class:`~tui_passenger.proxy.exchange.Exchange` (its own module so that
the exchange and its response relay, :mod:`.relay`, share them)."""

from __future__ import annotations

import enum


class State(enum.Enum):
    """Where an exchange is (``Exchange.state``)."""

    #: Being routed, or between workers: it holds no worker and waits in no queue.
    ROUTING = "routing"
    #: Waiting in its app's queue for a worker (``Exchange.waiter``).
    QUEUED = "queued"
    #: On a worker (``Exchange.process``): the request is sent, or is once connected.
    ON_WORKER = "on worker"
    #: The worker's response head has come: the response is being relayed.
    RELAYING = "relaying"
    #: Answered or given up; the client connection has been told (``finished``).
    DONE = "done"


ROUTING = State.ROUTING
QUEUED = State.QUEUED
ON_WORKER = State.ON_WORKER
RELAYING = State.RELAYING
DONE = State.DONE

