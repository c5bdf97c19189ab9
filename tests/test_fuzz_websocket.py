"""Property-based tests of the WebSocket boundary (hypothesis).

Arbitrary Unicode (lone surrogates included), arbitrary JSON and MessagePack values, in every
client message type, as viewer and as host, and as raw frames, against a real server over
real sockets and a real Redis. Each message must get a typed answer (an ``ack``, ``pong`` or
``error`` with a code, or a close code docs/protocol.md lists), and the server must keep
working: the same connection still answers, a fresh client's comment is published and acked,
and /readyz is ready.

Hypothesis and async fixtures do not mix, so the server runs in a thread with its own event
loop and the clients are synchronous (``websockets.sync`` and plain sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import socket
import struct
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from registry import MODERATION, every_command
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from gateway import messages
from gateway.frames import OP_BINARY, OP_TEXT
from gateway.messages import Command, Framing, ProtocolError
from live.auth import Role
from live.server import Running, running
from live.settings import Settings

SECRET = "fuzz-secret-" + "s" * 40
ROOM = "fuzz"
SURROGATE = re.compile("[\ud800-\udfff]")
#: Long enough for a Redis round trip on a loaded machine; an answer never comes this late.
ANSWER_TIMEOUT_S = 15.0
#: Close codes docs/protocol.md lists for what a client sends (besides echoing its own close).
DOCUMENTED_CLOSES = {1002, 1003, 1007, 1008, 1009}

# -- strategies -------------------------------------------------------------------------------

#: Every code point, surrogates included (st.characters leaves them out unless told).
UNICODE = st.characters(exclude_categories=())
SURROGATES = st.characters(categories=["Cs"])


def texts(max_size: int = 30) -> st.SearchStrategy[str]:
    """Any text; about one time in four with a lone surrogate somewhere (plain generation
    rarely makes one)."""

    def build(parts: tuple[int, str, str, int]) -> str:
        which, text, surrogate, at = parts
        return text[:at] + surrogate + text[at:] if which == 3 else text

    return st.tuples(
        st.integers(0, 3), st.text(UNICODE, max_size=max_size), SURROGATES, st.integers(0, max_size)
    ).map(build)


def _values(scalars: st.SearchStrategy[Any], keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=10,
    )


_INTS = st.one_of(
    st.integers(-5, 5),
    st.integers(),
    st.integers(-(1 << 80), 1 << 80),
    st.sampled_from([1 << 63, -(1 << 63) - 1]),
)
#: What json.loads can produce: huge integers and NaN included.
JSON_VALUES = _values(st.none() | st.booleans() | _INTS | st.floats() | texts(), texts(12))
#: What MessagePack carries: 64-bit integers, binary, binary map keys.
MSGPACK_VALUES = _values(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats()
    | texts()
    | st.binary(max_size=24),
    texts(12) | st.binary(max_size=8),
)

#: Every client message type, with its fields (the registry a server's hub holds).
COMMANDS = every_command()
TYPES = sorted(COMMANDS)


@dataclass
class Shop:
    """What the fuzz server holds, for plausible field values."""

    product_id: str
    sale_id: str
    group_sale_id: str
    batch_id: str
    auction_id: str
    draw_id: str = "d_none"
    poll_id: str = "p_none"


def plausible(shop: Shop) -> dict[str, st.SearchStrategy[Any]]:
    """Values that pass the schema, often naming things that exist: they get deep (Redis)."""
    words = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)
    return {
        "text": words,
        "count": st.integers(-2, 1002),
        "product_id": st.sampled_from([shop.product_id]) | words,
        "user_id": st.sampled_from(["someone", "fz-other"]) | words,
        "duration_s": st.integers(0, 120),
        "comment_id": st.integers(-1, 50),
        "interval_s": st.integers(-1, 3),
        "sale_id": st.sampled_from([shop.sale_id, shop.group_sale_id]) | words,
        "quantity": st.integers(-1, 3),
        "hold_id": words,
        "coupon_id": words,
        "code": words,
        "batch_id": st.sampled_from([shop.batch_id]) | words,
        "auction_id": st.sampled_from([shop.auction_id]) | words,
        "amount_cents": st.integers(-1, 10**13),
        "question_id": st.sampled_from(["q_nothing"]) | words,
        "draw_id": st.sampled_from([shop.draw_id]) | words,
        "poll_id": st.sampled_from([shop.poll_id]) | words,
        "option": st.integers(-1, 7),
    }


@st.composite
def client_messages(
    draw: st.DrawFn, shop: Shop, values: st.SearchStrategy[Any]
) -> tuple[dict[Any, Any], Any]:
    """A message of some type: each field plausible, arbitrary, or absent; arbitrary extra
    fields; a rid that is absent, arbitrary, or a unique string with arbitrary text (the
    second item: the test makes it unique)."""
    kind = draw(st.sampled_from(TYPES))
    good = plausible(shop)
    none: st.SearchStrategy[dict[Any, Any]] = st.just({})
    message: dict[Any, Any] = draw(
        st.one_of(st.dictionaries(texts(12), values, max_size=2), none, none, none)
    )
    message["type"] = kind
    for name in COMMANDS[kind].fields:
        how = draw(st.sampled_from(["plausible"] * 6 + ["arbitrary", "absent"]))
        if how == "plausible":
            message[name] = draw(good[name])
        elif how == "arbitrary":
            message[name] = draw(values)
        else:
            message.pop(name, None)
    rid = draw(st.sampled_from(["unique"] * 6 + ["arbitrary", "absent"]))
    suffix = None
    message.pop("rid", None)
    if rid == "unique":
        suffix = draw(texts(20))
    elif rid == "arbitrary":
        message["rid"] = draw(values)
    return message, suffix


# -- the server, in a thread -------------------------------------------------------------------


class ServerThread:
    """A real server (live.server.running) on its own event loop in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.started: Future[Running] = Future()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="fuzz-server", daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self.started.result(timeout=60)

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=60)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with running(self.settings) as srv:
                self.started.set_result(srv)
                await self._stop.wait()
        except BaseException as exc:
            if not self.started.done():
                self.started.set_exception(exc)
            raise


