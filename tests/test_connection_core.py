"""The connection's sans-I/O core (gateway/protocol.py), fed bytes: no sockets, no Redis.

The client's side is websockets' own sans-I/O ClientProtocol: it builds the handshake and the
masked frames, and parses whatever the core writes back (101, frames, close codes).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Close as CloseFrame
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from gateway import close_codes
from gateway.admission import Admission
from gateway.close_codes import Close
from gateway.config import GatewayConfig
from gateway.connection import Connection, Expiries
from gateway.front import MAX_HEAD_BYTES, FrontDoor
from gateway.protocol import (
    MAX_HELD_FRAMES,
    Action,
    Authenticate,
    ConnectionCore,
    CountError,
    Handle,
    Handshake,
    Signal,
    Write,
)

CONFIG = GatewayConfig(max_frame_bytes=1024, send_buffer_soft_bytes=1000, send_buffer_hard_bytes=5000)
VIEWER = Admission("u1", "viewer", {"id": "r"})


class Peer:
    """A client, sans-I/O: what it sends, and what it made of the server's bytes."""

    def __init__(self, path: str = "/ws/rooms/r?token=t") -> None:
        self.ws = ClientProtocol(
            parse_uri("ws://test" + path), subprotocols=[Subprotocol("live.v1.json")], max_size=None
        )
        self.ws.send_request(self.ws.connect())

    def out(self) -> bytes:
        return b"".join(self.ws.data_to_send())

    def text(self, message: dict[str, Any]) -> bytes:
        """A masked text frame, also before the client has its 101 (pipelined)."""
        return Frame(Opcode.TEXT, json.dumps(message).encode()).serialize(mask=True)

    def read(self, actions: list[Action]) -> list[Response | Frame]:
        """Feed the client what the core wrote; the responses and frames it parsed."""
        for action in actions:
            if isinstance(action, Write):
                self.ws.receive_data(action.data)
        return [e for e in self.ws.events_received() if not isinstance(e, Request)]


def texts(events: list[Response | Frame]) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in events if isinstance(e, Frame) and e.opcode is Opcode.TEXT]


def close_of(events: list[Response | Frame]) -> tuple[int, str]:
    [close] = [CloseFrame.parse(e.data) for e in events if isinstance(e, Frame) and e.opcode is Opcode.CLOSE]
    return close.code, close.reason


def commands(actions: list[Action]) -> list[Any]:
    return [a.command for a in actions if isinstance(a, Handle)]


def upgrade(
    core: ConnectionCore, peer: Peer, behind: bytes = b"", now: float = 0.0
) -> tuple[list[Action], list[Action]]:
    """Handshake, admission, upgrade (frames ``behind`` the request are pipelined in the
    same read); the actions of the request, and of the upgrade."""
    core.receive_data(peer.out() + behind, now)
    requested = core.actions()
    [handshake] = [a for a in requested if isinstance(a, Handshake)]
    core.admit("r", VIEWER)
    assert core.accept(handshake.request, now)
    return requested, core.actions()


def joined(core: ConnectionCore, peer: Peer, now: float = 0.0) -> list[Action]:
    """Upgrade, welcome, join: the actions of the join."""
    _, accepted = upgrade(core, peer, now=now)
    [response] = peer.read(accepted)
    assert isinstance(response, Response) and response.status_code == 101
    core.send({"type": "welcome"})
    core.joined(now)
    return core.actions()


# -- handshake ------------------------------------------------------------------------------


def test_a_valid_handshake_is_upgraded_and_reading_pauses_until_the_welcome() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    requested, accepted = upgrade(core, peer)
    assert requested == [Handshake(requested[0].request)]  # type: ignore[union-attr]
    [response] = peer.read(accepted)
    assert isinstance(response, Response) and response.status_code == 101
    assert response.headers["Sec-WebSocket-Protocol"] == "live.v1.json"
    assert Signal.PAUSE_READING in accepted and core.open and not core.is_joined
    assert (core.room_id, core.user_id, core.role, core.is_staff) == ("r", "u1", "viewer", False)

    core.send({"type": "welcome"})
    core.joined(0.0)
    actions = core.actions()
    assert texts(peer.read(actions)) == [{"type": "welcome"}]
    assert actions[-1] is Signal.RESUME_READING


