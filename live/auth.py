"""Room-scoped, expiring JWTs.

Claims: ``sub`` (user id), ``room`` (a room id, or ``*`` for every room), ``role`` (host,
moderator, viewer), ``exp`` and ``iat``. HS256 with the server's secret by default; RS256/ES256
verify with a configured public key, so an existing identity service can mint tokens.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any

import jwt

from live.errors import AppError
from live.text import is_text

ANY_ROOM = "*"
_LEEWAY_S = 5
#: Longest user id (a token's ``sub``) the server accepts.
MAX_USER_ID = 256


class Role(enum.StrEnum):
    HOST = "host"
    MODERATOR = "moderator"
    VIEWER = "viewer"


class AuthError(AppError):
    """A token was missing, invalid, expired, or not for this room. ``code`` is stable."""

    @property
    def http_status(self) -> int:
        """401 when the credential is missing or bad, 403 when it does not allow this."""
        return 403 if self.code in ("wrong_room", "forbidden") else 401


@dataclass(frozen=True)
class Identity:
    user_id: str
    room: str
    role: Role
    expires_at: float  #: seconds since the epoch

    def may_enter(self, room_id: str) -> bool:
        return self.room in (ANY_ROOM, room_id)

    def require_room(self, room_id: str) -> None:
        if not self.may_enter(room_id):
            raise AuthError("wrong_room", "this token is for another room")

    def require_role(self, *roles: Role) -> None:
        if self.role not in roles:
            raise AuthError(
                "forbidden", f"this needs the role {' or '.join(roles)}, the token has {self.role}"
            )


class Auth:
    def __init__(self, algorithm: str, verify_key: str | bytes, sign_key: str | bytes | None):
        self.algorithm = algorithm
        self._verify_key = verify_key
        self._sign_key = sign_key

    @classmethod
    def hs256(cls, secret: str) -> Auth:
        return cls("HS256", secret, secret)

    def mint(self, user_id: str, room: str, role: Role, ttl_s: int) -> str:
        if self._sign_key is None:
            raise AuthError("cannot_sign", f"no private key to sign {self.algorithm} tokens")
        if not user_id or not room:
            raise ValueError("a token needs a user id and a room")
        now = int(time.time())
        claims = {"sub": user_id, "room": room, "role": str(role), "iat": now, "exp": now + ttl_s}
        try:
            return jwt.encode(claims, self._sign_key, algorithm=self.algorithm)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise AuthError("cannot_sign", f"the signing key does not fit {self.algorithm}: {exc}") from exc

    def verify(self, token: str) -> Identity:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._verify_key,
                algorithms=[self.algorithm],
                options={"require": ["exp", "sub", "room", "role"]},
                leeway=_LEEWAY_S,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "the token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError("token_invalid", f"the token is not valid: {exc}") from None
        try:
            role = Role(claims["role"])
        except ValueError:
            raise AuthError("token_invalid", "the token has an unknown role") from None
        sub, room = claims["sub"], claims["room"]
        if not (isinstance(sub, str) and sub and isinstance(room, str) and room):
            raise AuthError("token_invalid", "the token's sub and room must be strings")
        if len(sub) > MAX_USER_ID or not is_text(sub) or not is_text(room):
            # a user id goes to Redis, the ledger and every viewer's screen: it must be text
            raise AuthError("token_invalid", f"the token's sub must be 1 to {MAX_USER_ID} characters of text")
        return Identity(user_id=sub, room=room, role=role, expires_at=float(claims["exp"]))
