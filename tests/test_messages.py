"""The protocol core without sockets: decoding, checking, encoding, frames, words."""

from __future__ import annotations

import json

import msgpack
import pytest
from registry import every_command
from websockets.frames import Frame
from websockets.streams import StreamReader

from gateway import messages
from gateway.frames import OP_BINARY, OP_TEXT, close_frame, encode_frame
from gateway.messages import Framing, ProtocolError
from gateway.words import BannedWords

#: What decode checks commands against (a server's hub registry holds the same commands).
COMMANDS = every_command()


def test_decode_both_framings_to_one_model() -> None:
    as_json = messages.decode(
        Framing.JSON, OP_TEXT, b'{"type":"comment","text":"hi","rid":"r1","extra":1}', COMMANDS
    )
    as_msgpack = messages.decode(
        Framing.MSGPACK, OP_BINARY, msgpack.packb({"type": "comment", "text": "hi", "rid": "r1"}), COMMANDS
    )
    assert as_json == as_msgpack == messages.Command("comment", "r1", {"text": "hi"})
    assert messages.decode(Framing.JSON, OP_TEXT, b'{"type":"like"}', COMMANDS).fields == {}


@pytest.mark.parametrize(
    ("framing", "opcode", "payload", "code"),
    [
        (Framing.JSON, OP_BINARY, b"{}", "wrong_framing"),
        (Framing.MSGPACK, OP_TEXT, b"{}", "wrong_framing"),
        (Framing.JSON, OP_TEXT, b"\x00", "bad_json"),
        (Framing.MSGPACK, OP_BINARY, b"\xc1", "bad_msgpack"),
        (Framing.MSGPACK, OP_BINARY, b"\x81\x01\x02", "bad_msgpack"),  # {1: 2}: keys must be strings
        (Framing.JSON, OP_TEXT, b'"text"', "bad_message"),
        (Framing.JSON, OP_TEXT, b'{"type":"mute","user_id":"u"}', "missing_field"),
        (Framing.JSON, OP_TEXT, b'{"type":"mute","user_id":"u","duration_s":1.5}', "invalid_field"),
        (Framing.JSON, OP_TEXT, b'{"type":"delete_comment","comment_id":"7"}', "invalid_field"),
        (Framing.JSON, OP_TEXT, b'{"type":"ping","rid":""}', "invalid_field"),
        (Framing.JSON, OP_TEXT, b'{"type":"ping","rid":"' + b"r" * 65 + b'"}', "invalid_field"),
        (Framing.JSON, OP_TEXT, b'{"type":"nope"}', "unknown_type"),
    ],
)
def test_decode_refusals(framing: Framing, opcode: int, payload: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        messages.decode(framing, opcode, payload, COMMANDS)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("framing", "opcode", "payload", "field"),
    [
        (Framing.JSON, OP_TEXT, b'{"type":"comment","text":"\\ud800","rid":"r"}', "'text'"),
        (Framing.JSON, OP_TEXT, b'{"type":"comment","x":{"y":["\\udfff"]},"rid":"r"}', "'x'"),
        (Framing.JSON, OP_TEXT, b'{"type":"comment","\\ud800":1,"rid":"r"}', "'\\ud800'"),
        (Framing.MSGPACK, OP_BINARY, b"\x83\xa4type\xa7comment\xa3rid\xa1r\xa4text\xa1\xff", "'text'"),
        (Framing.MSGPACK, OP_BINARY, b"\x83\xa4type\xa7comment\xa3rid\xa1r\xa1x\x91\xa1\xfe", "'x'"),
    ],
)
def test_text_utf8_cannot_encode_is_refused_naming_its_field(
    framing: Framing, opcode: int, payload: bytes, field: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        messages.decode(framing, opcode, payload, COMMANDS)
    assert (info.value.code, info.value.rid) == ("invalid_field", "r")
    assert f"the field {field} " in info.value.message


def test_json_is_utf8_only() -> None:
    # json.loads would guess UTF-16 from bytes (NULs are valid UTF-8, so such a text frame gets
    # past the core's UTF-8 check): JSON text is UTF-8 (RFC 8259), anything else is bad_json
    utf16 = '{"type":"comment","text":"\\ud800","rid":"r"}'.encode("utf-16-le")
    with pytest.raises(ProtocolError) as info:
        messages.decode(Framing.JSON, OP_TEXT, utf16, COMMANDS)
    assert info.value.code == "bad_json"
    assert messages.decode(Framing.JSON, OP_TEXT, '{"type":"like","é":"\\u00e9"}'.encode()).type == "like"


def test_errors_keep_the_request_id() -> None:
    with pytest.raises(ProtocolError) as info:
        messages.decode(Framing.JSON, OP_TEXT, b'{"type":"comment","rid":"x1"}', COMMANDS)
    assert info.value.rid == "x1"
    assert messages.error("c", "m", "x1") == {"type": "error", "code": "c", "message": "m", "rid": "x1"}


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_frames_parse_back_with_websockets(size: int) -> None:
    payload = b"x" * size
    reader = StreamReader()
    reader.feed_data(encode_frame(OP_TEXT, payload))
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as done:
        next(parser)
    frame = done.value.value
    assert frame.fin and frame.data == payload and int(frame.opcode) == OP_TEXT


def test_one_encoding_per_framing() -> None:
    message = {"type": "host_message", "text": "限时 99元", "seq": 3}
    assert json.loads(messages.encode(Framing.JSON, message)) == message
    assert msgpack.unpackb(messages.encode(Framing.MSGPACK, message)) == message
    assert messages.frame(Framing.MSGPACK, message)[0] == 0x80 | OP_BINARY
    assert close_frame(4409, "x" * 200)[1] == 125  # reason cut to fit a control frame


def test_banned_words() -> None:
    words = BannedWords(["代购", "Scam", "buy followers", "  ", "ass"])
    assert words.found_in("找代·购") and words.found_in("SCAM!!") and words.found_in("buy  FOLLOWERS")
    assert words.found_in("ｓｃａｍ")  # noqa: RUF001 - full-width on purpose
    assert words.found_in("you ass") and not words.found_in("first class")
    assert not words.found_in("代表 good") and not BannedWords([])
