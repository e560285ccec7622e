"""The article's example, in Python: a connection opened at import time, fixed by a hook.

While the app is imported it opens a "cache" connection (a socket pair standing in for
memcached) and starts a background thread. Under smart spawning every forked worker would
share that one socket with the preloader and its siblings, and the thread would be gone.
The ``starting_worker_process`` hook reconnects and restarts the thread, only when forked.
"""

import json
import os
import socket
import threading
import time

import tui_passenger

cache = {"conn": socket.socketpair()[0], "opened_by": os.getpid(), "reconnected": False}
heartbeat = {"thread": None, "beats": 0}
hook_calls = []


def _beat():
    while True:
        heartbeat["beats"] += 1
        time.sleep(1)


def start_heartbeat():
    heartbeat["thread"] = threading.Thread(target=_beat, name="heartbeat", daemon=True)
    heartbeat["thread"].start()


start_heartbeat()


@tui_passenger.on_event("starting_worker_process")
def reconnect(forked):
    hook_calls.append({"event": "starting_worker_process", "forked": forked, "pid": os.getpid()})
    if forked:
        # We are in a fresh fork: don't keep using the preloader's connection.
        cache["conn"].close()
        cache.update(conn=socket.socketpair()[0], opened_by=os.getpid(), reconnected=True)
        start_heartbeat()
    print(f"starting_worker_process(forked={forked}) in pid {os.getpid()}", flush=True)


@tui_passenger.on_event("starting_mold")
def become_mold():
    # Refork: this worker stops serving and will fork the next generation. What requests
    # opened here would be shared by all of them; our children reconnect anyway (above).
    hook_calls.append({"event": "starting_mold", "pid": os.getpid()})
    print(f"starting_mold in pid {os.getpid()}", flush=True)


@tui_passenger.on_event("stopping_worker_process")
def goodbye():
    print(f"stopping_worker_process in pid {os.getpid()}", flush=True)


def application(environ, start_response):
    body = json.dumps({
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "hook_calls": hook_calls,
        "cache_opened_by": cache["opened_by"],
        "cache_reconnected": cache["reconnected"],
        "heartbeat_alive": bool(heartbeat["thread"] and heartbeat["thread"].is_alive()),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
