"""Protocol v1 without I/O: framings, client commands (decoded and checked), server messages.

A message is a dict with a ``type``. The same dict travels as a JSON text frame
(subprotocol ``live.v1.json``) or a MessagePack binary frame (``live.v1.msgpack``).
docs/protocol.md is the reference for every type, field and code here.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import msgpack

from gateway.frames import OP_BINARY, OP_TEXT, encode_frame

VERSION = 1

log = logging.getLogger(__name__)


class Framing(enum.Enum):
    JSON = "live.v1.json"
    MSGPACK = "live.v1.msgpack"

    @property
    def opcode(self) -> int:
        return OP_TEXT if self is Framing.JSON else OP_BINARY


#: Offered by the server, in order of preference when a client offers both.
SUBPROTOCOLS = [Framing.JSON.value, Framing.MSGPACK.value]


class ProtocolError(Exception):
    """A client message the server refuses; answered with an ``error`` frame."""

    def __init__(
        self, code: str, message: str, rid: str | None = None, data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.rid = rid
        #: Extra fields of the error frame (``available`` for insufficient_stock, say).
        self.data = data or {}


@dataclass(frozen=True)
class Command:
    """A checked client message: its type, optional request id, and its fields."""

    type: str
    rid: str | None
    fields: dict[str, Any]


# type -> {field: (python type, required)}. Unknown extra fields are ignored, so a newer
# client can talk to an older server.
_SCHEMAS: dict[str, dict[str, tuple[type, bool]]] = {
    "ping": {},
    "comment": {"text": (str, True)},
    "like": {"count": (int, False)},
    "host_message": {"text": (str, True)},
    "pin_product": {"product_id": (str, True)},
    "unpin_product": {},
    "mute": {"user_id": (str, True), "duration_s": (int, True)},
    "ban": {"user_id": (str, True)},
    "unmute": {"user_id": (str, True)},
    "unban": {"user_id": (str, True)},
    "delete_comment": {"comment_id": (int, True)},
    "slow_mode": {"interval_s": (int, True)},
    "clear_chat": {},
    # commerce: handed to the application (live/), which answers with an ack or an error
    "reserve": {"sale_id": (str, True), "quantity": (int, True)},
    "confirm": {"hold_id": (str, True), "coupon_id": (str, False)},
    "cancel": {"hold_id": (str, True)},
    "open_team": {"sale_id": (str, True), "quantity": (int, False)},
    "join_team": {"sale_id": (str, True), "code": (str, True), "quantity": (int, False)},
    "claim_coupon": {"sale_id": (str, True), "batch_id": (str, True)},
}
#: Commands only hosts and moderators may send.
MODERATION = frozenset(
    {
        "host_message",
        "pin_product",
        "unpin_product",
        "mute",
        "ban",
        "unmute",
        "unban",
        "delete_comment",
        "slow_mode",
        "clear_chat",
    }
)
#: Commands the gateway hands to the application (Directory.command); each needs a ``rid``,
#: which is also the idempotency key of the purchase it starts.
APP_COMMANDS = frozenset({"reserve", "confirm", "cancel", "open_team", "join_team", "claim_coupon"})
_TYPE_NAMES = {str: "a string", int: "an integer"}
MAX_RID = 64
#: Integer fields are signed 64-bit (what MessagePack carries and Redis stores); JSON's
#: unbounded integers beyond that are refused.
MIN_INT, MAX_INT = -(1 << 63), (1 << 63) - 1
#: The code points a Python string can hold and UTF-8 cannot encode: surrogates. JSON's
#: ``"\ud800"`` decodes to one; so does invalid UTF-8 in a MessagePack string (decoded with
#: ``surrogateescape``, so the error can name the field).
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Longest field name quoted in an error message.
_MAX_NAME = 40


def decode(framing: Framing, opcode: int, payload: bytes) -> Command:
    """Parse and check one client frame, or raise ProtocolError."""
    if opcode != framing.opcode:
        kind = "text" if framing is Framing.JSON else "binary"
        raise ProtocolError("wrong_framing", f"this connection speaks {framing.value}: send {kind} frames")
    try:
        if framing is Framing.JSON:
            raw = json.loads(payload)
        else:
            raw = msgpack.unpackb(payload, raw=False, strict_map_key=True, unicode_errors="surrogateescape")
    except Exception:  # the parsers raise many types; all mean "not decodable"
        code = "bad_json" if framing is Framing.JSON else "bad_msgpack"
        raise ProtocolError(code, "the frame could not be decoded") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise ProtocolError("bad_message", "a message is an object with a string 'type'")
    rid = raw.get("rid")
    rid_ok = isinstance(rid, str) and 0 < len(rid) <= MAX_RID and _SURROGATE.search(rid) is None
    # Before anything reads the message: no text that cannot be encoded as UTF-8 gets past
    # here (it would fail later, in Redis calls and in every reply that echoes it).
    bad = _unencodable_field(raw)
    if bad is not None:
        raise ProtocolError(
            "invalid_field",
            f"the field {bad} is not valid Unicode text (a lone surrogate or invalid UTF-8)",
            rid if rid_ok else None,
        )
    if rid is not None and not rid_ok:
        raise ProtocolError("invalid_field", f"'rid' must be a string of 1 to {MAX_RID} characters")
    schema = _SCHEMAS.get(raw["type"])
    if schema is None:
        raise ProtocolError("unknown_type", f"unknown message type {raw['type'][:40]!r}", rid)
    fields: dict[str, Any] = {}
    for name, (expected, required) in schema.items():
        value = raw.get(name)
        if value is None:
            if required:
                raise ProtocolError("missing_field", f"the field {name!r} is required", rid)
            continue
        if type(value) is not expected:
            raise ProtocolError("invalid_field", f"the field {name!r} must be {_TYPE_NAMES[expected]}", rid)
        if isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
            raise ProtocolError("invalid_field", f"the field {name!r} is out of range", rid)
        fields[name] = value
    if rid is None and raw["type"] in APP_COMMANDS:
        raise ProtocolError("missing_field", f"{raw['type']} needs a 'rid' (it makes retries safe)")
    return Command(raw["type"], rid, fields)


def _unencodable_field(message: dict[str, Any]) -> str | None:
    """The quoted name of the first field of ``message`` holding text that UTF-8 cannot
    encode, anywhere inside it (nested values, map keys), or None. Iterative: a deeply
    nested value must not exhaust the stack."""
    for key, value in message.items():
        pending: list[Any] = [key, value]
        while pending:
            item = pending.pop()
            if isinstance(item, str):
                if _SURROGATE.search(item) is not None:
                    return repr(key[:_MAX_NAME])  # repr escapes surrogates: always encodable
            elif isinstance(item, dict):
                pending.extend(item.keys())
                pending.extend(item.values())
            elif isinstance(item, list | tuple):
                pending.extend(item)
    return None


def encode(framing: Framing, message: dict[str, Any]) -> bytes:
    """The payload of one server message in a framing. Never raises for text that UTF-8
    cannot encode or integers MessagePack cannot carry: decode() lets neither in, and should
    one slip through anyway, the message goes out scrubbed rather than failing a whole fan-out
    or connection."""
    try:
        return _encode(framing, message)
    except (UnicodeEncodeError, OverflowError) as exc:
        log.warning(
            "a server message was scrubbed", extra={"type": repr(message.get("type")), "error": repr(exc)}
        )
        return _encode(framing, _scrub(message))


def _encode(framing: Framing, message: dict[str, Any]) -> bytes:
    if framing is Framing.JSON:
        return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def _scrub(value: Any) -> Any:
    """``value`` with surrogates replaced by U+FFFD and integers beyond 64 bits as strings."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not MIN_INT <= value < 1 << 64:
        return str(value)
    return value


def frame(framing: Framing, message: dict[str, Any]) -> bytes:
    """A whole WebSocket frame carrying ``message``, ready for ``transport.write``."""
    return encode_frame(framing.opcode, encode(framing, message))


def error(
    code: str, message: str, rid: str | None = None, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {**(data or {}), "type": "error", "code": code, "message": message}
    if rid is not None:
        out["rid"] = rid
    return out
