"""What the gateway asks the application: who may join a room, what a product looks like, and
whom nobody may moderate. (The app's commands are registered with the gateway instead:
live/commands.py.)"""

from __future__ import annotations

import secrets
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from gateway.admission import Admission, Refused
from live.auth import Auth, AuthError, Role
from live.rooms import RoomNotFound, Rooms

if TYPE_CHECKING:
    from live.selling import Selling
    from live.tools import Tools


class Directory:
    def __init__(self, auth: Auth, rooms: Rooms) -> None:
        self.auth = auth
        self.rooms = rooms
        #: Set once the server has built it (it needs the hub, which needs this directory).
        self.selling: Selling | None = None
        #: The same: the interaction tools (their open draws, auctions, polls; top questions).
        self.tools: Tools | None = None

    async def admit(self, room_id: str, token: str | None) -> Admission:
        try:
            room = await self.rooms.get(room_id)
        except RoomNotFound:
            raise Refused(404, "room_not_found", "no such room") from None
        if token is None:
            if not room.allow_anonymous:
                raise Refused(401, "token_missing", "send a token: ?token=... or Authorization")
            user, role, expires_at = "anon_" + secrets.token_urlsafe(9), str(Role.VIEWER), None
        else:
            try:
                who = self.auth.verify(token)
                who.require_room(room_id)
            except AuthError as exc:
                raise Refused(exc.http_status, exc.code, exc.message) from None
            user, role, expires_at = who.user_id, str(who.role), who.expires_at
        welcome_room: dict[str, Any] = {"id": room.id, "title": room.title, "host_id": room.host_id}
        you: dict[str, Any] | None = None
        if self.selling is not None:
            welcome_room["sales"], you = await self.selling.room_view(
                room_id, None if token is None else user
            )
        if self.tools is not None:
            welcome_room.update(await self.tools.welcome(room_id))
        return Admission(user, role, welcome_room, expires_at=expires_at, anonymous=token is None, you=you)

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
