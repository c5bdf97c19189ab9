"""WebSocket limits against clients that misbehave at the frame level, over real sockets: a
ping flood that never reads, a flood counter that forgives, and the close of a frame too big
arriving as a close frame (not a TCP reset)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from test_gateway import raw_upgrade, token
from wsclient import Client

from gateway import close_codes
from live.server import Running, running
from live.settings import Settings


@pytest.fixture
async def shop(settings: Settings) -> AsyncIterator[Running]:
    async with running(settings) as srv:
        await srv.services.rooms.create("shop", host_id="host1", room_id="shop")
        yield srv


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame, as a client sends it."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


async def raw_connect(server: Running, user: str, rcvbuf: int | None = None) -> socket.socket:
    """A socket that sent its WebSocket handshake (the answer may still be on its way)."""
    return await raw_upgrade(server, f"/ws/rooms/shop?token={token(server, user)}", rcvbuf, settle_s=0)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the whole server frames in ``data`` (after the HTTP response, if
    it starts with one)."""
    at = data.find(b"\r\n\r\n") + 4 if data.startswith(b"HTTP/") else 0
    frames = []
    while at + 2 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            length, at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif length == 127:
            length, at = int.from_bytes(data[at : at + 8], "big"), at + 8
        if at + length > len(data):
            break
        frames.append((opcode, data[at : at + length]))
        at += length
    return frames


async def read_welcome(sock: socket.socket) -> None:
    """Read the handshake's answer and the welcome (a client may talk from then on)."""
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(10):
        while not server_frames(data):
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 101"), data


async def read_to_eof(sock: socket.socket, timeout: float = 10.0) -> tuple[bytes, str]:
    """Everything the server sends until it ends the connection; how it ended: "eof",
    "reset" or "timeout"."""
    loop = asyncio.get_running_loop()
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await loop.sock_recv(sock, 65536):
                data += chunk
    except ConnectionResetError:
        return data, "reset"
    except TimeoutError:
        return data, "timeout"
    return data, "eof"


def close_codes_in(data: bytes) -> list[int]:
    return [int.from_bytes(p[:2], "big") for op, p in server_frames(data) if op == 0x8 and len(p) >= 2]


async def poll(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def error_count(server: Running, kind: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(f'live_errors_total{{kind="{kind}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- item 14: a frame too big gets its 1009, not a reset --------------------------------------


async def test_a_frame_too_big_in_one_write_gets_a_1009_close_frame(shop: Running) -> None:
    """The server stops reading at the frame's header; closing with the rest unread would
    reset the connection and could destroy the close frame. Several times: it is a race."""
    big = client_frame(0x1, b"x" * (200 * 1024))
    loop = asyncio.get_running_loop()
    for attempt in range(5):
        sock = await raw_connect(shop, f"big{attempt}")
        try:
            await read_welcome(sock)
            await loop.sock_sendall(sock, big)
            data, ended = await read_to_eof(sock)
        finally:
            sock.close()
        assert close_codes_in(data) == [1009], (attempt, ended, data[-40:])
        assert ended == "eof", attempt


# -- item 3: a ping flood that never reads -----------------------------------------------------


async def flood_pings(server: Running, sock: socket.socket, max_bytes: int) -> tuple[bool, int]:
    """Send pings with 125-byte payloads, never reading, until the server drops the
    connection (True) or ``max_bytes`` went out (False); and how many bytes went out. Whole
    frames only: a send the kernel takes in part is finished before the next frame."""
    hub = server.services.hub
    before = len(hub.connections)
    burst = client_frame(0x9, b"p" * 125) * 500
    pending = b""
    sent = 0
    while sent < max_bytes:
        if len(hub.connections) < before:
            return True, sent
        pending = pending or burst
        try:
            n = sock.send(pending)
        except BlockingIOError:
            await asyncio.sleep(0.01)  # the server is not reading: let it run, then look again
            continue
        except OSError:  # reset by the server
            break
        pending, sent = pending[n:], sent + n
        await asyncio.sleep(0)
    return await poll(lambda: len(hub.connections) < before), sent


async def test_a_ping_flood_that_never_reads_is_closed(shop: Running) -> None:
    sock = await raw_connect(shop, "pinger", rcvbuf=4096)
    hub = shop.services.hub
    try:
        assert await poll(lambda: hub.open_count == 1)
        dropped, sent = await flood_pings(shop, sock, 50 * 1024 * 1024)
        assert dropped, f"still connected after {sent} bytes of pings"
        assert hub.open_count == 0
    finally:
        sock.close()
    assert await error_count(shop, "flood") >= 1


async def test_pongs_count_toward_the_send_buffer_hard_limit(settings: Settings) -> None:
    """With the rate limit out of the way, the queued pongs alone pass the hard limit: the
    client is closed (4409) and the server holds no more than that limit for it."""
    lax = dataclasses.replace(
        settings,
        message_burst=10**9,
        message_rate_per_s=1e9,
        send_buffer_soft_bytes=32 * 1024,
        send_buffer_hard_bytes=128 * 1024,
    )
    async with running(lax) as srv:
        await srv.services.rooms.create("shop", host_id="host1", room_id="shop")
        sock = await raw_connect(srv, "pinger", rcvbuf=4096)
        try:
            assert await poll(lambda: srv.services.hub.open_count == 1)
            dropped, sent = await flood_pings(srv, sock, 60 * 1024 * 1024)
            assert dropped, f"still connected after {sent} bytes of pings"
        finally:
            sock.close()
        assert await error_count(srv, "slow_consumer") == 1
        assert await error_count(srv, "flood") == 0


# -- item 13: the flood counter forgives ------------------------------------------------------


@pytest.fixture
async def strict(settings: Settings) -> AsyncIterator[Running]:
    """A small message bucket (5, refilled at 10/s) whose refusals are forgiven within 0.5 s."""
    tight = dataclasses.replace(settings, message_burst=5, message_rate_per_s=10.0, flood_window_s=0.5)
    async with running(tight) as srv:
        await srv.services.rooms.create("shop", host_id="host1", room_id="shop")
        yield srv


async def test_a_client_over_its_bucket_now_and_then_is_not_closed(strict: Running) -> None:
    async with aiohttp.ClientSession(base_url=strict.url) as http:
        client = await Client.connect(http, "shop", token(strict, "bursty"))
        refused = 0
        for _ in range(12):
            for n in range(8):  # 8 at once against a bucket of 5: a few refused each time
                await client.send({"type": "ping", "rid": f"p{n}"})
            for message in await client.collect(0.7):  # the bucket and the strikes refill
                refused += message["type"] == "error" and message["code"] == "rate_limited"
        # far more refusals than message_burst in all: without forgiveness this would close
        assert refused > 2 * 5, refused
        await client.send({"type": "ping", "rid": "still"})
        assert (await client.recv_type("pong"))["rid"] == "still"


async def test_a_sustained_flood_is_closed(strict: Running) -> None:
    async with aiohttp.ClientSession(base_url=strict.url) as http:
        client = await Client.connect(http, "shop", token(strict, "flooder"))
        with contextlib.suppress(ConnectionError):
            for n in range(500):
                await client.send({"type": "ping", "rid": f"f{n}"})
        code, reason = await client.closed()
        assert code == close_codes.POLICY and json.loads(reason) == {"code": "flood"}
