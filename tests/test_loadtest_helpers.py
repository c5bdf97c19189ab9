"""What bench/ uses of the project's tooling beyond the harness's own needs: the /proc readers
(loadtest.procfs), the WebSocket client's drain-only mode and offer-nothing handshake
(loadtest.wsclient), the server spawner's options (loadtest.spawn) and ``live.parent_death
--signal``. Real processes and sockets, on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtest import procfs
from loadtest.spawn import LOAD_SETTINGS, LocalServer
from loadtest.wsclient import Endpoint, WsConnection, connect

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def wait_for(condition: object, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False


# -- loadtest.procfs ----------------------------------------------------------------------------


def test_process_readers_see_a_process_until_it_is_a_zombie() -> None:
    argv = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        # Its word that the interpreter is up: just after the exec its memory is still a few
        # pages (seen: 16 kB), so the readings below wait for the process to have started.
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        assert procfs.cmdline(child.pid) == argv
        assert procfs.exe_name(child.pid).startswith("python")
        assert procfs.process_alive(child.pid)
        assert procfs.rss_bytes(child.pid) > 1_000_000
        assert child.pid in procfs.with_descendants([os.getpid()])
        child.kill()
        assert wait_for(lambda: not procfs.process_alive(child.pid))  # a zombie until reaped
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert not procfs.process_alive(child.pid)
    assert procfs.cmdline(child.pid) == []
    assert procfs.exe_name(child.pid) == ""
    assert procfs.cpu_seconds(child.pid) == 0.0
    with pytest.raises(OSError):
        procfs.rss_bytes(child.pid)


def test_machine_busy_counts_up_and_the_cpu_has_a_name() -> None:
    busy0, total0 = procfs.machine_busy()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        pass  # burn some CPU
    busy1, total1 = procfs.machine_busy()
    assert 0 < busy1 - busy0 <= total1 - total0
    assert procfs.cpu_model()


def test_socket_readers_find_the_listener_and_the_unread_bytes() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert os.getpid() in procfs.listening_pids(port)
        with socket.create_connection(("127.0.0.1", port)) as client:
            peer, _ = server.accept()
            with peer:
                client.sendall(b"x" * 1000)  # never read: waits in peer's receive queue
                assert wait_for(lambda: procfs.socket_queues(port) == (1, 1000))


# -- loadtest.wsclient --------------------------------------------------------------------------


async def test_a_drain_only_connection_counts_bytes_and_parses_nothing() -> None:
    heads: list[bytes] = []
    frame = b"\x81\x05hello"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n" + frame)
        await writer.drain()
        await reader.read()  # until the client goes
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    seen: list[bytes] = []

    def on_frame(conn: WsConnection, payload: bytes, now: float) -> None:
        seen.append(payload)

    try:
        endpoint = Endpoint("127.0.0.1", port, "/ws/rooms/r")
        drain = await connect(endpoint, on_frame, subprotocol=None, discard=True)
        parse = await connect(endpoint, on_frame, subprotocol="live.v1.msgpack")
        deadline = time.monotonic() + 30
        while (not seen or drain.bytes_in < len(frame)) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert seen == [b"hello"]  # only the parsing connection's frame
        assert drain.bytes_in > len(frame)  # the 101 head and the frame, read and dropped
        assert b"Sec-WebSocket-Protocol" not in heads[0]
        assert b"Sec-WebSocket-Protocol: live.v1.msgpack\r\n" in heads[1]
        assert parse.opcode == 0x2 and drain.opcode == 0x1
        await drain.close(timeout_s=0.5)
        await parse.close(timeout_s=0.5)
    finally:
        server.close()


# -- loadtest.spawn -----------------------------------------------------------------------------


async def test_a_spawned_server_takes_other_settings_and_args() -> None:
    cwd = os.getcwd()
    server = LocalServer(
        0,
        python=sys.executable,
        settings={"LIVE_MAX_CONNECTIONS": "123"},
        args=["--workers", "1"],
        keep_data=True,
    )
    assert "LIVE_MAX_PENDING_CONNECTIONS_PER_IP" in LOAD_SETTINGS
    try:
        await server.start()
        environ = (Path("/proc") / str(server.pid) / "environ").read_bytes().split(b"\0")
        assert b"LIVE_MAX_CONNECTIONS=123" in environ
        assert not any(v.startswith(b"LIVE_MAX_PENDING_CONNECTIONS_PER_IP=") for v in environ)
        assert procfs.cmdline(server.pid)[-2:] == ["--workers", "1"]
        assert os.readlink(f"/proc/{server.pid}/cwd") == cwd  # in_data_dir is off
    finally:
        code = await server.stop()
    assert code == 0, server.log_tail()
    assert server.log_path.exists()  # keep_data
    shutil.rmtree(server.data_dir)


# -- live.parent_death --signal ---------------------------------------------------------------


@pytest.mark.parametrize(("option", "survives"), [([], True), (["--signal=KILL"], False)])
def test_parent_death_sends_the_signal_asked_for(tmp_path: Path, option: list[str], survives: bool) -> None:
    """A child that ignores SIGTERM outlives its parent by default, and not with --signal=KILL."""
    pid_file = tmp_path / "pid"
    child = (
        "import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys; subprocess.Popen([sys.executable, '-m', 'live.parent_death', "
            f"*{option!r}, str(os.getpid()), sys.executable, '-c', {child!r}]); import time; time.sleep(60)",
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    pid = 0
    try:
        assert wait_for(lambda: pid_file.exists() and pid_file.read_text() != "")
        pid = int(pid_file.read_text())
        parent.kill()
        parent.wait()
        gone = wait_for(lambda: not procfs.process_alive(pid), timeout_s=3 if survives else 30)
        assert gone is not survives
    finally:
        parent.kill()
        parent.wait()
        if pid and procfs.process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_parent_death_refuses_an_unknown_signal() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "live.parent_death", "--signal=NOPE", str(os.getpid()), "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown signal" in result.stderr
