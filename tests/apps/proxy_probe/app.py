"""A WSGI app the proxy tests talk to: echoes, slows down, streams, dies on request."""

import hashlib
import json
import os
import signal
import time

_hoard: list[bytearray] = []


def _json(start_response, data, status="200 OK"):
    body = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path == "/slow":
        print(f"slow request started in {os.getpid()}", flush=True)
        time.sleep(float(query or 1.0))
        return _json(start_response, {"pid": os.getpid(), "slept": True})
    if path == "/upload":
        digest = hashlib.sha256()
        size = 0
        while chunk := environ["wsgi.input"].read(65536):
            digest.update(chunk)
            size += len(chunk)
        return _json(start_response, {"size": size, "sha256": digest.hexdigest()})
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def chunks():
            for i in range(50):
                yield f"chunk {i}\n".encode() * 100
        return chunks()
    if path == "/grow":
        # Keep N MB of private, dirty memory in this worker.
        _hoard.append(bytearray(int(query or 10) * 1024 * 1024))
        return _json(start_response, {"pid": os.getpid(), "hoard_mb": sum(map(len, _hoard)) >> 20})
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        chunk = b"x" * 65536
        return (chunk for _ in range(int(query or 16)))
    if path == "/cookies":
        body = b"two cookies"
        start_response("299 Fine Indeed", [("Content-Type", "text/plain"),
                                           ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                           ("Content-Length", str(len(body)))])
        return [body]
    if path == "/reject-early":
        start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                            ("Content-Length", "6")])
        return [b"no way"]
    if path == "/die-once":
        marker = os.path.join(environ["PROBE_DIR"] if "PROBE_DIR" in environ
                              else os.environ["PROBE_DIR"], "died")
        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return _json(start_response, {"pid": os.getpid(), "survived": True})
    if path == "/die-mid-response":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def dying():
            yield b"first part\n" * 1000
            os.kill(os.getpid(), signal.SIGKILL)
            yield b"never sent"
        return dying()
    headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    return _json(start_response, {
        "pid": os.getpid(), "method": environ["REQUEST_METHOD"], "path": path,
        "script_name": environ["SCRIPT_NAME"], "query": query, "headers": headers,
        "remote_addr": environ.get("REMOTE_ADDR"), "scheme": environ["wsgi.url_scheme"],
        "content_length": environ.get("CONTENT_LENGTH"),
    })