def http(server: Running, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    token = server.services.auth.mint("host1", "*", Role.HOST, 600)
    request = urllib.request.Request(
        server.url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@dataclass
class Fuzz:
    server: Running
    shop: Shop
    peers: dict[tuple[str, Framing], Peer]

    def peer(self, role: str, framing: Framing) -> Peer:
        """The persistent connection of a role and framing (a new one if it was closed)."""
        peer = self.peers.get((role, framing))
        if peer is None or peer.closed:
            user = "host1" if role == "host" else f"fz-{role}-{framing.name.lower()}-{uuid.uuid4().hex[:6]}"
            peer = self.peers[(role, framing)] = Peer.connect(self.server, user, role, framing)
        return peer


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Fuzz]:
    # Limits out of the way, so arbitrary input gets past the rate limits and to Redis.
    lax = Settings(
        data_dir=tmp_path_factory.mktemp("fuzz") / "data",
        redis_url=redis_url,
        key_prefix=f"t{uuid.uuid4().hex[:12]}",
        secret=SECRET,
        port=0,
        message_burst=10**6,
        message_rate_per_s=1e6,
        comment_burst=10**6,
        comment_rate_per_s=1e6,
        buy_burst=10**6,
        buy_rate_per_s=1e6,
    )
    with ServerThread(lax) as server:
        status, _ = http(server, "POST", "/api/rooms", {"id": ROOM, "title": "fuzz ☃"})
        assert status == 201
        status, product = http(
            server, "POST", f"/api/rooms/{ROOM}/products", {"title": "茶", "price_cents": 1500}
        )
        assert status == 201
        sale_body = {"product_id": product["id"], "stock": 1_000_000, "per_user_limit": 2}
        status, sale = http(server, "POST", f"/api/rooms/{ROOM}/sales", sale_body)
        assert status == 201, sale
        group = {"size": 3, "price_cents": 1000, "team_s": 60}
        status, group_sale = http(server, "POST", f"/api/rooms/{ROOM}/sales", {**sale_body, "group": group})
        assert status == 201, group_sale
        status, batch = http(
            server, "POST", f"/api/sales/{sale['id']}/coupons", {"count": 1000, "discount_cents": 100}
        )
        assert status == 201, batch
        auction_body = {
            "product_id": product["id"],
            "start_cents": 100,
            "increment_cents": 10,
            "duration_s": 3600,
        }
        status, auction = http(server, "POST", f"/api/rooms/{ROOM}/auctions", auction_body)
        assert status == 201, auction
        draw_body = {"prize": {"product_id": product["id"]}, "winners": 3, "duration_s": 3600}
        status, draw = http(server, "POST", f"/api/rooms/{ROOM}/draws", draw_body)
        assert status == 201, draw
        poll_body = {"question": "q", "options": ["a", "b", "c"], "duration_s": 3600}
        status, poll = http(server, "POST", f"/api/rooms/{ROOM}/polls", poll_body)
        assert status == 201, poll
        shop = Shop(
            product["id"],
            sale["id"],
            group_sale["id"],
            batch["batch_id"],
            auction["id"],
            draw["id"],
            poll["id"],
        )
        state = Fuzz(server, shop, {})
        yield state
        for peer in state.peers.values():
            peer.close()


# -- clients ----------------------------------------------------------------------------------


def ws_url(server: Running) -> str:
    return server.url.replace("http://", "ws://", 1) + f"/ws/rooms/{ROOM}"


def mint(server: Running, user: str, role: str) -> str:
    return server.services.auth.mint(user, ROOM, Role(role), 600)


def encode(framing: Framing, message: Any) -> bytes:
    """What a client puts in a frame: JSON escapes surrogates as \\uXXXX (valid JSON); a
    MessagePack string with one is not valid UTF-8 (surrogatepass), as a hostile client sends."""
    if framing is Framing.JSON:
        return json.dumps(message).encode()
    packed: bytes = msgpack.packb(message, use_bin_type=True, unicode_errors="surrogatepass")
    return packed


@dataclass
class Peer:
    ws: ClientConnection
    framing: Framing
    stack: contextlib.ExitStack
    closed: bool = False

    @classmethod
    def connect(cls, server: Running, user: str, role: str, framing: Framing) -> Peer:
        stack = contextlib.ExitStack()
        opening = connect(
            ws_url(server),
            subprotocols=[Subprotocol(framing.value)],
            additional_headers={"Authorization": f"Bearer {mint(server, user, role)}"},
            compression=None,
            proxy=None,
            ping_interval=None,
            max_queue=None,
            max_size=None,
        )
        peer = cls(stack.enter_context(opening), framing, stack)
        assert peer.recv()["type"] == "welcome"
        return peer

    def send_payload(self, payload: bytes) -> None:
        self.ws.send(payload.decode() if self.framing is Framing.JSON else payload)

    def send(self, message: dict[str, Any]) -> None:
        self.send_payload(encode(self.framing, message))

    def recv(self, timeout: float = ANSWER_TIMEOUT_S) -> dict[str, Any]:
        """The next server message; its frame must be of the connection's framing and decode
        strictly (valid UTF-8, one map with a string type)."""
        try:
            data = self.ws.recv(timeout=timeout)
        except ConnectionClosed:
            self.closed = True
            raise
        if self.framing is Framing.JSON:
            assert isinstance(data, str), data
            message = json.loads(data)
        else:
            assert isinstance(data, bytes), data
            message = msgpack.unpackb(data, raw=False)
        assert isinstance(message, dict) and isinstance(message.get("type"), str), message
        return message

    def until(self, pred: Callable[[dict[str, Any]], bool], what: object = "") -> list[dict[str, Any]]:
        """Messages up to and including the first that ``pred`` accepts."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while True:
            try:
                seen.append(self.recv(timeout=max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                raise AssertionError(f"no answer to {what!r}; got {seen}") from None
            if pred(seen[-1]):
                return seen

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stack.close()


_counter = itertools.count()


def answered(message: dict[str, Any], rid: Any) -> bool:
    return message["type"] in ("ack", "error", "pong") and message.get("rid") == rid


def check_typed(message: dict[str, Any]) -> None:
    if message["type"] == "error":
        assert isinstance(message.get("code"), str) and message["code"], message
        assert isinstance(message.get("message"), str) and message["message"], message


def exchange(peer: Peer, payload: bytes, is_staff: bool) -> None:
    """Send one client frame, then a ping; check the frame's answer and that the ping's comes."""
    framing = peer.framing
    try:
        expected: Command | ProtocolError = messages.decode(framing, framing.opcode, payload, COMMANDS)
    except ProtocolError as exc:
        expected = exc
    sentinel = f"sentinel-{next(_counter)}"
    peer.send_payload(payload)
    peer.send({"type": "ping", "rid": sentinel})
    seen = peer.until(lambda m: m["type"] == "pong" and m.get("rid") == sentinel, (payload, sentinel))
    for message in seen:
        check_typed(message)
    if isinstance(expected, ProtocolError):
        # refused at decoding: an error with the code, before the ping's pong
        wanted = [m for m in seen if m["type"] == "error" and m["code"] == expected.code]
        assert wanted, (expected.code, expected.message, seen)
        assert wanted[0].get("rid") == expected.rid
        assert not SURROGATE.search(wanted[0]["message"])
        return
    rid = expected.rid
    if expected.type == "like":
        pass  # likes are coalesced and never acked (docs/protocol.md); only a bad count errs
    elif rid is not None:
        if not any(answered(m, rid) for m in seen):
            peer.until(lambda m: answered(m, rid), expected)
    elif expected.type == "ping":
        assert any(m["type"] == "pong" and "rid" not in m for m in seen), seen
    elif expected.type in MODERATION:
        if not is_staff:
            assert any(m["type"] == "error" and m["code"] == "forbidden" for m in seen), seen
        else:  # always acked (rid null), or refused without a rid
            done = [
                m
                for m in seen
                if (m["type"] == "ack" and m.get("of") == expected.type) or m["type"] == "error"
            ]
            if not done:
                peer.until(
                    lambda m: (m["type"] == "ack" and m.get("of") == expected.type) or m["type"] == "error",
                    expected,
                )
    # a comment or like without a rid has no answer to wait for (docs/protocol.md)


def assert_server_works(fuzz: Fuzz) -> None:
    """A fresh viewer's comment is published and acked, and reaches a fresh host; a ping gets
    its pong; /readyz is ready."""
    host = Peer.connect(fuzz.server, "host1", "host", Framing.JSON)
    viewer = Peer.connect(fuzz.server, f"witness-{uuid.uuid4().hex[:8]}", "viewer", Framing.MSGPACK)
    try:
        viewer.send({"type": "ping", "rid": "alive"})
        viewer.until(lambda m: m["type"] == "pong" and m.get("rid") == "alive")
        text = f"still here {uuid.uuid4().hex[:6]} 还在"
        viewer.send({"type": "comment", "text": text, "rid": "c"})
        ack = viewer.until(lambda m: answered(m, "c"))[-1]
        assert ack["type"] == "ack" and ack["of"] == "comment", ack
        host.until(lambda m: m["type"] == "batch" and any(c["text"] == text for c in m["comments"]))
    finally:
        host.close()
        viewer.close()
    status, body = http(fuzz.server, "GET", "/readyz")
    assert status == 200 and body["status"] == "ready", body


FUZZ_SETTINGS = settings(
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- the decoder alone --------------------------------------------------------------------------


def _walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_strings(k)
            yield from _walk_strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _walk_strings(v)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.tuples(st.just(Framing.JSON), JSON_VALUES),
        st.tuples(st.just(Framing.MSGPACK), MSGPACK_VALUES),
        st.tuples(
            st.just(Framing.JSON),
            client_messages(Shop("p", "s", "g", "b", "a"), JSON_VALUES).map(lambda m: m[0]),
        ),
        st.tuples(
            st.just(Framing.MSGPACK),
            client_messages(Shop("p", "s", "g", "b", "a"), MSGPACK_VALUES).map(lambda m: m[0]),
        ),
    )
)
@example((Framing.JSON, {"type": "comment", "text": "\ud800"}))
@example((Framing.MSGPACK, {"type": "comment", "text": "a\udfffb", "rid": "r"}))
@example((Framing.JSON, {"type": "ping", "rid": "\ud800"}))
@example((Framing.JSON, {"type": "\udc00"}))
@example((Framing.JSON, {"type": "like", "\ud800": 1}))
@example((Framing.JSON, {"type": "like", "x": [{"k": ["\ud800"]}]}))
@example((Framing.JSON, {"type": "delete_comment", "comment_id": 1 << 70}))
@example((Framing.JSON, {"type": "ban", "\ud800\udc00": 1}))
@example((Framing.MSGPACK, {"type": "ban", "\ud800\udc00": 1}))
def test_decode_lets_no_unencodable_text_through(case: tuple[Framing, Any]) -> None:
    """decode() returns a command whose every string is UTF-8 and whose integers fit 64 bits,
    or refuses with a code; either way the answer encodes in both framings."""
    framing, value = case
    payload = encode(framing, value)
    try:
        command = messages.decode(framing, framing.opcode, payload, COMMANDS)
    except ProtocolError as exc:
        assert exc.code in {
            "bad_json",
            "bad_msgpack",
            "bad_message",
            "unknown_type",
            "missing_field",
            "invalid_field",
        }
        # (what the server reads: in JSON a high and a low surrogate side by side, escaped as
        # two \uXXXX, are one astral character, valid text; MessagePack carries them as they are)
        received = json.loads(payload) if framing is Framing.JSON else value
        broken = any(SURROGATE.search(s) for s in _walk_strings(received))
        if broken and isinstance(value, dict) and isinstance(value.get("type"), str):
            assert exc.code == "invalid_field" and "not valid Unicode text" in exc.message
        reply = messages.error(exc.code, exc.message, exc.rid, exc.data)
    else:
        for text in _walk_strings([command.type, command.rid, command.fields]):
            text.encode()
        for field in command.fields.values():
            if isinstance(field, int):
                assert -(1 << 63) <= field < 1 << 63
        reply = {"type": "ack", "rid": command.rid, "of": command.type, **command.fields}
    for out in Framing:
        messages.frame(out, reply)  # must not raise
        messages.encode(out, reply)


def test_decode_names_the_field_and_echoes_only_a_good_rid() -> None:
    def refusal(payload: bytes, framing: Framing = Framing.JSON) -> ProtocolError:
        with pytest.raises(ProtocolError) as info:
            messages.decode(framing, framing.opcode, payload, COMMANDS)
        assert info.value.code == "invalid_field"
        return info.value

    bad = refusal(b'{"type":"comment","text":"\\ud800","rid":"r1"}')
    assert "'text'" in bad.message and "not valid Unicode text" in bad.message and bad.rid == "r1"
    assert refusal(b'{"type":"ping","rid":"\\ud800"}').rid is None
    assert "'type'" in refusal(b'{"type":"\\udc00"}').message
    assert "'\\ud800'" in refusal(b'{"type":"like","\\ud800":1}').message  # quoted escaped
    assert "'extra'" in refusal(b'{"type":"like","extra":{"a":["\\udfff"]}}').message
    # MessagePack: invalid UTF-8 in a string is named the same way
    packed = msgpack.packb({"type": "comment", "text": "\ud800"}, unicode_errors="surrogatepass")
    assert "'text'" in refusal(packed, Framing.MSGPACK).message
    assert "out of range" in refusal(b'{"type":"delete_comment","comment_id":' + b"9" * 30 + b"}").message


def test_encode_never_fails_on_server_messages() -> None:
    message = {"type": "x", "text": "a\ud800b", "n": 1 << 70, "k": {"\udfff": ["\ud801"]}}
    assert json.loads(messages.encode(Framing.JSON, message))["text"] == "a\ufffdb"
    unpacked = msgpack.unpackb(messages.encode(Framing.MSGPACK, message), raw=False)
    assert (
        unpacked["text"] == "a\ufffdb"
        and unpacked["n"] == str(1 << 70)
        and unpacked["k"] == {"\ufffd": ["\ufffd"]}
    )


# -- every message type, over real sockets ------------------------------------------------------


@pytest.mark.timeout(300)
def test_every_message_type_gets_a_typed_answer(fuzz: Fuzz) -> None:
    shop = fuzz.shop

    @FUZZ_SETTINGS
    @given(
        role=st.sampled_from(["viewer", "host"]),
        case=st.one_of(
            st.tuples(st.just(Framing.JSON), client_messages(shop, JSON_VALUES)),
            st.tuples(st.just(Framing.MSGPACK), client_messages(shop, MSGPACK_VALUES)),
        ),
    )
    @example(role="viewer", case=(Framing.JSON, ({"type": "comment", "text": "\ud800"}, "c")))
    @example(role="viewer", case=(Framing.MSGPACK, ({"type": "comment", "text": "\udfff"}, "c")))
    @example(role="viewer", case=(Framing.JSON, ({"type": "ping", "rid": "\ud800"}, None)))
    @example(role="host", case=(Framing.JSON, ({"type": "host_message", "text": "hi \ud83d"}, "h")))
    @example(
        role="viewer",
        case=(Framing.JSON, ({"type": "reserve", "sale_id": shop.sale_id, "quantity": 1}, "\ud800")),
    )
    @example(
        role="host", case=(Framing.MSGPACK, ({"type": "delete_comment", "comment_id": (1 << 64) - 1}, "d"))
    )
    @example(role="host", case=(Framing.JSON, ({"type": "delete_comment", "comment_id": 1 << 70}, "d")))
    def run(role: str, case: tuple[Framing, tuple[dict[Any, Any], str | None]]) -> None:
        framing, (message, suffix) = case
        message = dict(message)
        if suffix is not None:
            message["rid"] = f"{next(_counter)}:{suffix}"[: messages.MAX_RID]
        peer = fuzz.peer(role, framing)
        exchange(peer, encode(framing, message), is_staff=role == "host")

    run()
    assert_server_works(fuzz)


@pytest.mark.timeout(300)
def test_arbitrary_values_as_whole_messages(fuzz: Fuzz) -> None:
    @FUZZ_SETTINGS
    @given(
        role=st.sampled_from(["viewer", "host"]),
        case=st.one_of(
            st.tuples(st.just(Framing.JSON), JSON_VALUES),
            st.tuples(st.just(Framing.MSGPACK), MSGPACK_VALUES),
            # an object with a type, of any value, and anything else
            st.tuples(st.just(Framing.JSON), st.dictionaries(texts(8), JSON_VALUES, max_size=3)),
            st.tuples(
                st.just(Framing.JSON),
                st.fixed_dictionaries(
                    {"type": texts(12) | st.sampled_from(TYPES)}, optional={"rid": JSON_VALUES}
                ),
            ),
            st.tuples(
                st.just(Framing.MSGPACK),
                st.fixed_dictionaries(
                    {"type": texts(12) | st.sampled_from(TYPES)}, optional={"rid": MSGPACK_VALUES}
                ),
            ),
        ),
    )
    @example(role="viewer", case=(Framing.JSON, {"type": "\ud800"}))
    @example(role="host", case=(Framing.MSGPACK, {"type": "ping", "rid": "\udc80"}))
    def run(role: str, case: tuple[Framing, Any]) -> None:
        framing, value = case
        peer = fuzz.peer(role, framing)
        exchange(peer, encode(framing, value), is_staff=role == "host")

    run()
    assert_server_works(fuzz)


# -- raw frames ---------------------------------------------------------------------------------


class RawClient:
    """A WebSocket client on a plain socket, to send frames no library would."""

    def __init__(self, server: Running, framing: Framing) -> None:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        self.framing = framing
        self.sock = socket.create_connection((host, int(port)), timeout=ANSWER_TIMEOUT_S)
        user = f"raw-{uuid.uuid4().hex[:8]}"
        self.sock.sendall(
            f"GET /ws/rooms/{ROOM}?token={mint(server, user, 'viewer')} HTTP/1.1\r\nHost: x\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {framing.value}\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.eof = False
        opcode, payload = self.frame()
        assert opcode == self.framing.opcode and self.decode(payload)["type"] == "welcome"

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buffer += chunk

    def frame(self) -> tuple[int, bytes]:
        """The next server frame (opcode, payload); EOFError at the end of the stream."""
        while True:
            if len(self.buffer) >= 2:
                first, second = self.buffer[0], self.buffer[1]
                assert second & 0x80 == 0, "a server frame is never masked"
                length, at = second & 0x7F, 2
                if length == 126:
                    length, at = int.from_bytes(self.buffer[2:4], "big"), 4
                elif length == 127:
                    length, at = int.from_bytes(self.buffer[2:10], "big"), 10
                if len(self.buffer) >= at + length and len(self.buffer) >= at:
                    payload, self.buffer = self.buffer[at : at + length], self.buffer[at + length :]
                    assert first & 0x80, "v1 servers send whole frames"
                    return first & 0x0F, payload
            self._fill()

    def decode(self, payload: bytes) -> dict[str, Any]:
        if self.framing is Framing.JSON:
            message = json.loads(payload.decode())
        else:
            message = msgpack.unpackb(payload, raw=False)
        assert isinstance(message, dict) and isinstance(message.get("type"), str), message
        return message

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the server may have closed already
            self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


def raw_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@dataclass(frozen=True)
class RawCase:
    framing: Framing
    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    masked: bool = True


def _payloads() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=140),
        texts(40).map(lambda t: t.encode("utf-8", "surrogatepass")),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        MSGPACK_VALUES.map(lambda v: encode(Framing.MSGPACK, v)),
        st.builds(
            lambda code, reason: struct.pack("!H", code) + reason,
            st.integers(0, 65535),
            st.binary(max_size=8),
        ),
        st.just(b"x" * (70 * 1024)),  # over max_frame_bytes
    )


RAW_CASES = st.builds(
    RawCase,
    framing=st.sampled_from(list(Framing)),
    opcode=st.sampled_from([0x0, OP_TEXT, OP_BINARY, 0x3, 0x7, 0x8, 0x9, 0xA, 0xB, 0xF]),
    payload=_payloads(),
    fin=st.booleans() | st.just(True),
    rsv=st.sampled_from([0, 0, 0, 1, 4]),
    masked=st.sampled_from([True, True, True, False]),
)


def expected_close(case: RawCase) -> set[int | None] | None:
    """The close codes the server may answer with (None: a close without a code), or None if
    the frame must not close the connection."""
    # in the order websockets checks a frame
    if not case.masked or case.opcode in (0x3, 0x7, 0xB, 0xF):
        return {1002}
    if len(case.payload) > 64 * 1024:
        return {1009}
    if case.rsv:
        return {1002}
    if case.opcode >= 0x8:
        if not case.fin or len(case.payload) > 125:
            return {1002}
        if case.opcode != 0x8:
            return None
        try:
            close = Close.parse(case.payload)
        except UnicodeDecodeError:
            return {1007}
        except Exception:
            return {1002}
        return {None} if not case.payload else {close.code}  # the client's own close, echoed
    if case.opcode == 0x0:
        return {1002}  # a continuation with nothing to continue
    if not case.fin:
        return {1003}
    if case.opcode == OP_TEXT:
        try:
            case.payload.decode()
        except UnicodeDecodeError:
            return {1007}
    return None


@pytest.mark.timeout(300)
def test_raw_frames_get_a_typed_answer_or_a_documented_close(fuzz: Fuzz) -> None:
    @FUZZ_SETTINGS
    @given(case=RAW_CASES)
    @example(case=RawCase(Framing.JSON, OP_TEXT, b"x" * (200 * 1024)))
    @example(case=RawCase(Framing.JSON, OP_TEXT, b"\xed\xa0\x80"))
    @example(case=RawCase(Framing.JSON, OP_TEXT, b'{"type":"comment","text":"\\ud800","rid":"r"}'))
    @example(case=RawCase(Framing.MSGPACK, OP_BINARY, b"\x82\xa4type\xa7comment\xa4text\xa3\xed\xa0\x80"))
    @example(case=RawCase(Framing.JSON, 0x9, b"p" * 125))
    @example(case=RawCase(Framing.JSON, 0x8, struct.pack("!H", 1000) + b"\xff"))
    def run(case: RawCase) -> None:
        client = RawClient(fuzz.server, case.framing)
        try:
            client.send(raw_frame(case.opcode, case.payload, case.fin, case.rsv, case.masked))
            sentinel = encode(case.framing, {"type": "ping", "rid": "after"})
            client.send(raw_frame(case.framing.opcode, sentinel))
            closes = expected_close(case)
            seen: list[tuple[int, bytes]] = []
            try:
                while True:
                    opcode, payload = client.frame()
                    seen.append((opcode, payload))
                    if opcode == 0x8:
                        break
                    if opcode == case.framing.opcode:
                        message = client.decode(payload)
                        if message["type"] == "pong" and message.get("rid") == "after":
                            break
            except EOFError:
                pytest.fail(f"the connection ended without a close frame after {seen}")
            last_op, last = seen[-1]
            if closes is not None:
                assert last_op == 0x8, (closes, seen)
                code = int.from_bytes(last[:2], "big") if last else None
                assert code in closes, (code, closes)
                assert code is None or code in DOCUMENTED_CLOSES or code == case_code(case)
                # complete the closing handshake; the server then ends the connection
                client.send(raw_frame(0x8, last))
                with contextlib.suppress(EOFError):
                    while True:
                        assert client.frame()[0] == 0x8, "a frame after the close"
                return
            assert last_op != 0x8, ("closed", seen, case)
            answers = [(op, p) for op, p in seen[:-1] if op != 0xA]
            if case.opcode == 0x9:
                assert (0xA, case.payload) in seen  # the ping's pong, payload echoed
            elif case.opcode in (OP_TEXT, OP_BINARY):
                check_raw_answer(client, case, answers)
        finally:
            client.close()

    run()
    assert_server_works(fuzz)


def case_code(case: RawCase) -> int | None:
    return int.from_bytes(case.payload[:2], "big") if case.opcode == 0x8 and len(case.payload) >= 2 else None


def check_raw_answer(client: RawClient, case: RawCase, answers: list[tuple[int, bytes]]) -> None:
    """A whole data frame: the error decode() gives it, or its command's answer."""
    decoded = [client.decode(p) for op, p in answers if op == case.framing.opcode]
    for message in decoded:
        check_typed(message)
    try:
        command = messages.decode(case.framing, case.opcode, case.payload, COMMANDS)
    except ProtocolError as exc:
        assert any(m["type"] == "error" and m["code"] == exc.code for m in decoded), (exc.code, decoded)
        return
    if command.type == "ping":
        assert any(m["type"] == "pong" and m.get("rid") == command.rid for m in decoded), decoded


# -- first-message auth -------------------------------------------------------------------------


def _auth_tokens(server: Running) -> dict[str, str]:
    """Tokens by what the server must answer them with (a user id: the welcome's)."""
    return {
        "fz-auth-viewer": mint(server, "fz-auth-viewer", "viewer"),
        "host1": mint(server, "host1", "host"),
        "token_expired": server.services.auth.mint("fz-late", ROOM, Role.VIEWER, -60),
        "wrong_room": server.services.auth.mint("fz-else", "elsewhere", Role.VIEWER, 600),
        "banned": mint(server, "fz-banned", "viewer"),
    }


@pytest.mark.timeout(300)
def test_first_message_auth_gets_a_welcome_or_a_typed_refusal_and_its_close(fuzz: Fuzz) -> None:
    """A first message of any shape on ``?auth=message``: a welcome for a good token (the right
    user, resumed or not), else an ``error`` with the refusal's code, then the close that
    gateway/close_codes.py maps it to; and the server keeps working."""
    from gateway.admission import auth_fields
    from gateway.close_codes import refusal

    server = fuzz.server
    host = fuzz.peer("host", Framing.JSON)
    host.send({"type": "ban", "user_id": "fz-banned", "rid": "fz-ban"})
    host.until(lambda m: answered(m, "fz-ban"))
    tokens = _auth_tokens(server)
    by_token = {value: name for name, value in tokens.items()}

    def auth_messages(values: st.SearchStrategy[Any], max_int: int) -> st.SearchStrategy[Any]:
        token = st.sampled_from(sorted(tokens.values())) | st.none() | texts() | values
        # past signed 64 bits: JSON carries any integer, MessagePack at most an unsigned 64-bit one
        seq = st.integers(-3, 50) | st.integers(0, max_int) | values
        message = st.fixed_dictionaries(
            {"type": st.just("auth") | st.sampled_from(TYPES) | texts(8)},
            optional={"token": token, "last_seq": seq, "rid": values, "extra": values},
        )
        return message | values

    @FUZZ_SETTINGS
    @given(
        case=st.one_of(
            st.tuples(st.just(Framing.JSON), auth_messages(JSON_VALUES, 1 << 70)),
            st.tuples(st.just(Framing.MSGPACK), auth_messages(MSGPACK_VALUES, (1 << 64) - 1)),
        )
    )
    @example(case=(Framing.JSON, {"type": "auth", "token": tokens["host1"], "last_seq": 0}))
    @example(case=(Framing.MSGPACK, {"type": "auth", "token": tokens["fz-auth-viewer"]}))
    @example(case=(Framing.JSON, {"type": "auth", "token": "\ud800"}))
    @example(case=(Framing.MSGPACK, {"type": "auth", "token": "\udcff"}))
    @example(case=(Framing.JSON, {"type": "auth", "token": tokens["banned"]}))
    @example(case=(Framing.JSON, {"type": "auth", "token": tokens["wrong_room"], "last_seq": True}))
    @example(case=(Framing.JSON, {"type": "comment", "text": "hi"}))
    def run(case: tuple[Framing, Any]) -> None:
        framing, value = case
        payload = encode(framing, value)
        try:
            command = messages.decode(framing, framing.opcode, payload)
            token, _ = auth_fields(command, None)
        except ProtocolError as exc:
            expected: tuple[str, int, str] | str = (exc.code, 4401, "token_missing")
        else:
            name = "token_missing" if token is None else by_token.get(token, "token_invalid")
            if name in ("fz-auth-viewer", "host1"):
                expected = name
            else:
                close = refusal(name)
                expected = (name, close.code, close.code_name)
        opening = connect(
            ws_url(server) + "?auth=message",
            subprotocols=[Subprotocol(framing.value)],
            compression=None,
            proxy=None,
            ping_interval=None,
            max_size=None,
        )
        with opening as ws:
            peer = Peer(ws, framing, contextlib.ExitStack())
            peer.send_payload(payload)
            if isinstance(expected, str):
                welcome = peer.recv()
                assert welcome["type"] == "welcome" and welcome["user"]["id"] == expected, welcome
                peer.send({"type": "ping", "rid": "after"})
                peer.until(lambda m: m["type"] == "pong" and m.get("rid") == "after")
                return
            error = peer.recv()
            check_typed(error)
            assert (error["type"], error["code"], error.get("rid")) == ("error", expected[0], None), error
            assert not SURROGATE.search(error["message"])
            with pytest.raises(ConnectionClosed) as info:
                peer.recv()
            rcvd = info.value.rcvd
            assert rcvd is not None and rcvd.code == expected[1], (rcvd, expected)
            assert json.loads(rcvd.reason) == {"code": expected[2]}

    run()
    assert_server_works(fuzz)
