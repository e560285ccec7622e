"""A Starlette app for the WebSocket tests: /echo (text and bytes) and / (plain HTTP)."""

import os

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def home(request):
    return JSONResponse({"pid": os.getpid()})


async def echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
            else:
                await websocket.send_text(message["text"])
    except WebSocketDisconnect:
        pass


application = Starlette(routes=[Route("/", home), WebSocketRoute("/echo", echo)])
