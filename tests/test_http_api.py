"""The host API over a real socket, against the real Redis and a SQLite file."""

from __future__ import annotations

import aiohttp
import jwt
import pytest
from conftest import SECRET, bearer

from live.auth import Role
from live.server import Running, running
from live.settings import Settings


async def error_of(resp: aiohttp.ClientResponse) -> str:
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return str(body["error"]["code"])


async def test_health_ready_and_metrics(http: aiohttp.ClientSession) -> None:
    async with http.get("/healthz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
    async with http.get("/readyz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ready", "redis": "ok", "sqlite": "ok", "tasks": "ok"}
    async with http.get("/nope") as resp:
        assert resp.status == 404 and await error_of(resp) == "not_found"
    async with http.get("/metrics") as resp:
        text = await resp.text()
    for name in (
        "live_connections",
        "live_rooms_active",
        "live_frames_in_total",
        "live_frames_out_total",
        "live_redis_roundtrip_seconds_bucket",
        'live_errors_total{kind="not_found"} 1.0',
    ):
        assert name in text


async def test_rooms_and_products(http: aiohttp.ClientSession, host_token: str) -> None:
    auth = bearer(host_token)
    async with http.post(
        "/api/rooms", json={"title": "春季上新 Spring drop", "id": "spring"}, headers=auth
    ) as resp:
        assert resp.status == 201
        room = await resp.json()
    assert room["id"] == "spring" and room["title"] == "春季上新 Spring drop"
    assert room["host_id"] == "host1" and room["allow_anonymous"] is False
    async with http.post("/api/rooms", json={"title": "auto id"}, headers=auth) as resp:
        assert resp.status == 201
        auto = await resp.json()
    product = {
        "title": "绿茶 Green tea",
        "price_cents": 1999,
        "image_url": "https://img.example/t.png",
    }
    async with http.post("/api/rooms/spring/products", json=product, headers=auth) as resp:
        assert resp.status == 201
        created = await resp.json()
    assert created["price_cents"] == 1999 and created["room_id"] == "spring"
    async with http.get("/api/rooms", headers=auth) as resp:
        ids = [r["id"] for r in (await resp.json())["rooms"]]
    assert ids == ["spring", auto["id"]]
    async with http.get("/api/rooms/spring", headers=auth) as resp:
        detail = await resp.json()
    assert [p["title"] for p in detail["products"]] == ["绿茶 Green tea"]
    async with http.get("/api/rooms/spring/products", headers=auth) as resp:
        assert [p["id"] for p in (await resp.json())["products"]] == [created["id"]]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "bad_json"),
        (b"[1, 2]", 400, "bad_json"),
        (b"\xff\xfe", 400, "bad_json"),
        (b"{}", 400, "missing_field"),
        (b'{"title": 5}', 400, "invalid_field"),
        (b'{"title": "   "}', 400, "invalid_field"),
        (b'{"title": "ok", "id": "has space"}', 400, "invalid_field"),
        (b'{"title": "ok", "allow_anonymous": "yes"}', 400, "invalid_field"),
        (b'{"title": "' + b"x" * 70_000 + b'"}', 413, "body_too_large"),
    ],
)
async def test_bad_room_bodies(
    http: aiohttp.ClientSession, host_token: str, body: bytes, status: int, code: str
) -> None:
    async with http.post("/api/rooms", data=body, headers=bearer(host_token)) as resp:
        assert resp.status == status
        assert await error_of(resp) == code


@pytest.mark.parametrize(
    ("product", "code"),
    [
        ({"title": "t"}, "missing_field"),
        ({"title": "t", "price_cents": 12.5}, "invalid_field"),
        ({"title": "t", "price_cents": "100"}, "invalid_field"),
        ({"title": "t", "price_cents": True}, "invalid_field"),
        ({"title": "t", "price_cents": -1}, "invalid_field"),
        ({"title": "t", "price_cents": 100, "image_url": "javascript:alert(1)"}, "invalid_field"),
    ],
)
async def test_bad_products(
    http: aiohttp.ClientSession, host_token: str, product: dict[str, object], code: str
) -> None:
    auth = bearer(host_token)
    async with http.post("/api/rooms", json={"title": "r", "id": "r1"}, headers=auth) as resp:
        assert resp.status == 201
    async with http.post("/api/rooms/r1/products", json=product, headers=auth) as resp:
        assert resp.status == 400
        assert await error_of(resp) == code


async def test_unknown_room_and_duplicates(http: aiohttp.ClientSession, host_token: str) -> None:
    auth = bearer(host_token)
    async with http.get("/api/rooms/ghost", headers=auth) as resp:
        assert resp.status == 404 and await error_of(resp) == "room_not_found"
    good = {"title": "t", "price_cents": 1}
    async with http.post("/api/rooms/ghost/products", json=good, headers=auth) as resp:
        assert resp.status == 404 and await error_of(resp) == "room_not_found"
    async with http.post("/api/rooms", json={"title": "a", "id": "dup"}, headers=auth) as resp:
        assert resp.status == 201
    async with http.post("/api/rooms", json={"title": "b", "id": "dup"}, headers=auth) as resp:
        assert resp.status == 409 and await error_of(resp) == "room_exists"
    async with http.delete("/api/rooms", headers=auth) as resp:
        assert resp.status == 405 and await error_of(resp) == "method_not_allowed"


async def test_auth_failures(server: Running, http: aiohttp.ClientSession) -> None:
    auth = server.services.auth
    expired = jwt.encode({"sub": "h", "room": "*", "role": "host", "exp": 1}, SECRET)
    forged = jwt.encode({"sub": "h", "room": "*", "role": "host", "exp": 2**40}, "f" * 48)
    viewer = auth.mint("v", "*", Role.VIEWER, 60)
    other_host = auth.mint("h2", "mine", Role.HOST, 60)
    cases = [
        ({}, 401, "token_missing"),
        ({"Authorization": "Basic abc"}, 401, "token_invalid"),
        (bearer(forged), 401, "token_invalid"),
        (bearer(expired), 401, "token_expired"),
        (bearer(viewer), 403, "forbidden"),
    ]
    for headers, status, code in cases:
        async with http.post("/api/rooms", json={"title": "t"}, headers=headers) as resp:
            assert resp.status == status, code
            assert await error_of(resp) == code
    # a room-scoped host may create only its own room, and sees only it
    async with http.post(
        "/api/rooms", json={"title": "t", "id": "theirs"}, headers=bearer(other_host)
    ) as resp:
        assert resp.status == 403 and await error_of(resp) == "wrong_room"
    async with http.post("/api/rooms", json={"title": "t"}, headers=bearer(other_host)) as resp:
        assert resp.status == 201 and (await resp.json())["id"] == "mine"
    async with http.get(
        "/api/rooms/mine", headers=bearer(auth.mint("v", "elsewhere", Role.VIEWER, 60))
    ) as resp:
        assert resp.status == 403 and await error_of(resp) == "wrong_room"


async def test_redis_losing_its_data_is_healed_from_the_ledger(settings: Settings) -> None:
    """Rooms are restored into Redis from SQLite at start (e.g. after a Redis failover)."""
    async with running(settings) as srv:
        await srv.services.rooms.create("kept", host_id="h", room_id="kept")
        await srv.services.rooms.add_product("kept", "tea", 100, None)
        keys = [k async for k in srv.services.redis.scan_iter(match=f"{settings.key_prefix}:*")]
        await srv.services.redis.delete(*keys)
    async with running(settings) as srv:
        assert [r.id for r in await srv.services.rooms.all()] == ["kept"]
        assert [p.title for p in await srv.services.rooms.products("kept")] == ["tea"]
