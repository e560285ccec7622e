"""A background thread started while the app is imported, and what fork() does to it.

Importing this app starts a daemon thread named ``metrics-flusher`` that adds one to
``ticks`` every 0.2 s (standing in for a metrics or log flusher). Under direct spawning each
worker imports the app and has its own thread. Under smart spawning the thread runs in the
preloader; ``fork()`` copies only the thread that calls it, so forked workers have the
counter but no thread: ``thread_alive`` is false and ``ticks`` stays frozen at the value it
had when the worker was forked. The manager notes the lost thread for every forked worker
(``WorkerProcess.lost_threads``) and shows it.

With ``THREADS_RESTART_IN_HOOK=1`` (read at import) a ``starting_worker_process`` hook
starts a new flusher in every forked worker.

``GET /`` returns ``{"pid", "thread_alive", "ticks", ...}`` as JSON.
"""

import json
import os
import threading
import time

import tui_passenger

THREAD_NAME = "metrics-flusher"
INTERVAL = 0.2
RESTART_IN_HOOK = os.environ.get("THREADS_RESTART_IN_HOOK", "").lower() in (
    "1", "true", "yes", "on")

state = {"ticks": 0, "thread": None, "started_by": None, "restarted": False}


def _flush_forever() -> None:
    while True:
        time.sleep(INTERVAL)
        state["ticks"] += 1


def start_flusher() -> None:
    thread = threading.Thread(target=_flush_forever, name=THREAD_NAME, daemon=True)
    thread.start()
    state.update(thread=thread, started_by=os.getpid())


start_flusher()

if RESTART_IN_HOOK:
    @tui_passenger.on_event("starting_worker_process")
    def restart_flusher(forked: bool) -> None:
        if forked and not state["thread"].is_alive():
            start_flusher()
            state["restarted"] = True


def application(environ, start_response):
    thread = state["thread"]
    body = json.dumps({
        "pid": os.getpid(),
        "thread_name": thread.name,
        "thread_alive": thread.is_alive(),
        "thread_started_by": state["started_by"],
        "restarted_in_hook": state["restarted"],
        "ticks": state["ticks"],
        "threads": [t.name for t in threading.enumerate()],
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
