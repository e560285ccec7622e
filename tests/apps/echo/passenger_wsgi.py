"""A WSGI app that answers with what it received, as JSON: the HTTP corpus test's echo app.

Standard library only: it also runs under gunicorn and Passenger (bench/http_corpus.py).
"""

import json


def _body(environ):
    """The request body: its Content-Length, else up to its end when the server marks that
    end (wsgi.input_terminated). A server that passes a chunked body without either gives
    the app no way to know where it ends (read() would wait for the connection's end):
    reported as such, unread."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        return stream.read(int(length))
    if environ.get("wsgi.input_terminated"):
        return stream.read()
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return b"(unread: a chunked body with no length and no wsgi.input_terminated)"
    return b""


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
