"""A WebSocket chat room as a plain Starlette application: it runs the same
under uvicorn and behind Prack (`prack-worker --interface asgi`).

    prack-server &
    cd examples/websocket && prack-worker --interface asgi chat:app
    # then open http://127.0.0.1:8080/ in two browser tabs

GET /      a page to chat from
WS  /ws    every text message is sent to everyone in the room, the sender
           included (so with one client it is an echo server); binary
           messages are echoed to their sender only
"""
from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

PAGE = """<!doctype html>
<meta charset="utf-8"><title>Prack chat</title>
<ul id="log"></ul>
<form id="f"><input id="msg" autocomplete="off"><button>send</button></form>
<script>
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onmessage = e => {
    const li = document.createElement("li");
    li.textContent = e.data;
    document.getElementById("log").append(li);
  };
  document.getElementById("f").onsubmit = e => {
    e.preventDefault();
    ws.send(document.getElementById("msg").value);
    document.getElementById("msg").value = "";
  };
</script>
"""


class Room:
    """The connected sockets; a message goes to each of them."""

    def __init__(self):
        self.members: set[WebSocket] = set()

    async def broadcast(self, text: str) -> None:
        gone = []
        for member in list(self.members):
            try:
                await member.send_text(text)
            except Exception:          # that client left meanwhile
                gone.append(member)
        for member in gone:
            self.members.discard(member)


room = Room()


async def index(request):
    return HTMLResponse(PAGE)


async def chat(websocket: WebSocket):
    await websocket.accept(subprotocol="chat" if "chat" in websocket.scope["subprotocols"]
                           else None)
    room.members.add(websocket)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") is not None:
                await room.broadcast(message["text"])
            elif message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass
    finally:
        room.members.discard(websocket)


async def close_with_reason(websocket: WebSocket):
    """Closes at once with a code and reason of its own (for the tests)."""
    await websocket.accept()
    await asyncio.sleep(0)
    await websocket.close(code=4000, reason="bye")


async def refuse(websocket: WebSocket):
    """Closes before accepting: the client gets 403."""
    await websocket.close()


app = Starlette(routes=[Route("/", index), WebSocketRoute("/ws", chat),
                        WebSocketRoute("/ws/bye", close_with_reason),
                        WebSocketRoute("/ws/refuse", refuse)])
