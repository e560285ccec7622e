"""The smallest ASGI app, with lifespan support and a WebSocket echo at any path
(``python -m websockets ws://127.0.0.1:3000/``, say)."""

BODY = b"Hello, ASGI world!\n"
state = {"started": False}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                state["started"] = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await echo(receive, send)
        return
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
    })
    await send({"type": "http.response.body", "body": BODY})


async def echo(receive, send):
    """Accept, then send every message back as it came (text or bytes) until the close."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": message["text"]})
