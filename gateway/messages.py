"""Protocol v1 without I/O, the gateway's wire module: framings, client commands (decoded, and
checked against the command registry's schemas: gateway/commands.py), the gateway's one error
base (``GatewayError``), and a constructor for every server message the gateway sends.

A message is a dict with a ``type``. The same dict travels as a JSON text frame
(subprotocol ``live.v1.json``) or a MessagePack binary frame (``live.v1.msgpack``).
docs/protocol.md is the reference for every type, field and code here.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

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


class GatewayError(Exception):
    """The gateway's one error base: a refusal with a stable ``code`` (docs/protocol.md lists
    them all) and a ``message`` for people. Subclasses say how it is answered."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ProtocolError(GatewayError):
    """A client message the server refuses; answered with an ``error`` frame."""

    def __init__(
        self, code: str, message: str, rid: str | None = None, data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(code, message)
        self.rid = rid
        #: Extra fields of the error frame (``available`` for insufficient_stock, say).
        self.data = data or {}


@dataclass(frozen=True)
class Command:
    """A checked client message: its type, optional request id, and its fields."""

    type: str
    rid: str | None
    fields: dict[str, Any]


@dataclass(frozen=True)
class Field:
    """One field of a client command: its Python type (``str`` or ``int``) and whether it is
    required. Unknown extra fields are ignored, so a newer client can talk to an older server."""

    kind: type[str] | type[int]
    required: bool = True


class Schema(Protocol):
    """What decoding needs to know of a command (gateway/commands.py's ``Spec`` is one)."""

    @property
    def fields(self) -> Mapping[str, Field]: ...

    @property
    def needs_rid(self) -> bool: ...


class Schemas(Protocol):
    """Where decoding looks commands up (gateway/commands.py's ``Registry`` is one)."""

    def schema(self, name: str) -> Schema | None: ...


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


def decode(framing: Framing, opcode: int, payload: bytes, commands: Schemas | None = None) -> Command:
    """Parse and check one client frame against ``commands`` (the hub's registry), or raise
    ProtocolError. Without ``commands`` only the envelope is checked (framing, decoding,
    Unicode, ``rid``) and the command comes back unchecked, for ``check`` to finish."""
    if opcode != framing.opcode:
        kind = "text" if framing is Framing.JSON else "binary"
        raise ProtocolError("wrong_framing", f"this connection speaks {framing.value}: send {kind} frames")
    # Whether the decoded message may hold text UTF-8 cannot encode (and must be searched for
    # it, below): in JSON only a \u escape makes a surrogate (the text is UTF-8, as RFC 8259
    # and a WebSocket text frame require: json.loads would also guess UTF-16 or UTF-32 from
    # bytes, so it gets the decoded text); in MessagePack only invalid UTF-8 does, which a
    # strict decode finds first.
    suspect = False
    try:
        if framing is Framing.JSON:
            text = payload.decode()
            suspect = "\\u" in text
            raw = json.loads(text)
        else:
            try:
                raw = msgpack.unpackb(payload, raw=False, strict_map_key=True)
            except UnicodeDecodeError:  # decoded again, to name the field that holds it
                suspect = True
                raw = msgpack.unpackb(
                    payload, raw=False, strict_map_key=True, unicode_errors="surrogateescape"
                )
    except Exception:  # the parsers raise many types; all mean "not decodable"
        code = "bad_json" if framing is Framing.JSON else "bad_msgpack"
        raise ProtocolError(code, "the frame could not be decoded") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise ProtocolError("bad_message", "a message is an object with a string 'type'")
    rid = raw.get("rid")
    rid_ok = isinstance(rid, str) and 0 < len(rid) <= MAX_RID and _SURROGATE.search(rid) is None
    # Before anything reads the message: no text that cannot be encoded as UTF-8 gets past
    # here (it would fail later, in Redis calls and in every reply that echoes it).
    bad = _unencodable_field(raw) if suspect else None
    if bad is not None:
        raise ProtocolError(
            "invalid_field",
            f"the field {bad} is not valid Unicode text (a lone surrogate or invalid UTF-8)",
            rid if rid_ok else None,
        )
    if rid is not None and not rid_ok:
        raise ProtocolError("invalid_field", f"'rid' must be a string of 1 to {MAX_RID} characters")
    if commands is None:
        return Command(raw["type"], rid, {k: v for k, v in raw.items() if k not in ("type", "rid")})
    return _checked(raw["type"], rid, raw, commands)


def check(command: Command, commands: Schemas) -> Command:
    """``command`` checked against its schema in ``commands`` (what ``decode`` does with a
    registry), or raise ProtocolError. Checking a checked command changes nothing."""
    return _checked(command.type, command.rid, command.fields, commands)


def _checked(kind: str, rid: str | None, values: Mapping[str, Any], commands: Schemas) -> Command:
    schema = commands.schema(kind)
    if schema is None:
        raise ProtocolError("unknown_type", f"unknown message type {kind[:40]!r}", rid)
    fields: dict[str, Any] = {}
    for name, spec in schema.fields.items():
        value = values.get(name)
        if value is None:
            if spec.required:
                raise ProtocolError("missing_field", f"the field {name!r} is required", rid)
            continue
        if type(value) is not spec.kind:
            raise ProtocolError("invalid_field", f"the field {name!r} must be {_TYPE_NAMES[spec.kind]}", rid)
        if isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
            raise ProtocolError("invalid_field", f"the field {name!r} is out of range", rid)
        fields[name] = value
    if rid is None and schema.needs_rid:
        raise ProtocolError("missing_field", f"{kind} needs a 'rid' (it makes retries safe)")
    return Command(kind, rid, fields)


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


# -- server messages ----------------------------------------------------------------------------
# One constructor per message the gateway sends; docs/protocol.md documents each (a test checks
# that they agree). Room events (``by``, ``ts_ms``) get their ``seq`` from the bus when published.

#: Every server message type the gateway builds (the app's are in live/events.py).
SERVER_TYPES: set[str] = set()
Message = dict[str, Any]


def _type(name: str) -> str:
    SERVER_TYPES.add(name)
    return name


WELCOME, PONG, ACK, ERROR, LAGGED, BATCH = map(_type, ("welcome", "pong", "ack", "error", "lagged", "batch"))
COMMENT, HOST_MESSAGE = _type("comment"), _type("host_message")
PRODUCT_PINNED, PRODUCT_UNPINNED = _type("product_pinned"), _type("product_unpinned")
USER_MUTED, USER_BANNED = _type("user_muted"), _type("user_banned")
USER_UNMUTED, USER_UNBANNED = _type("user_unmuted"), _type("user_unbanned")
COMMENT_DELETED, SLOW_MODE, CHAT_CLEARED = _type("comment_deleted"), _type("slow_mode"), _type("chat_cleared")


def welcome(
    *,
    server_time_ms: int,
    seq: int,
    resumed: bool,
    room: dict[str, Any],
    user_id: str,
    role: str,
    online: int,
    likes: int,
    pinned: dict[str, Any] | None,
    slow_mode_s: int,
    comments: list[dict[str, Any]],
    you: dict[str, Any] | None = None,
) -> Message:
    out: Message = {
        "type": WELCOME,
        "v": VERSION,
        "server_time_ms": server_time_ms,
        "seq": seq,
        "resumed": resumed,
        "room": room,
        "user": {"id": user_id, "role": role},
        "online": online,
        "likes": likes,
        "pinned": pinned,
        "slow_mode_s": slow_mode_s,
        "comments": comments,
    }
    if you is not None:
        out["you"] = you
    return out


def pong(server_time_ms: int, rid: str | None) -> Message:
    out: Message = {"type": PONG, "server_time_ms": server_time_ms}
    if rid is not None:
        out["rid"] = rid
    return out


def ack(of: str, rid: str | None, fields: Mapping[str, Any] | None = None) -> Message:
    """A command took effect; ``fields`` are what its handler answered (they never override
    ``type``, ``rid`` or ``of``). ``rid`` is sent even when null (a host's command is always
    acked)."""
    return {**(fields or {}), "type": ACK, "rid": rid, "of": of}


def lagged(dropped_frames: int, dropped_comments: int) -> Message:
    return {"type": LAGGED, "dropped_frames": dropped_frames, "dropped_comments": dropped_comments}


def batch(
    ts_ms: int,
    comments: list[dict[str, Any]],
    *,
    likes: int | None = None,
    online: int | None = None,
    skipped: int | None = None,
) -> Message:
    """A tick's chat; ``likes``, ``online`` and ``skipped`` are present only when given."""
    out: Message = {"type": BATCH, "ts_ms": ts_ms, "comments": comments}
    if likes is not None:
        out["likes"] = likes
    if online is not None:
        out["online"] = online
    if skipped is not None:
        out["skipped"] = skipped
    return out


def comment(user_id: str, role: str, text: str, ts_ms: int) -> Message:
    """A comment as published (the bus adds its ``id`` and ``seq``)."""
    return {"type": COMMENT, "user_id": user_id, "role": role, "text": text, "ts_ms": ts_ms}


def host_message(role: str, text: str, *, by: str, ts_ms: int) -> Message:
    return {"type": HOST_MESSAGE, "role": role, "text": text, "by": by, "ts_ms": ts_ms}


def product_pinned(product: dict[str, Any], *, by: str, ts_ms: int) -> Message:
    return {"type": PRODUCT_PINNED, "product": product, "by": by, "ts_ms": ts_ms}


def product_unpinned(*, by: str, ts_ms: int) -> Message:
    return {"type": PRODUCT_UNPINNED, "by": by, "ts_ms": ts_ms}


def user_muted(user_id: str, until_ms: int, *, by: str, ts_ms: int) -> Message:
    return {"type": USER_MUTED, "user_id": user_id, "until_ms": until_ms, "by": by, "ts_ms": ts_ms}


def user_banned(user_id: str, *, by: str, ts_ms: int) -> Message:
    return {"type": USER_BANNED, "user_id": user_id, "by": by, "ts_ms": ts_ms}


def user_unmuted(user_id: str, *, by: str, ts_ms: int) -> Message:
    return {"type": USER_UNMUTED, "user_id": user_id, "by": by, "ts_ms": ts_ms}


def user_unbanned(user_id: str, *, by: str, ts_ms: int) -> Message:
    return {"type": USER_UNBANNED, "user_id": user_id, "by": by, "ts_ms": ts_ms}


def comment_deleted(comment_id: int, *, by: str, ts_ms: int) -> Message:
    return {"type": COMMENT_DELETED, "comment_id": comment_id, "by": by, "ts_ms": ts_ms}


def slow_mode(interval_s: int, *, by: str, ts_ms: int) -> Message:
    return {"type": SLOW_MODE, "interval_s": interval_s, "by": by, "ts_ms": ts_ms}


def chat_cleared(*, by: str, ts_ms: int) -> Message:
    return {"type": CHAT_CLEARED, "by": by, "ts_ms": ts_ms}


def error(
    code: str, message: str, rid: str | None = None, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A refusal (``data``: extra fields such as ``available``; never override the others)."""
    out: Message = {**(data or {}), "type": ERROR, "code": code, "message": message}
    if rid is not None:
        out["rid"] = rid
    return out