def test_a_request_the_server_took_too_long_to_admit_gets_503_and_later_answers_are_void() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    core.receive_data(peer.out(), 0.0)
    [handshake] = [a for a in core.actions() if isinstance(a, Handshake)]
    core.handshake_timeout()  # the request is in; the hub is still asking Redis
    actions = core.actions()
    [response] = peer.read(actions)
    assert isinstance(response, Response) and response.status_code == 503
    assert json.loads(response.body or b"")["error"]["code"] == "unavailable"
    assert actions[0] == CountError("handshake_timeout") and actions[-1] is Signal.CLOSE
    # The hub's answer when the admission comes back is too late, and changes nothing.
    core.refuse(403, b"{}")
    assert not core.accept(handshake.request, 0.0)
    assert core.actions() == [] and not core.open


def test_a_refused_handshake_gets_its_json_answer_and_a_close() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    core.receive_data(peer.out(), 0.0)
    core.actions()
    core.refuse(403, b'{"error":{"code":"banned","message":"no"}}')
    actions = core.actions()
    [response] = peer.read(actions)
    assert isinstance(response, Response)
    assert (response.status_code, response.body) == (403, b'{"error":{"code":"banned","message":"no"}}')
    assert actions[-1] is Signal.CLOSE and not core.open


def test_first_message_auth_reads_on_to_its_first_message_and_holds_what_follows() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer("/ws/rooms/r?auth=message")
    core.receive_data(peer.out(), 0.0)
    [handshake] = [a for a in core.actions() if isinstance(a, Handshake)]
    assert core.accept(handshake.request, 0.0, auth_by_message=True)
    accepted = core.actions()
    assert Signal.PAUSE_READING not in accepted  # it reads on, for the first message
    peer.read(accepted)
    core.receive_data(peer.text({"type": "auth", "token": "t"}) + peer.text({"type": "ping"}), 0.0)
    actions = core.actions()
    [auth] = [a for a in actions if isinstance(a, Authenticate)]
    assert auth.command.type == "auth" and auth.command.fields == {"token": "t"}
    assert Signal.PAUSE_READING in actions and not any(isinstance(a, Handle) for a in actions)
    # Not admitted in time, with its auth message in: the server was the slow one, and says so.
    core.handshake_timeout()
    actions = core.actions()
    assert actions[0] == CountError("handshake_timeout")
    frames = [f for f in peer.read(actions) if isinstance(f, Frame)]
    error = json.loads(frames[-2].data)
    assert (error["type"], error["code"]) == ("error", "unavailable")
    close = CloseFrame.parse(frames[-1].data)
    assert close.code == close_codes.GOING_AWAY
    assert json.loads(close.reason) == {"code": "unavailable", "retry_ms": close_codes.UNAVAILABLE_RETRY_MS}


def test_a_first_message_auth_that_never_sends_its_message_is_cut() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer("/ws/rooms/r?auth=message")
    core.receive_data(peer.out(), 0.0)
    [handshake] = [a for a in core.actions() if isinstance(a, Handshake)]
    assert core.accept(handshake.request, 0.0, auth_by_message=True)
    core.actions()
    core.handshake_timeout()
    assert core.actions() == [CountError("handshake_timeout"), Signal.ABORT]


def test_a_first_message_that_does_not_decode_is_refused_in_band() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer("/ws/rooms/r?auth=message")
    core.receive_data(peer.out(), 0.0)
    [handshake] = [a for a in core.actions() if isinstance(a, Handshake)]
    assert core.accept(handshake.request, 0.0, auth_by_message=True)
    core.receive_data(Frame(Opcode.TEXT, b"{nope").serialize(mask=True), 0.0)
    actions = core.actions()
    assert CountError("bad_json") in actions and Signal.LEFT in actions
    core.handshake_timeout()  # refused and closing: the close's own timer ends it
    assert core.actions() == []


