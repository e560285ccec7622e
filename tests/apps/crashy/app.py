"""A WSGI app whose worker dies (SIGKILL to itself) on every request to /crash."""

import json
import os
import signal
import time


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if path == "/slow":
        time.sleep(float(environ.get("QUERY_STRING") or 1.0))
    body = json.dumps({"pid": os.getpid(), "path": path}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
