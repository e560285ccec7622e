"""An app that cannot start: what a spawn error looks like.

``settings.py`` next to this file exists, but its ``DATABASE_URL`` was renamed to ``DB_URL``
and this module was not updated, so importing the app fails with::

    ImportError: cannot import name 'DATABASE_URL' from 'settings' (.../broken/settings.py)

The worker (direct) or the preloader (smart) reports the failure instead of becoming
ready; requests get HTTP 500 with the category, the traceback and the output when the app
runs with ``environment = "development"`` (an error id in production), and further spawns
back off exponentially.
"""

from settings import DATABASE_URL, DEBUG  # noqa: F401  (fails: DATABASE_URL is gone)


def application(environ, start_response):  # never reached
    body = f"connected to {DATABASE_URL}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
