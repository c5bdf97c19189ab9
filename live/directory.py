"""What the gateway asks the application: who may join a room, what a product looks like, and
whom nobody may moderate. (The app's commands are registered with the gateway instead:
live/commands.py.)"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from gateway.admission import Admission, Refused
from gateway.shared_reads import SharedReads
from live.auth import Auth, AuthError, Role
from live.rooms import RoomNotFound, Rooms
from live.store import RoomRow

if TYPE_CHECKING:
    from live.selling import Selling
    from live.tools import Tools


@dataclass(frozen=True)
class RoomWelcome:
    """What every viewer joining a room is told of it: the room, its welcome's ``room`` (id,
    title, host, sales, tools), and the sales in play, in which a signed-in viewer's ``you``
    is read."""

    room: RoomRow
    view: dict[str, Any]
    in_play: list[str]


class Directory:
    def __init__(self, auth: Auth, rooms: Rooms) -> None:
        self.auth = auth
        self.rooms = rooms
        #: Set once the server has built it (it needs the hub, which needs this directory).
        self.selling: Selling | None = None
        #: The same: the interaction tools (their open draws, auctions, polls; top questions).
        self.tools: Tools | None = None
        # Read once for the viewers of a room who join at once (a reconnect storm), not once
        # for each: gateway/shared_reads.py.
        self._welcomes = SharedReads(self._read_welcomes)
        self._yours = SharedReads(self._read_yours)

    async def admit(self, room_id: str, token: str | None) -> Admission:
        try:
            welcome = await self._welcomes(room_id, None)
        except RoomNotFound:
            raise Refused(404, "room_not_found", "no such room") from None
        if token is None:
            if not welcome.room.allow_anonymous:
                raise Refused(401, "token_missing", "send a token: ?token=... or Authorization")
            user, role, expires_at = "anon_" + secrets.token_urlsafe(9), str(Role.VIEWER), None
        else:
            try:
                who = self.auth.verify(token)
                who.require_room(room_id)
            except AuthError as exc:
                raise Refused(exc.http_status, exc.code, exc.message) from None
            user, role, expires_at = who.user_id, str(who.role), who.expires_at
        you: dict[str, Any] | None = None
        if token is not None and self.selling is not None:
            you = await self._yours(room_id, (welcome.in_play, user))
        anonymous = token is None
        return Admission(user, role, welcome.view, expires_at=expires_at, anonymous=anonymous, you=you)

    async def _read_welcomes(self, room_id: str, asks: list[None]) -> list[RoomWelcome]:
        room = await self.rooms.get(room_id)
        view: dict[str, Any] = {"id": room.id, "title": room.title, "host_id": room.host_id}
        in_play: list[str] = []
        if self.selling is not None:
            sales = await self.selling.room_sales(room_id)
            view["sales"], in_play = sales.sales, sales.in_play
        if self.tools is not None:
            view.update(await self.tools.welcome(room_id))
        return [RoomWelcome(room, view, in_play)] * len(asks)

    async def _read_yours(self, room_id: str, asks: list[tuple[list[str], str]]) -> list[dict[str, Any]]:
        assert self.selling is not None  # (asked only when there is selling)
        return await self.selling.yours(asks)

    async def product(self, room_id: str, product_id: str) -> dict[str, Any] | None:
        for product in await self.rooms.products(room_id):
            if product.id == product_id:
                return asdict(product)
        return None

    async def may_moderate(self, room_id: str, user_id: str) -> bool:
        """Everyone but the room's host: a moderator locking the host out of their own room
        (or a host themselves by a slip) is never what anyone meant."""
        try:
            room = await self.rooms.get(room_id)
        except RoomNotFound:
            return True  # no room, no host to protect
        return user_id != room.host_id