def test_a_handshake_that_takes_too_long_is_cut_and_one_that_was_upgraded_is_not() -> None:
    core = ConnectionCore(CONFIG, 0.0)
    core.handshake_timeout()
    assert core.actions() == [CountError("handshake_timeout"), Signal.ABORT]
    half = ConnectionCore(CONFIG, 0.0)
    half.receive_data(Peer().out()[:30], 0.0)  # a request head that never ends
    half.actions()
    half.handshake_timeout()
    assert half.actions() == [CountError("handshake_timeout"), Signal.ABORT]
    upgraded = ConnectionCore(CONFIG, 0.0)
    upgrade(upgraded, Peer())
    upgraded.handshake_timeout()
    assert upgraded.actions() == []


def test_a_header_line_past_websockets_limit_gets_431_from_the_core() -> None:
    """A head within the front door's limit (16 KiB) with a line past websockets' (8 KiB):
    the core answers 431 itself, half-closes, and the hub never sees a handshake."""
    core = ConnectionCore(CONFIG, 0.0)
    head = b"GET /ws/rooms/r HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    core.receive_data(head, 0.0)
    actions = core.actions()
    assert not any(isinstance(a, Handshake) for a in actions)
    assert b"".join(a.data for a in actions if isinstance(a, Write)).startswith(b"HTTP/1.1 431 ")
    assert Signal.WRITE_EOF in actions


# -- frames in ------------------------------------------------------------------------------


def test_a_frame_fragmented_across_reads_is_one_command() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    joined(core, peer)
    data = peer.text({"type": "ping", "rid": "a"})
    handled: list[Action] = []
    for i in range(len(data)):
        core.receive_data(data[i : i + 1], 0.0)
        handled += core.actions()
    [command] = commands(handled)
    assert (command.type, command.rid) == ("ping", "a")


def test_frames_pipelined_behind_the_handshake_wait_for_the_join_then_go_in_order() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    request = peer.out()
    behind = peer.text({"type": "ping", "rid": "1"}) + peer.text({"type": "like", "count": 2, "rid": "2"})
    core.receive_data(request + behind, 0.0)
    [handshake] = core.actions()
    assert isinstance(handshake, Handshake)
    core.admit("r", VIEWER)
    assert core.accept(handshake.request, 0.0)
    accepted = core.actions()
    assert commands(accepted) == []  # held: the welcome is not out yet
    peer.read(accepted)
    core.send({"type": "welcome"})
    core.joined(0.0)
    actions = core.actions()
    assert texts(peer.read(actions)) == [{"type": "welcome"}]
    assert [(c.type, c.rid) for c in commands(actions)] == [("ping", "1"), ("like", "2")]
    # the welcome first, the commands next, reading resumes after them
    kinds = [type(a) for a in actions]
    assert kinds.index(Write) < kinds.index(Handle) and actions[-1] is Signal.RESUME_READING


def test_a_frame_split_across_the_upgrade_and_a_request_head_split_at_its_end_arrive_whole() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    request, frame = peer.out(), peer.text({"type": "ping", "rid": "split"})
    # the head's blank line split across reads, then a frame's first bytes behind the head
    for chunk in (request[:-2], request[-2:] + frame[:4]):
        core.receive_data(chunk, 0.0)
    [handshake] = [a for a in core.actions() if isinstance(a, Handshake)]
    core.admit("r", VIEWER)
    assert core.accept(handshake.request, 0.0)
    peer.read(core.actions())
    core.receive_data(frame[4:], 0.0)  # the rest after the upgrade
    core.joined(0.0)
    actions = core.actions()
    assert [(c.type, c.rid) for c in commands(actions)] == [("ping", "split")]
    assert not [e for e in peer.read(actions) if isinstance(e, Frame) and e.opcode is Opcode.CLOSE]


