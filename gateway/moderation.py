"""Moderation: what hosts and moderators may do to a room, as a table.

Each command is a row: its fields, the checks that refuse it before anything changes (ranges,
a protected target, whose mute is whose to lift), and its action (the bus calls and the event
that announces it to the room). ``Moderation.register`` puts every row in the hub's command
registry, for staff only; a new moderation command is a new row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from gateway import messages
from gateway.bus import Bus, now_ms
from gateway.commands import STAFF, Caller, Registry, Reply, S
from gateway.config import GatewayConfig
from gateway.messages import Command, Field, ProtocolError

log = logging.getLogger(__name__)

MAX_MUTE_S = 30 * 86_400
MAX_SLOW_MODE_S = 3600

Fields = Mapping[str, Any]


class Targets(Protocol):
    """What moderation asks the application (live/directory.py)."""

    async def product(self, room_id: str, product_id: str) -> dict[str, Any] | None:
        """A product of the room, as pinned cards show it, or None."""

    async def may_moderate(self, room_id: str, user_id: str) -> bool:
        """False for a user nobody may mute or ban in this room (its host)."""


@dataclass(frozen=True)
class Moderation:
    bus: Bus
    targets: Targets
    config: GatewayConfig

    def register(self, commands: Registry[S]) -> None:
        for name, rule in RULES.items():
            commands.register(name, self._handler(name, rule), rule.fields, roles=STAFF)

    def _handler(self, name: str, rule: Rule) -> Callable[[Caller, Command], Coroutine[Any, Any, Reply]]:
        async def handle(caller: Caller, command: Command) -> Reply:
            try:
                for check in rule.checks:
                    await check(self, name, caller, command.fields)
                await rule.act(self, caller, command.fields, now_ms())
            except (RedisError, OSError) as exc:
                log.warning("moderation failed on Redis", extra={"room": caller.room_id, "error": repr(exc)})
                raise ProtocolError("unavailable", "the room store is unavailable; retry") from None
            return {}  # acked, rid or not: a host always learns their command took effect

        return handle


#: Refuses (raises ProtocolError) before anything changes: (moderation, command, sender, fields).
Check = Callable[[Moderation, str, Caller, Fields], Awaitable[None]]
#: Does it: the bus calls and the event, given the time it happens.
Act = Callable[[Moderation, Caller, Fields, int], Awaitable[None]]


@dataclass(frozen=True)
class Rule:
    fields: Mapping[str, Field]
    checks: tuple[Check, ...]
    act: Act


# -- checks -------------------------------------------------------------------------------------


def _in_range(name: str, low: int, high: int | None, message: str) -> Check:
    async def check(_: Moderation, __: str, ___: Caller, f: Fields) -> None:
        if f[name] < low or (high is not None and f[name] > high):
            raise ProtocolError("invalid_field", message)

    return check


async def _text_fits(mod: Moderation, _: str, __: Caller, f: Fields) -> None:
    limit = mod.config.max_host_message_chars
    if not 0 < len(f["text"].strip()) <= limit:
        raise ProtocolError("invalid_field", f"'text' must be 1 to {limit} characters")


async def _not_protected(mod: Moderation, _: str, caller: Caller, f: Fields) -> None:
    """Nobody mutes or bans the room's host."""
    if not await mod.targets.may_moderate(caller.room_id, f["user_id"]):
        raise ProtocolError("protected_user", "the room's host cannot be muted or banned")


async def _not_own_lift(_: Moderation, name: str, caller: Caller, f: Fields) -> None:
    """A host's decision about a moderator is not the moderator's to undo."""
    if caller.role != "host" and f["user_id"] == caller.user_id:
        raise ProtocolError("forbidden", f"only a host may {name} you")


# -- actions ------------------------------------------------------------------------------------


async def _host_message(mod: Moderation, caller: Caller, f: Fields, at: int) -> None:
    event = messages.host_message(caller.role, f["text"].strip(), by=caller.user_id, ts_ms=at)
    await mod.bus.publish_one(caller.room_id, event)


async def _pin(mod: Moderation, caller: Caller, f: Fields, at: int) -> None:
    product = await mod.targets.product(caller.room_id, f["product_id"])
    if product is None:
        raise ProtocolError("product_not_found", "no such product in this room")
    await mod.bus.set_state(caller.room_id, pinned=json.dumps(product, ensure_ascii=False))
    await mod.bus.publish_one(caller.room_id, messages.product_pinned(product, by=caller.user_id, ts_ms=at))


