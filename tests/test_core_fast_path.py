"""The core's fast path for frames (``ConnectionCore._read_frames``) against websockets' own
parser: any sequence of frames, good or broken, cut into reads anywhere, must give the same
actions, in the same order, as a core that leaves every frame to websockets."""

from __future__ import annotations

import itertools
import json
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from test_connection_core import CONFIG, Peer, joined
from websockets.frames import Frame, Opcode

from gateway.protocol import Action, ConnectionCore, Handle, Write

MASK = b"\x37\xfa\x21\x3d"


def raw_frame(first: int, payload: bytes, *, masked: bool = True, length: int | None = None) -> bytes:
    """A frame built by hand: any first byte (FIN, reserved bits, opcode), any declared length."""
    n = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([first, mask_bit | n])
    elif n < 65536:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


COMMAND = st.builds(
    lambda text, rid: json.dumps({"type": "comment", "text": text, "rid": rid}).encode(),
    st.text(max_size=40),
    st.text(min_size=1, max_size=8),
)
FRAMES = st.one_of(
    COMMAND.map(lambda p: raw_frame(0x81, p)),  # a text command
    st.binary(max_size=300).map(lambda p: raw_frame(0x82, p)),  # binary: not msgpack, refused
    st.binary(max_size=200).map(lambda p: raw_frame(0x81, p)),  # text: maybe not UTF-8 (1007)
    st.binary(max_size=125).map(lambda p: raw_frame(0x89, p)),  # ping
    st.binary(max_size=125).map(lambda p: raw_frame(0x8A, p)),  # pong
    st.just(raw_frame(0x88, struct.pack("!H", 1000))),  # close
    COMMAND.map(lambda p: raw_frame(0x01, p)),  # the first fragment of a message
    COMMAND.map(lambda p: raw_frame(0x80, p)),  # a continuation nobody started
    COMMAND.map(lambda p: raw_frame(0xC1, p)),  # a reserved bit
    COMMAND.map(lambda p: raw_frame(0x81, p, masked=False)),  # unmasked
    st.just(raw_frame(0x83, b"x")),  # a reserved opcode
    st.just(raw_frame(0x89, b"p" * 126)),  # a control frame too long
    st.just(raw_frame(0x09, b"p")),  # a fragmented control frame
    st.just(raw_frame(0x81, b"", length=CONFIG.max_frame_bytes + 1)),  # too big (header only)
    st.binary(min_size=1, max_size=20),  # noise
)


def normal(actions: list[Action]) -> tuple[list[object], list[bytes]]:
    """Actions compared by what they carry (Write's bytes, Handle's command, the rest as is),
    and the pongs written, apart: the fast path writes a pong in turn, when its ping is handled
    (before the answers to what followed it), websockets' parser at the next flush."""
    out: list[object] = []
    pongs: list[bytes] = []
    for action in actions:
        if isinstance(action, Write) and action.data[:1] == b"\x8a" and not action.message:
            pongs.append(action.data)
        elif isinstance(action, Write):
            out.append(("write", action.data, action.message))
        elif isinstance(action, Handle):
            out.append(("handle", action.command))
        else:
            out.append(action)
    return out, pongs


def open_core(fast: bool) -> ConnectionCore:
    core = ConnectionCore(CONFIG, 0.0)
    joined(core, Peer())
    if not fast:
        core._leave_fast_path()
    assert core._fast is fast
    return core


@settings(max_examples=400, deadline=None)
@given(frames=st.lists(FRAMES, max_size=12), cuts=st.lists(st.integers(0, 4000), max_size=8))
def test_the_fast_path_acts_as_websockets_parser_does(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frames)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    fast, slow = open_core(fast=True), open_core(fast=False)
    for i, (start, stop) in enumerate(itertools.pairwise(points)):
        now = 0.001 * i
        for core in (fast, slow):
            core.receive_data(stream[start:stop], now)
        assert normal(fast.actions()) == normal(slow.actions())
        assert fast.ws.state is slow.ws.state
    for core in (fast, slow):
        core.receive_eof()
    assert normal(fast.actions()) == normal(slow.actions())
    assert fast.ws.state is slow.ws.state


def test_the_fast_path_reads_commands_split_anywhere_and_answers_pings() -> None:
    core = open_core(fast=True)
    ping = Frame(Opcode.PING, b"hi").serialize(mask=True)
    first, second = (raw_frame(0x81, b'{"type":"ping","rid":"%s"}' % rid) for rid in (b"a", b"b"))
    stream = first + ping + second
    actions: list[Action] = []
    for byte in range(len(stream)):
        core.receive_data(stream[byte : byte + 1], 0.0)
        actions += core.actions()
    assert [a.command.rid for a in actions if isinstance(a, Handle)] == ["a", "b"]
    pong = Frame(Opcode.PONG, b"hi").serialize(mask=False)
    assert [a.data for a in actions if isinstance(a, Write)] == [pong]
    assert core._fast  # nothing unusual: still on the fast path


def test_a_close_hands_the_connection_to_websockets() -> None:
    core = open_core(fast=True)
    core.receive_data(raw_frame(0x88, struct.pack("!H", 1000)) + raw_frame(0x81, b'{"type":"ping"}'), 0.0)
    actions = core.actions()
    assert not core._fast and not [a for a in actions if isinstance(a, Handle)]