def test_a_client_that_sends_much_before_its_upgrade_is_read_no_further_for_now() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    core.receive_data(peer.out(), 0.0)
    assert Signal.PAUSE_READING not in core.actions()
    core.receive_data(peer.text({"type": "comment", "text": "x" * (CONFIG.max_frame_bytes - 100)}), 0.0)
    assert Signal.PAUSE_READING not in core.actions()
    core.receive_data(peer.text({"type": "ping"}) * 20, 0.0)
    assert Signal.PAUSE_READING in core.actions()


def test_at_most_max_held_frames_wait_for_the_welcome() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    behind = b"".join(peer.text({"type": "ping", "rid": str(i)}) for i in range(MAX_HELD_FRAMES + 5))
    upgrade(core, peer, behind)
    core.joined(0.0)
    assert [c.rid for c in commands(core.actions())] == [str(i) for i in range(MAX_HELD_FRAMES)]


def test_a_command_s_reply_goes_out_before_the_next_frame_is_handled() -> None:
    """Events are handled one at a time: what the hub does for one command (here: close the
    connection) is done before the next frame of the same read is looked at."""
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    joined(core, peer)
    core.receive_data(peer.text({"type": "ping", "rid": "1"}) + peer.text({"type": "ping", "rid": "2"}), 0.0)
    first = core.next_action()
    assert isinstance(first, Signal) and first is Signal.FRAME_IN
    handle = core.next_action()
    assert isinstance(handle, Handle) and handle.command.rid == "1"
    core.close(Close.BANNED)
    assert commands(core.actions()) == []  # the second frame came after the close


def test_a_fragmented_message_closes_1003() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    joined(core, peer)
    peer.ws.send_text(b'{"type":', fin=False)
    core.receive_data(peer.out(), 0.0)
    actions = core.actions()
    assert close_of(peer.read(actions)) == (close_codes.UNSUPPORTED, '{"code":"fragmented"}')
    assert Signal.LEFT in actions and Signal.START_CLOSE_TIMER in actions and not core.open


def test_invalid_utf8_text_fails_1007_and_half_closes() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    joined(core, peer)
    peer.ws.send_text(b'{"type":"comment","text":"\xff"}')
    core.receive_data(peer.out(), 0.0)
    actions = core.actions()
    assert close_of(peer.read(actions)) == (close_codes.INVALID_DATA, "invalid UTF-8")
    assert CountError("invalid_utf8") in actions and Signal.WRITE_EOF in actions
    assert commands(actions) == []


def test_a_frame_too_big_closes_1009() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    joined(core, peer)
    peer.ws.send_binary(b"x" * (CONFIG.max_frame_bytes + 1))
    core.receive_data(peer.out(), 0.0)
    actions = core.actions()
    assert close_of(peer.read(actions))[0] == 1009
    assert Signal.LEFT in actions and Signal.WRITE_EOF in actions


def test_a_message_flood_is_refused_then_closed_1008() -> None:
    config = GatewayConfig(message_burst=3, message_rate_per_s=1.0, flood_window_s=100.0)
    core, peer = ConnectionCore(config, 0.0), Peer()
    joined(core, peer)
    flood = b"".join(peer.text({"type": "ping", "rid": str(i)}) for i in range(10))
    core.receive_data(flood, 0.0)  # all at once: no time for the buckets to refill
    actions = core.actions()
    events = peer.read(actions)
    assert len(commands(actions)) == 3  # the burst
    refusals = [m for m in texts(events) if m.get("code") == "rate_limited"]
    assert len(refusals) == 3  # one strike each, then...
    assert close_of(events) == (close_codes.POLICY, '{"code":"flood"}')
    assert CountError("flood") in actions and Signal.WRITE_EOF in actions and not core.open


