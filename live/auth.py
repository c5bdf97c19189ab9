"""Room-scoped, expiring JWTs.

Claims: ``sub`` (user id), ``room`` (a room id, or ``*`` for every room), ``role`` (host,
moderator, viewer), ``exp`` and ``iat``. HS256 with the server's secret by default; RS256/ES256
verify with a configured public key, so an existing identity service can mint tokens.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import hmac
import json
import re
import time
from base64 import urlsafe_b64decode
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm

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


class QuickHS256:
    """The common token checked without PyJWT's per-call work: PyJWT checks each character of
    a token in Python and prepares its key on every call, about 55 us of a handshake's 600 here.

    The quick check accepts an HS256 token only if it is certainly good: three base64url
    segments, a plain header (``alg`` HS256, at most ``typ`` JWT), a valid signature, claims
    that are only those live reads (string ``sub``, ``room``, ``role``, ``jti``; integer ``exp``
    and ``iat``), in date with the leeway. Anything else, a failure included, is PyJWT's to
    judge (``None``), so it never accepts what PyJWT would refuse (tests/test_auth.py checks it
    against PyJWT) and every refusal keeps PyJWT's reason."""

    _SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
    _HEADERS = ({"alg": "HS256", "typ": "JWT"}, {"alg": "HS256"})
    _CLAIMS = frozenset({"sub", "room", "role", "jti", "exp", "iat"})
    _TEXT_CLAIMS = ("sub", "room", "role")

    def __init__(self, secret: bytes) -> None:
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)
        #: Header segments already seen to be plain (a few: every token of a minter has one).
        self._plain: set[str] = set()

    def claims(self, token: str, now: float, leeway: float) -> dict[str, Any] | None:
        parts = token.split(".")
        if len(parts) != 3 or not all(self._SEGMENT.fullmatch(p) for p in parts):
            return None
        head, body, signature = parts
        try:
            if head not in self._plain:
                if json.loads(_unbase64(head)) not in self._HEADERS:
                    return None
                if len(self._plain) < 16:
                    self._plain.add(head)
            mac = self._mac.copy()
            mac.update(f"{head}.{body}".encode())
            if not hmac.compare_digest(mac.digest(), _unbase64(signature)):
                return None
            claims = json.loads(_unbase64(body))
        except ValueError:  # (binascii.Error, UnicodeDecodeError and JSONDecodeError are)
            return None
        if type(claims) is not dict or not claims.keys() <= self._CLAIMS:
            return None
        exp, iat = claims.get("exp"), claims.get("iat", 0)
        if type(exp) is not int or type(iat) is not int or exp <= now - leeway or iat > now + leeway:
            return None
        if any(type(claims.get(name)) is not str for name in self._TEXT_CLAIMS):
            return None
        if type(claims.get("jti", "")) is not str:
            return None
        return claims

    @classmethod
    def for_key(cls, algorithm: str, key: str | bytes) -> QuickHS256 | None:
        """The quick check for this key, if it is an HS256 secret PyJWT would use (it refuses
        a PEM or SSH key as an HMAC secret: the algorithm-confusion guard)."""
        if algorithm != "HS256":
            return None
        try:
            secret = HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(key)
        except jwt.InvalidKeyError:
            return None
        return cls(secret)


def _unbase64(segment: str) -> bytes:
    try:
        return urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


class Auth:
    def __init__(self, algorithm: str, verify_key: str | bytes, sign_key: str | bytes | None):
        self.algorithm = algorithm
        self._verify_key = verify_key
        self._sign_key = sign_key
        self._quick = QuickHS256.for_key(algorithm, verify_key)

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
        claims = None if self._quick is None else self._quick.claims(token, time.time(), _LEEWAY_S)
        if claims is None:
            claims = self._decode(token)
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

    def _decode(self, token: str) -> dict[str, Any]:
        """PyJWT's verdict: every algorithm and key, every claim's rules, the reasons."""
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
        return claims
