import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

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


# -- the quick HS256 check: never more lenient than PyJWT -------------------------------------

NOW = int(time.time())
_texts = st.text(max_size=8) | st.sampled_from(["alice", "shop1", "viewer", "host", "*"])
_claim_values = (
    _texts
    | st.integers(min_value=NOW - 3600, max_value=NOW + 3600)
    | st.sampled_from([NOW - 6, NOW - 5, NOW - 4, NOW + 4, NOW + 5, NOW + 6, True, None, 1.5, [], {}])
)
_claims = st.dictionaries(
    st.sampled_from(["sub", "room", "role", "exp", "iat", "jti", "nbf", "aud", "iss", "extra"]),
    _claim_values,
    max_size=8,
)
_headers = st.sampled_from(
    [
        None,
        {"typ": "JWT"},
        {"kid": "k1"},
        {"typ": "JWS"},
        {"crit": ["exp"]},
        {"b64": False, "crit": ["b64"]},
        {"alg": "none"},
        {"alg": "HS512"},
        {"alg": None},
    ]
)


def _sign(header: dict[str, object], claims: dict[str, object], key: str) -> str:
    """An HS256 token of any header and claims (jwt.encode refuses some, as a minter would)."""

    def segment(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = segment(json.dumps(header).encode())
    body = segment(json.dumps(claims).encode())
    mac = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{segment(mac)}"


def _tamper(token: str, how: int) -> str:
    head, body, sig = token.split(".")
    return [
        token,
        f"{head}.{body}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}",  # another signature
        f"{head}.{body}.{sig}=",  # padding PyJWT refuses
        f"{head}.{body}.{sig[:5]}*{sig[5:]}",  # a character outside base64url
        f"{head}.{body}",  # two segments
        f"{head}.{body}.{sig}.",  # four
        f"{head}.{body[:-1]}.{sig}",  # the payload cut
    ][how]


@settings(max_examples=400, deadline=None)
@given(
    claims=_claims,
    good_start=st.booleans(),
    header=_headers,
    key=st.sampled_from([SECRET, "b" * 48]),
    how=st.integers(0, 6),
)
def test_the_quick_check_accepts_only_what_pyjwt_accepts(
    claims: dict[str, object], good_start: bool, header: dict[str, object] | None, key: str, how: int
) -> None:
    if good_start:  # a good token's claims, some of them changed
        claims = {"sub": "alice", "room": "shop1", "role": "viewer", "exp": NOW + 60, **claims}
    auth = Auth.hs256(SECRET)
    assert auth._quick is not None
    token = _tamper(_sign({"alg": "HS256", **(header or {})}, claims, key), how)
    quick = auth._quick.claims(token, time.time(), 5)
    try:
        slow = jwt.decode(
            token, SECRET, algorithms=["HS256"], options={"require": ["exp", "sub", "room", "role"]}, leeway=5
        )
    except jwt.InvalidTokenError:
        slow = None
    if quick is not None:
        assert slow == quick
    # and Auth's answer is PyJWT's, whichever path gave it
    try:
        verdict: object = auth.verify(token)
    except AuthError as exc:
        verdict = exc.code
    try:
        plain = Auth("HS256", SECRET, SECRET)
        plain._quick = None
        expected: object = plain.verify(token)
    except AuthError as exc:
        expected = exc.code
    assert verdict == expected


def test_a_token_live_mints_takes_the_quick_check_and_an_odd_one_still_verifies() -> None:
    auth = Auth.hs256(SECRET)
    assert auth._quick is not None
    minted = auth.mint("alice", "shop1", Role.VIEWER, 60)
    assert auth._quick.claims(minted, time.time(), 5) is not None
    # a claim live does not read: PyJWT's to judge, and it accepts it
    odd = jwt.encode({"sub": "bob", "room": "shop1", "role": "viewer", "exp": NOW + 60, "tier": 3}, SECRET)
    assert auth._quick.claims(odd, time.time(), 5) is None
    assert auth.verify(odd).user_id == "bob"


def test_no_quick_check_for_another_algorithm_or_a_key_pyjwt_refuses_as_a_secret() -> None:
    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert Auth("HS256", pem, None)._quick is None  # (the algorithm-confusion guard)
    assert Auth("RS256", pem, None)._quick is None