def test_a_ping_flood_is_a_flood_too() -> None:
    config = GatewayConfig(message_burst=3, message_rate_per_s=1.0, flood_window_s=100.0)
    core, peer = ConnectionCore(config, 0.0), Peer()
    joined(core, peer)
    for _ in range(20):
        peer.ws.send_ping(b"")
    core.receive_data(peer.out(), 0.0)
    actions = core.actions()
    events = peer.read(actions)
    assert close_of(events) == (close_codes.POLICY, '{"code":"flood"}')
    assert not texts(events)  # no error frames for pings: they are not messages


def test_the_rate_refills_with_the_time_it_is_told() -> None:
    config = GatewayConfig(message_burst=1, message_rate_per_s=1.0)
    core, peer = ConnectionCore(config, 0.0), Peer()
    joined(core, peer)
    handled = []
    for i in range(5):
        core.receive_data(peer.text({"type": "ping", "rid": str(i)}), 2.0 * i)  # slower than the rate
        handled += commands(core.actions())
    assert len(handled) == 5


# -- backpressure ---------------------------------------------------------------------------


def test_a_slow_reader_loses_batches_is_told_when_caught_up_and_cut_after_the_grace() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    joined(core, peer)
    soft, grace = CONFIG.send_buffer_soft_bytes, CONFIG.slow_grace_s
    assert core.batch_allowed(soft, 5, 1.0)  # at the limit: written
    assert not core.batch_allowed(soft + 1, 5, 1.0)
    assert not core.batch_allowed(soft + 1, 3, 2.0)
    assert core.behind_since == 1.0 and core.actions() == []
    assert core.batch_allowed(0, 4, 3.0)  # caught up: told first, then the batch goes out
    lagged = core.actions()
    assert texts(peer.read(lagged)) == [{"type": "lagged", "dropped_frames": 2, "dropped_comments": 8}]
    assert core.behind_since is None

    assert not core.batch_allowed(soft + 1, 1, 10.0)
    assert not core.batch_allowed(soft + 1, 1, 10.0 + grace)  # not past the grace yet
    assert core.open
    assert not core.batch_allowed(soft + 1, 1, 10.0 + grace + 0.1)
    cut = core.actions()
    assert close_of(peer.read(cut)) == (close_codes.SLOW_CONSUMER, '{"code":"slow_consumer"}')
    assert cut[-1] is Signal.ABORT and Signal.LEFT in cut and CountError("slow_consumer") in cut
    assert not core.open


def test_past_the_hard_limit_a_client_is_cut_4409_once() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    joined(core, peer)
    assert core.wrote(CONFIG.send_buffer_hard_bytes)
    assert not core.wrote(CONFIG.send_buffer_hard_bytes + 1)
    cut = core.actions()
    assert close_of(peer.read(cut)) == (close_codes.SLOW_CONSUMER, '{"code":"slow_consumer"}')
    assert cut.count(Signal.ABORT) == 1 and not core.open
    assert not core.wrote(CONFIG.send_buffer_hard_bytes + 1)  # the close frame's own write
    assert core.actions() == []


# -- idle and closing -----------------------------------------------------------------------


def test_a_silent_client_is_pinged_then_closed_4408() -> None:
    interval = CONFIG.ping_interval_s
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    joined(core, peer)
    core.ping(2 * interval)
    [ping] = peer.read(core.actions())
    assert isinstance(ping, Frame) and ping.opcode is Opcode.PING
    core.receive_data(peer.text({"type": "ping"}), 2 * interval)  # heard from: not idle
    core.actions()
    core.ping(4 * interval)
    assert isinstance(peer.read(core.actions())[0], Frame)
    core.ping(4 * interval + 0.1)
    actions = core.actions()
    assert close_of(peer.read(actions)) == (close_codes.IDLE_TIMEOUT, '{"code":"idle_timeout"}')
    assert CountError("idle_timeout") in actions


def test_a_client_s_close_is_answered_and_the_connection_ends() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    joined(core, peer)
    peer.ws.send_close(1000, "bye")
    core.receive_data(peer.out(), 0.0)
    actions = core.actions()
    assert close_of(peer.read(actions)) == (1000, "bye")
    assert Signal.LEFT in actions and Signal.WRITE_EOF in actions and not core.open
    core.receive_eof()
    assert Signal.CLOSE in core.actions()