async def _unpin(mod: Moderation, caller: Caller, _: Fields, at: int) -> None:
    await mod.bus.clear_state(caller.room_id, "pinned")
    await mod.bus.publish_one(caller.room_id, messages.product_unpinned(by=caller.user_id, ts_ms=at))


async def _mute(mod: Moderation, caller: Caller, f: Fields, at: int) -> None:
    until = at + f["duration_s"] * 1000  # (the event says: ts_ms + duration)
    await mod.bus.mute(caller.room_id, f["user_id"], until)
    event = messages.user_muted(f["user_id"], until, by=caller.user_id, ts_ms=at)
    await mod.bus.publish_one(caller.room_id, event)


async def _ban(mod: Moderation, caller: Caller, f: Fields, at: int) -> None:
    await mod.bus.ban(caller.room_id, f["user_id"])
    await mod.bus.publish_one(caller.room_id, messages.user_banned(f["user_id"], by=caller.user_id, ts_ms=at))


async def _unmute(mod: Moderation, caller: Caller, f: Fields, at: int) -> None:
    if await mod.bus.unmute(caller.room_id, f["user_id"]):  # (nothing to announce otherwise)
        event = messages.user_unmuted(f["user_id"], by=caller.user_id, ts_ms=at)
        await mod.bus.publish_one(caller.room_id, event)


async def _unban(mod: Moderation, caller: Caller, f: Fields, at: int) -> None:
    if await mod.bus.unban(caller.room_id, f["user_id"]):  # (nothing to announce otherwise)
        event = messages.user_unbanned(f["user_id"], by=caller.user_id, ts_ms=at)
        await mod.bus.publish_one(caller.room_id, event)


async def _delete_comment(mod: Moderation, caller: Caller, f: Fields, at: int) -> None:
    await mod.bus.forget_comment(caller.room_id, f["comment_id"])
    event = messages.comment_deleted(f["comment_id"], by=caller.user_id, ts_ms=at)
    await mod.bus.publish_one(caller.room_id, event)


async def _slow_mode(mod: Moderation, caller: Caller, f: Fields, at: int) -> None:
    await mod.bus.set_state(caller.room_id, slow_mode_s=f["interval_s"])
    event = messages.slow_mode(f["interval_s"], by=caller.user_id, ts_ms=at)
    await mod.bus.publish_one(caller.room_id, event)


async def _clear_chat(mod: Moderation, caller: Caller, _: Fields, at: int) -> None:
    # the event first: its seq is where the room's chat now starts for new viewers
    seq = await mod.bus.publish_one(caller.room_id, messages.chat_cleared(by=caller.user_id, ts_ms=at))
    await mod.bus.set_state(caller.room_id, cleared_seq=seq)


_USER = {"user_id": Field(str)}

#: command -> (fields, checks, action). Every row is for hosts and moderators only.
RULES: dict[str, Rule] = {
    "host_message": Rule({"text": Field(str)}, (_text_fits,), _host_message),
    "pin_product": Rule({"product_id": Field(str)}, (), _pin),
    "unpin_product": Rule({}, (), _unpin),
    "mute": Rule(
        {**_USER, "duration_s": Field(int)},
        (_in_range("duration_s", 1, MAX_MUTE_S, f"'duration_s' must be 1 to {MAX_MUTE_S}"), _not_protected),
        _mute,
    ),
    "ban": Rule(_USER, (_not_protected,), _ban),
    "unmute": Rule(_USER, (_not_own_lift,), _unmute),
    "unban": Rule(_USER, (_not_own_lift,), _unban),
    "delete_comment": Rule(
        {"comment_id": Field(int)},
        (_in_range("comment_id", 1, None, "'comment_id' must be a comment's id"),),
        _delete_comment,
    ),
    "slow_mode": Rule(
        {"interval_s": Field(int)},
        (_in_range("interval_s", 0, MAX_SLOW_MODE_S, f"'interval_s' must be 0 to {MAX_SLOW_MODE_S}"),),
        _slow_mode,
    ),
    "clear_chat": Rule({}, (), _clear_chat),
}
