"""Smaller siblings of the hardening work: tokens whose claims are not text, and passwords
kept out of the messages that show a Redis URL."""

from __future__ import annotations

import time

import jwt
import pytest

from live.auth import Auth, AuthError
from live.redis_client import redact_url

SECRET = "s" * 40


def signed(claims: dict[str, object]) -> str:
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + 60, "role": "viewer", **claims}, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "\ud800", "room": "shop"},  # a lone surrogate: cannot reach Redis or a screen
        {"sub": "alice", "room": "sh\udfffop"},
        {"sub": "x" * 257, "room": "shop"},
    ],
)
def test_a_signed_token_whose_claims_are_not_text_is_invalid(claims: dict[str, object]) -> None:
    with pytest.raises(AuthError) as refused:
        Auth.hs256(SECRET).verify(signed(claims))
    assert refused.value.code == "token_invalid"


def test_a_signed_token_with_ordinary_claims_is_valid() -> None:
    who = Auth.hs256(SECRET).verify(signed({"sub": "小明", "room": "shop"}))
    assert (who.user_id, who.room) == ("小明", "shop")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0?password=abc&db=1", "redis://127.0.0.1:6379/0?password=***&db=1"),
        ("unix:///tmp/r.sock?password=abc", "unix:///tmp/r.sock?password=***"),
        ("redis://user:abc@host:1/0", "redis://user:***@host:1/0"),
        ("unix:///tmp/r.sock", "unix:///tmp/r.sock"),
        ("redis://host:1/0", "redis://host:1/0"),
    ],
)
def test_a_redis_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
