"""A raw ASGI app for the WebSocket tests (no framework).

/echo            echoes every message (text as text, bytes as bytes)
/proto           accepts with the client's first subprotocol, sends it back, echoes
/deny            refuses with a websocket.http.response (403 and a body)
/close-early     closes before accepting (the server answers 403)
/boom            raises before accepting (500)
/pid             sends the worker's pid, then echoes
/ (http)         plain HTTP: the pid as JSON
"""

import json
import os


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        body = json.dumps({"pid": os.getpid(), "path": scope["path"]}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    path = scope["path"][len(scope["root_path"]):]  # mounted under a base_uri in the tests
    assert (await receive())["type"] == "websocket.connect"
    if path == "/deny":
        await send({"type": "websocket.http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"denied: ",
                    "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"no entry\n"})
        return
    if path == "/close-early":
        await send({"type": "websocket.close", "code": 1000})
        return
    if path == "/boom":
        raise RuntimeError("boom before accept")
    if path == "/proto":
        offered = scope["subprotocols"]
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None,
                    "headers": [(b"x-accepted-by", b"ws_raw")]})
        await send({"type": "websocket.send", "text": ",".join(offered)})
    else:
        await send({"type": "websocket.accept"})
    if path == "/pid":
        await send({"type": "websocket.send", "text": str(os.getpid())})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close-me":
            await send({"type": "websocket.close", "code": 4001, "reason": "asked to"})
            return
        if message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": message["text"]})