def test_the_server_s_close_carries_the_table_s_reason_and_waits_for_the_answer() -> None:
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    joined(core, peer)
    core.close(Close.UNAVAILABLE, retry_ms=1000)
    actions = core.actions()
    assert close_of(peer.read(actions)) == (1001, '{"code":"unavailable","retry_ms":1000}')
    assert Signal.START_CLOSE_TIMER in actions and Signal.CLOSE not in actions
    core.receive_data(peer.out(), 0.0)  # the client's answer
    answered = core.actions()
    assert Signal.WRITE_EOF in answered
    core.receive_eof()
    assert Signal.CLOSE in core.actions()
    core.close(Close.BANNED)  # closing already: nothing more
    assert core.actions() == []


def test_close_reasons_on_the_wire_are_unchanged() -> None:
    assert Close.SHUTDOWN.reason(retry_ms=1000) == '{"code":"shutdown","retry_ms":1000}'
    assert {c: (c.code, c.reason()) for c in Close} == {
        Close.SHUTDOWN: (1001, '{"code":"shutdown"}'),
        Close.UNAVAILABLE: (1001, '{"code":"unavailable"}'),
        Close.FRAGMENTED: (1003, '{"code":"fragmented"}'),
        Close.INVALID_UTF8: (1007, "invalid UTF-8"),
        Close.FLOOD: (1008, '{"code":"flood"}'),
        Close.TOKEN_EXPIRED: (4401, '{"code":"token_expired"}'),
        Close.BANNED: (4403, '{"code":"banned"}'),
        Close.TOKEN_MISSING: (4401, '{"code":"token_missing"}'),
        Close.TOKEN_INVALID: (4401, '{"code":"token_invalid"}'),
        Close.WRONG_ROOM: (4403, '{"code":"wrong_room"}'),
        Close.ROOM_NOT_FOUND: (4404, '{"code":"room_not_found"}'),
        Close.INTERNAL: (1011, '{"code":"internal"}'),
        Close.IDLE_TIMEOUT: (4408, '{"code":"idle_timeout"}'),
        Close.SLOW_CONSUMER: (4409, '{"code":"slow_consumer"}'),
    }


# -- the asyncio adapter and the front door, over a fake transport ---------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.writes = 0  #: calls to write: each is a system call on a real socket
        self.closing = self.aborted = self.eof = False
        self.reading = True
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += data
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol


class FakeMetrics:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def frames_in(self, n: int) -> None: ...
    def frames_out(self, n: int) -> None: ...
    def error(self, kind: str) -> None:
        self.errors.append(kind)


class FakeHub:
    """What a Connection and the front door call on the hub."""

    def __init__(self, config: GatewayConfig = CONFIG) -> None:
        self.config = config
        self.metrics = FakeMetrics()
        self.requests: list[Request] = []
        self.handled: list[Any] = []
        self.left: list[Connection] = []
        self.connections: list[Connection] = []
        self.expiries = Expiries()

    def connection(self, remote_ip: str) -> Connection:
        conn = Connection(self, remote_ip)  # type: ignore[arg-type]
        self.connections.append(conn)
        return conn

    def start_handshake(self, conn: Connection, request: Request) -> None:
        self.requests.append(request)

    def handle(self, conn: Connection, command: Any) -> None:
        self.handled.append(command)
        conn.send({"type": "pong", "rid": command.rid})

    def count_error(self, kind: str) -> None:
        self.metrics.error(kind)

    def leave(self, conn: Connection) -> None:
        self.left.append(conn)

    def forget(self, conn: Connection) -> None: ...


