"""Peer fan-out servers, from shared/peer-bench/fanout_server.py (same payload, same loops).

    python fanout_server.py ws|aiohttp|socketio PORT M

One room: every connection joins it; a text "go" (socket.io: the event "go") makes the
server broadcast one ~150-byte JSON message M times to every connection.
- ws: websockets ``broadcast()``; aiohttp: ``send_str`` to each, gathered per message;
- socketio: python-socketio on aiohttp, ``emit`` to the room.
"""

from __future__ import annotations

import asyncio
import json
import sys

import uvloop

# the peer-bench payload, byte for byte (\uff1f, \uff01: full-width question and exclamation marks)
PAYLOAD = json.dumps({"t": "comment", "user": "viewer123", "text": "这个多少钱\uff1f好看\uff01" * 3})


async def run_ws_broadcast(port: int, m: int) -> None:
    from websockets.asyncio.server import broadcast, serve

    conns: set = set()

    async def handler(ws):
        conns.add(ws)
        try:
            async for msg in ws:
                if msg == "go":
                    for _ in range(m):
                        broadcast(conns, PAYLOAD)
                        await asyncio.sleep(0)
        finally:
            conns.discard(ws)

    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        await asyncio.Future()


async def run_aiohttp(port: int, m: int) -> None:
    from aiohttp import web

    conns: set = set()

    async def handler(request):
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        conns.add(ws)
        try:
            async for msg in ws:
                if msg.data == "go":
                    for _ in range(m):
                        await asyncio.gather(*(c.send_str(PAYLOAD) for c in list(conns)))
        finally:
            conns.discard(ws)
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    await asyncio.Future()


async def run_socketio(port: int, m: int) -> None:
    import socketio
    from aiohttp import web

    sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"])

    @sio.event
    async def connect(sid, environ):
        await sio.enter_room(sid, "room")

    @sio.on("go")
    async def go(sid, *args):
        for _ in range(m):
            await sio.emit("c", PAYLOAD, room="room")

    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    await asyncio.Future()


if __name__ == "__main__":
    mode, port, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    run = {"ws": run_ws_broadcast, "aiohttp": run_aiohttp, "socketio": run_socketio}[mode]
    uvloop.run(run(port, m))
