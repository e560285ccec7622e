"""A Passenger-style startup file: Passenger looks for ``application`` in passenger_wsgi.py."""

import os
import sys


def application(environ, start_response):
    body = (
        f"passenger_wsgi.py app\n"
        f"pid {os.getpid()}\n"
        f"python {sys.version.split()[0]}\n"
        f"SCRIPT_NAME={environ.get('SCRIPT_NAME', '')!r} "
        f"PATH_INFO={environ.get('PATH_INFO', '')!r}\n"
    ).encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [body]
