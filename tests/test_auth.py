import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from live.auth import ANY_ROOM, Auth, AuthError, Role

SECRET = "a" * 48


def test_round_trip() -> None:
    auth = Auth.hs256(SECRET)
    who = auth.verify(auth.mint("alice", "shop1", Role.VIEWER, 60))
    assert (who.user_id, who.room, who.role) == ("alice", "shop1", Role.VIEWER)
    assert who.may_enter("shop1") and not who.may_enter("shop2")
    assert time.time() < who.expires_at <= time.time() + 61


def test_wildcard_room() -> None:
    auth = Auth.hs256(SECRET)
    who = auth.verify(auth.mint("h", ANY_ROOM, Role.HOST, 60))
    who.require_room("any-room")
    who.require_role(Role.HOST)


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: Auth.hs256("b" * 48).mint("x", "r", Role.HOST, 60), "token_invalid"),  # forged
        (lambda: "not.a.token", "token_invalid"),
        (
            lambda: jwt.encode({"sub": "x", "room": "r", "role": "host", "exp": 1}, SECRET),
            "token_expired",
        ),
        (lambda: jwt.encode({"sub": "x", "room": "r", "exp": 2**40}, SECRET), "token_invalid"),
        (
            lambda: jwt.encode({"sub": "x", "room": "r", "role": "god", "exp": 2**40}, SECRET),
            "token_invalid",
        ),
        (
            lambda: jwt.encode({"sub": 5, "room": "r", "role": "host", "exp": 2**40}, SECRET),
            "token_invalid",
        ),
        # alg=none must never be accepted
        (
            lambda: jwt.encode(
                {"sub": "x", "room": "r", "role": "host", "exp": 2**40}, None, algorithm="none"
            ),
            "token_invalid",
        ),
    ],
)
def test_bad_tokens(make, code: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AuthError) as info:
        Auth.hs256(SECRET).verify(make())
    assert info.value.code == code


def test_wrong_room_and_role() -> None:
    auth = Auth.hs256(SECRET)
    who = auth.verify(auth.mint("v", "shop1", Role.VIEWER, 60))
    with pytest.raises(AuthError) as room:
        who.require_room("shop2")
    assert room.value.code == "wrong_room"
    with pytest.raises(AuthError) as role:
        who.require_role(Role.HOST, Role.MODERATOR)
    assert role.value.code == "forbidden"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_tokens_minted_elsewhere_verify_with_a_public_key(algorithm: str) -> None:
    key = (
        rsa.generate_private_key(65537, 2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    identity_service = Auth(algorithm, public, private)
    server = Auth(algorithm, public, None)
    token = identity_service.mint("mod", "shop1", Role.MODERATOR, 60)
    assert server.verify(token).role is Role.MODERATOR
    # an HS256 token signed with the public key as secret (algorithm confusion) is refused
    forged = jwt.encode({"sub": "x", "room": "r", "role": "host", "exp": 2**40}, "p" * 48)
    with pytest.raises(AuthError):
        server.verify(forged)
    with pytest.raises(AuthError, match="no private key"):
        server.mint("x", "r", Role.HOST, 60)
