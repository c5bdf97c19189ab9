"""The command registry: what a client may send, who may send it, and what carries it out.

The gateway registers its own commands (ping, comment, like, and moderation: gateway/hub.py,
gateway/moderation.py); the application registers its own the same way (live/commands.py), so a
new command is an addition there, never an edit here. ``messages.decode`` checks a frame's fields
against a command's schema; the Hub checks the sender (``Registry.allow``) and runs the handler.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from gateway.messages import Command, Field, ProtocolError

if TYPE_CHECKING:
    from gateway.connection import Connection

#: The roles that may moderate a room (and see every comment).
STAFF = frozenset({"host", "moderator"})


@dataclass(frozen=True)
class Caller:
    """Who sent a command, and from where: what a handler (the app's, say) is told."""

    room_id: str
    user_id: str
    role: str
    remote_ip: str
    anonymous: bool


@dataclass(frozen=True)
class Sender(Caller):
    """A command's sender as the gateway's own handlers see it: with its connection."""

    conn: Connection


#: What a handler is given: a Caller, or (for the gateway's own commands) a subclass of it.
S = TypeVar("S", bound=Caller)
#: The fields of the ``ack`` a command's handler answers with.
Reply = dict[str, Any]
#: A handler either returns a coroutine, run after the sender's previous command (commands take
#: effect in order) whose result is the ack's fields and whose ProtocolError is the refusal; or
#: it does its work at once and returns None, answering itself (the gateway's ping, comment and
#: like: the hot path takes no task).
Handler = Callable[[S, Command], Coroutine[Any, Any, Reply] | None]


@dataclass(frozen=True)
class Spec(Generic[S]):
    """A registered command."""

    name: str
    handler: Handler[S]
    fields: Mapping[str, Field] = field(default_factory=dict)
    #: The roles that may send it; None: anyone admitted.
    roles: frozenset[str] | None = None
    #: Anonymous viewers are refused with ``login_required``.
    signed_in: bool = False
    #: The ``rid`` is required (it makes a retry safe: the app's idempotency key).
    needs_rid: bool = False


class Registry(Generic[S]):
    """Commands by name. Registering a name twice is a bug (two owners of one command), so it
    is refused rather than one silently replacing the other."""

    def __init__(self) -> None:
        self._specs: dict[str, Spec[S]] = {}

    def register(
        self,
        name: str,
        handler: Handler[S],
        fields: Mapping[str, Field] | None = None,
        *,
        roles: frozenset[str] | None = None,
        signed_in: bool = False,
        needs_rid: bool = False,
    ) -> Spec[S]:
        if name in self._specs:
            raise ValueError(f"the command {name!r} is registered already")
        for field_name, spec in (fields or {}).items():
            if spec.kind not in (str, int) or field_name in ("type", "rid"):
                raise ValueError(f"the field {field_name!r} of {name!r} cannot be checked")
        registered = Spec(name, handler, dict(fields or {}), roles, signed_in, needs_rid)
        self._specs[name] = registered
        return registered

    def schema(self, name: str) -> Spec[S] | None:
        """The command named ``name``, or None (what ``messages.decode`` looks up)."""
        return self._specs.get(name)

    def __getitem__(self, name: str) -> Spec[S]:
        return self._specs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    @staticmethod
    def allow(spec: Spec[Any], caller: Caller, rid: str | None) -> None:
        """Refuse (ProtocolError) a sender the command is not for; changes nothing."""
        if spec.roles is not None and caller.role not in spec.roles:
            who = " and ".join(f"{role}s" for role in sorted(spec.roles))
            raise ProtocolError("forbidden", f"only {who} may send {spec.name}", rid)
        if spec.signed_in and caller.anonymous:
            message = f"sign in to send {spec.name}: anonymous viewers cannot"
            raise ProtocolError("login_required", message, rid)