async def test_the_adapter_cuts_a_close_that_is_never_answered(monkeypatch: Any) -> None:
    monkeypatch.setattr("gateway.connection.CLOSE_TIMEOUT_S", 0.01)
    hub, transport, peer = FakeHub(), FakeTransport(), Peer()
    conn = hub.connection("127.0.0.1")
    conn.connection_made(transport)
    conn.data_received(peer.out() + peer.text({"type": "ping", "rid": "early"}))
    [request] = hub.requests
    conn.admit("r", VIEWER)
    assert conn.accept(request) and not transport.reading  # paused until the welcome
    conn.send({"type": "welcome"})
    conn.joined()
    assert transport.reading and [c.rid for c in hub.handled] == ["early"]
    peer.ws.receive_data(bytes(transport.data))
    assert [m["type"] for m in texts(peer.ws.events_received())] == ["welcome", "pong"]  # type: ignore[arg-type]
    conn.close(Close.BANNED)
    assert hub.left == [conn] and not conn.is_open and not transport.aborted
    for _ in range(200):  # the client never answers: cut after CLOSE_TIMEOUT_S
        if transport.aborted:
            break
        await asyncio.sleep(0.01)
    assert transport.aborted


async def test_a_corked_join_writes_the_101_the_welcome_and_what_was_missed_at_once() -> None:
    hub, transport, peer = FakeHub(), FakeTransport(), Peer()
    conn = hub.connection("127.0.0.1")
    conn.connection_made(transport)
    conn.data_received(peer.out())
    [request] = hub.requests
    conn.admit("r", VIEWER)
    with conn.corked():
        assert conn.accept(request)
        conn.send({"type": "welcome"})
        conn.send({"type": "host_message", "text": "missed", "seq": 2})
        conn.joined()
        assert transport.writes == 0
    assert transport.writes == 1 and transport.reading  # one write; reading again after it
    peer.ws.receive_data(bytes(transport.data))
    events = peer.ws.events_received()
    assert isinstance(events[0], Response) and events[0].status_code == 101
    assert [m["type"] for m in texts(events)] == ["welcome", "host_message"]  # type: ignore[arg-type]
    conn.send({"type": "batch"})
    conn.send({"type": "batch"})
    assert transport.writes == 3  # uncorked, each send is its own write


async def test_the_front_door_answers_an_oversized_request_head_431() -> None:
    hub, transport = FakeHub(), FakeTransport()
    door = FrontDoor(hub, lambda: asyncio.Protocol())  # type: ignore[arg-type]
    door.connection_made(transport)
    door.data_received(b"GET /ws/rooms/r HTTP/1.1\r\nX-Big: ")
    door.data_received(b"a" * MAX_HEAD_BYTES)  # no end of head in sight
    head, _, body = bytes(transport.data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert transport.closing and hub.connections == [] and hub.metrics.errors == ["headers_too_large"]
    door.data_received(b"more")  # refused: nothing more is read or answered
    assert bytes(transport.data).endswith(body)
    door.connection_lost(None)
    assert not door.gate.pending


async def test_the_front_door_hands_a_websocket_request_to_the_gateway() -> None:
    hub, transport, peer = FakeHub(), FakeTransport(), Peer()
    door = FrontDoor(hub, lambda: asyncio.Protocol())  # type: ignore[arg-type]
    door.connection_made(transport)
    door.data_received(peer.out())
    [conn] = hub.connections
    assert transport.protocol is conn and len(hub.requests) == 1
    conn.connection_lost(None)


def test_a_ping_is_answered_in_turn_before_what_came_after_it_in_the_same_read() -> None:
    """A ping, then a command, in one read: the pong goes out before the command is handled
    (so before its answer), as if the two had come one by one."""
    core, peer = ConnectionCore(CONFIG, 0.0), Peer()
    joined(core, peer)
    ping = Frame(Opcode.PING, b"are you there").serialize(mask=True)
    core.receive_data(ping + peer.text({"type": "ping", "rid": "p1"}), 0.0)
    actions = core.actions()
    pong = Frame(Opcode.PONG, b"are you there").serialize(mask=False)
    [handle] = [i for i, a in enumerate(actions) if isinstance(a, Handle)]
    assert Write(pong) in actions[:handle], actions
    assert Write(pong) not in actions[handle:]  # once
