"""A WSGI app that answers with what it received, as JSON: the HTTP corpus test's echo app.

Standard library only: it also runs under gunicorn and Passenger (bench/http_corpus.py).
"""

import json


def _body(environ):
    """The request body: its Content-Length, else up to its end when the server marks it
    (wsgi.input_terminated) or it was chunked; read() alone may wait for the connection's
    end on some servers."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        return stream.read(int(length))
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return stream.read() if environ.get("wsgi.input_terminated") or chunked else b""


def application(environ, start_response):
    """Method, path, query, protocol, the request's header fields and its body."""
    body = _body(environ)
    fields = {key: value for key, value in environ.items()
              if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")}
    reply = json.dumps({
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "protocol": environ.get("SERVER_PROTOCOL", ""),
        "headers": fields,
        "body": body.decode("latin-1"),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(reply)))])
    return [reply]
