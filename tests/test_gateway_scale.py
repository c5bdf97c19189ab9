"""Fan-out at scale, slow consumers, and several gateway processes on one Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from test_cli import ENV, free_port, wait_gone
from test_gateway import raw_upgrade, token
from wsclient import JSON, MSGPACK, Client

from gateway.keys import RoomKeys
from inventory.keys import as_text
from live.auth import Role
from live.redis_client import connect
from live.redis_server import url_file
from live.server import Running, running
from live.settings import Settings


async def test_hundreds_of_viewers_in_both_framings(server: Running, http: aiohttp.ClientSession) -> None:
    await server.services.rooms.create("big", host_id="host1", room_id="shop")
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base_url=server.url, connector=connector) as session:
        viewers = await asyncio.gather(
            *(
                Client.connect(session, "shop", token(server, f"v{i}"), JSON if i % 2 else MSGPACK)
                for i in range(300)
            )
        )
        host = await Client.connect(session, "shop", token(server, "host1", Role.HOST))
        for i in range(5):
            await host.send({"type": "host_message", "text": f"第{i}号 deal"})
        await viewers[7].send({"type": "comment", "text": "冲!"})

        async def receive_all(v: Client) -> None:
            texts, chat = [], []
            while len(texts) < 5 or not chat:  # the chat batch may come before, between or after
                m = await v.recv()
                if m["type"] == "host_message":
                    texts.append(m["text"])
                elif m["type"] == "batch":
                    chat += [c["text"] for c in m["comments"]]
            assert texts == [f"第{i}号 deal" for i in range(5)]
            assert chat == ["冲!"]

        await asyncio.gather(*(receive_all(v) for v in viewers))
        assert server.services.hub.open_count == 301


async def test_a_viewer_that_never_reads_delays_nobody_and_is_cut(settings: Settings) -> None:
    tight = dataclasses.replace(
        settings,
        send_buffer_soft_bytes=16 * 1024,
        send_buffer_hard_bytes=256 * 1024,
        message_rate_per_s=10_000,
        message_burst=10_000,
        max_frame_bytes=64 * 1024,
    )
    async with running(tight) as srv, aiohttp.ClientSession(base_url=srv.url) as http:
        await srv.services.rooms.create("r", host_id="host1", room_id="shop")
        stuck = await raw_upgrade(srv, f"/ws/rooms/shop?token={token(srv, 'stuck')}", rcvbuf=4096)
        good = await Client.connect(http, "shop", token(srv, "good"))
        host = await Client.connect(http, "shop", token(srv, "host1", Role.HOST))
        assert srv.services.hub.open_count == 3
        n = 5000  # 5000 x ~2 KB = 10 MB: more than the kernel buffers (up to 4 MB each side) hold
        text = "x" * 1900
        received: list[int] = []

        async def read_good() -> None:
            while len(received) < n:
                m = await good.recv_type("host_message", timeout=10)
                received.append(int(m["text"].split(":", 1)[0]))

        reader = asyncio.create_task(read_good())
        host_drain = asyncio.create_task(host.collect(60))  # the host reads its copies too
        for i in range(n):
            await host.send({"type": "host_message", "text": f"{i}:{text}"})
        await asyncio.wait_for(reader, 30)
        assert received == list(range(n))  # everything, in order, while the stuck one is stuck
        deadline = time.monotonic() + 5
        while srv.services.hub.open_count != 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert srv.services.hub.open_count == 2  # the stuck viewer was cut
        async with http.get("/metrics") as resp:
            assert 'live_errors_total{kind="slow_consumer"} 1.0' in await resp.text()
        stuck.close()
        host_drain.cancel()


async def test_a_lagging_viewer_loses_chat_first_and_is_told(settings: Settings) -> None:
    lenient = dataclasses.replace(
        settings,
        send_buffer_soft_bytes=8 * 1024,
        send_buffer_hard_bytes=64 * 1024 * 1024,
        slow_grace_s=60,
        message_rate_per_s=10_000,
        message_burst=10_000,
        comment_rate_per_s=10_000,
        comment_burst=10_000,
        tick_ms=20,
    )
    async with running(lenient) as srv, aiohttp.ClientSession(base_url=srv.url) as http:
        await srv.services.rooms.create("r", host_id="host1", room_id="shop")
        lagging = await raw_upgrade(srv, f"/ws/rooms/shop?token={token(srv, 'lagging')}", rcvbuf=4096)
        host = await Client.connect(http, "shop", token(srv, "host1", Role.HOST))
        chatter = await Client.connect(http, "shop", token(srv, "chatter"))
        for i in range(4000):  # 8 MB of priority frames fill its buffers past the soft limit...
            await host.send({"type": "host_message", "text": f"{i}:" + "y" * 1900})
        (conn,) = [c for c in srv.services.hub.connections if c.user_id == "lagging"]
        deadline = time.monotonic() + 10
        while conn.buffered < 1024 * 1024:
            assert time.monotonic() < deadline, "the server never got ahead of the lagging viewer"
            await asyncio.sleep(0.01)
        for i in range(200):  # ...so the chat batches meanwhile are skipped for it
            await chatter.send({"type": "comment", "text": f"c{i}"})
            await asyncio.sleep(0.002)  # pacing, not a wait: the comments span many 20 ms ticks
        data = bytearray()

        async def read_all() -> None:  # one reader that is never cancelled mid-read
            loop = asyncio.get_running_loop()
            while chunk := await loop.sock_recv(lagging, 1 << 20):
                data.extend(chunk)

        reader = asyncio.create_task(read_all())
        deadline = time.monotonic() + 30
        while data.count(b'"type":"host_message"') < 4000 or b'"type":"lagged"' not in data:
            assert time.monotonic() < deadline, "the lagging viewer lost frames or was never told"
            await chatter.send({"type": "comment", "text": "nudge"})  # a batch once it caught up
            await asyncio.sleep(0.1)
        reader.cancel()
        assert b'"dropped_comments"' in data
        lagging.close()


async def test_two_gateway_processes_share_rooms_through_redis(settings: Settings, tmp_path: Path) -> None:
    # same Redis, same prefix; two nodes, so two node names
    first = dataclasses.replace(settings, node_name="node-a")
    other = dataclasses.replace(settings, data_dir=tmp_path / "other", node_name="node-b")
    async with running(first) as a, running(other) as b:
        await a.services.rooms.create("shared", host_id="host1", room_id="shop")
        async with (
            aiohttp.ClientSession(base_url=a.url) as on_a,
            aiohttp.ClientSession(base_url=b.url) as on_b,
        ):
            host = await Client.connect(on_a, "shop", token(a, "host1", Role.HOST))
            viewers = [await Client.connect(on_b, "shop", token(b, f"v{i}"), MSGPACK) for i in range(3)]
            for i in range(10):
                await host.send({"type": "host_message", "text": f"m{i}"})
            for v in viewers:
                assert [(await v.recv_type("host_message"))["text"] for _ in range(10)] == [
                    f"m{i}" for i in range(10)
                ]
            await viewers[0].send({"type": "comment", "text": "from node b"})
            batch = await host.recv_until(lambda m: bool(m.get("comments")))
            assert batch["comments"][0]["text"] == "from node b"
            # presence is global: 4 people, 1 on a and 3 on b
            await host.recv_until(lambda m: m.get("online") == 4, timeout=5)
            await viewers[1].recv_until(lambda m: m.get("online") == 4, timeout=5)


def test_workers_share_one_port(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    serve = ["serve", "--workers", "2", "--port", str(port), "--data-dir", str(data_dir)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "live", *serve],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        workers = wait_for_workers(proc.pid, 2, port)
        mint = ["token", "--room", "*", "--role", "host", "--data-dir", str(data_dir)]
        host_token = subprocess.run(
            [sys.executable, "-m", "live", *mint], capture_output=True, text=True, check=True, env=ENV
        ).stdout.strip()
        asyncio.run(_everyone_hears_the_host(f"http://127.0.0.1:{port}", host_token, data_dir))
        redis_pid = int((data_dir / "redis" / "redis.pid").read_text())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert all(wait_gone(pid) for pid in [*workers, redis_pid])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def _everyone_hears_the_host(url: str, host_token: str, data_dir: Path) -> None:
    auth = {"Authorization": f"Bearer {host_token}"}
    # force_close: every client gets its own TCP connection, which the kernel spreads over workers
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(force_close=True)) as http:
        async with http.post("/api/rooms", json={"id": "shop", "title": "t"}, headers=auth) as resp:
            assert resp.status == 201
        host = await Client.connect(http, "shop", host_token)
        viewers = [await Client.connect(http, "shop", host_token) for _ in range(16)]
        await host.send({"type": "host_message", "text": "to every worker"})
        for v in viewers:
            assert (await v.recv_type("host_message"))["text"] == "to every worker"
        counts = await _connections_per_worker(data_dir, "shop", 1 + len(viewers))
        # 17 connections all on one of two workers: 1 in 65,536 (the kernel hashes each 4-tuple)
        assert len(counts) == 2 and all(counts.values()), counts  # both workers served some


async def _connections_per_worker(data_dir: Path, room: str, total: int) -> dict[str, int]:
    """Each worker's connections in ``room``, by node id, once they add up to ``total``: every
    worker reports its own to the room's presence hash (node id -> "count|ms") every second."""
    redis = connect(url_file(data_dir / "redis").read_text().strip())
    presence = RoomKeys(Settings.key_prefix, room).presence
    deadline = time.monotonic() + 30
    try:
        while True:
            entries = await redis.hgetall(presence)
            counts = {as_text(node): int(as_text(value).split("|")[0]) for node, value in entries.items()}
            if sum(counts.values()) == total:
                return counts
            assert time.monotonic() < deadline, f"presence never added up to {total}: {counts}"
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()


def wait_for_workers(parent: int, count: int, port: int, timeout: float = 60.0) -> list[int]:
    """The pids of ``parent``'s worker children once each of them listens on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = [
            int(pid)
            for pid in os.listdir("/proc")
            if pid.isdigit() and _ppid(int(pid)) == parent and _is_worker(int(pid))
        ]
        listening = _listening_sockets(port)
        if len(children) == count and all(_holds_socket(pid, listening) for pid in children):
            return children
        time.sleep(0.1)
    raise AssertionError("workers did not start listening")


def _listening_sockets(port: int) -> set[str]:
    """The inodes of the TCP sockets listening on ``port`` (state 0A in /proc/net/tcp*)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[1].rsplit(":", 1)[1] == f"{port:04X}" and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def _holds_socket(pid: int, inodes: set[str]) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _is_worker(pid: int) -> bool:
    try:
        return b"--worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
