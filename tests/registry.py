"""Every command a live server accepts, as a registry without a server: for tests that decode
frames the way the server does (gateway/messages.py's decode checks fields against it)."""

from __future__ import annotations

from typing import Any

from gateway.chat import CHAT_COMMANDS
from gateway.commands import STAFF, Caller, Registry, Reply
from gateway.messages import Command
from gateway.moderation import RULES
from live import auctions, draws, polls, questions
from live.commands import register


async def _refuse(caller: Caller, command: Command) -> Reply:
    raise AssertionError("a schema-only registry runs nothing")


class _NoBuyer:
    async def command(self, caller: Caller, command: Command) -> dict[str, Any]:
        raise AssertionError("a schema-only registry runs nothing")


def every_command() -> Registry[Caller]:
    """The gateway's commands, moderation's and the app's, with their fields and roles."""
    registry: Registry[Caller] = Registry()
    registry.register("ping", _refuse)
    for name, fields in CHAT_COMMANDS.items():
        registry.register(name, _refuse, fields)
    for name, rule in RULES.items():
        registry.register(name, _refuse, rule.fields, roles=STAFF)
    register(registry, _NoBuyer())
    for name, fields in auctions.COMMANDS.items():
        registry.register(name, _refuse, fields, signed_in=True, needs_rid=True)
    for name, fields in questions.COMMANDS.items():
        registry.register(name, _refuse, fields)
    for name, fields in questions.STAFF_COMMANDS.items():
        registry.register(name, _refuse, fields, roles=STAFF)
    for name, fields in draws.COMMANDS.items():
        registry.register(name, _refuse, fields)
    for name, fields in polls.COMMANDS.items():
        registry.register(name, _refuse, fields)
    return registry


#: The moderation commands (hosts and moderators only).
MODERATION = frozenset(RULES)
