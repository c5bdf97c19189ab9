"""The OpenAPI 3.1 description of the HTTP API (live/openapi.json): current with its generator
(live/openapi.py), valid, naming exactly the routes the app registers, served at
/api/openapi.json, and telling the truth: real answers of a running server, successes and
refusals, of every /api operation validate against the schemas it documents."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import bearer
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from test_gateway import token
from wsclient import Client

from live import openapi
from live.app import build_app
from live.auth import ANY_ROOM, Role
from live.server import Running

DOCS = Path(__file__).parent.parent / "docs"
DOC: dict[str, Any] = json.loads(openapi.PATH.read_text(encoding="utf-8"))
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def test_the_committed_document_is_current() -> None:
    assert openapi.PATH.read_text(encoding="utf-8") == openapi.render(), (
        "live/openapi.json is not current: run python -m live.openapi"
    )
    assert openapi.main(["--check"]) == 0


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOC)
    assert DOC["openapi"].startswith("3.1")
    # every operation has an id (a client generator names its methods by them), all different
    ids = [o["operationId"] for p in DOC["paths"].values() for m, o in p.items() if m in METHODS]
    assert len(ids) == len(set(ids)) and all(ids)


def test_every_error_code_in_the_document_is_in_the_prose_docs() -> None:
    prose = (DOCS / "http-api.md").read_text(encoding="utf-8") + (DOCS / "protocol.md").read_text(
        encoding="utf-8"
    )
    error_codes = {
        code
        for item in DOC["paths"].values()
        for method, operation in item.items()
        if method in METHODS
        for response in operation["responses"].values()
        if "content" in response
        and "allOf" in response["content"].get("application/json", {}).get("schema", {})
        for code in response["content"]["application/json"]["schema"]["properties"]["error"]["properties"][
            "code"
        ]["enum"]
    }
    assert len(error_codes) > 20
    assert {c for c in error_codes if f"`{c}`" not in prose} == set()


def documented() -> set[tuple[str, str]]:
    """(route as the app registers it, METHOD) for every documented operation."""
    out = set()
    for path, item in DOC["paths"].items():
        route = item.get("x-live-route", path)
        out |= {(route, m.upper()) for m in item if m in METHODS}
    return out


async def test_every_route_is_documented_and_every_documented_route_exists(server: Running) -> None:
    app = build_app(server.services)
    registered = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds one to each GET (the document says so)
            continue
        canonical = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical if route.resource else "")
        if canonical == "/static":
            canonical = "/static/"
        registered.add((canonical, route.method))
    missing, extra = sorted(registered - documented()), sorted(documented() - registered)
    assert not missing and not extra, f"undocumented: {missing}; documented, not registered: {extra}"
    # a path's template parameters are the parameters it declares
    for path, item in DOC["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        for method in (m for m in item if m in METHODS):
            declared |= {p["name"] for p in item[method].get("parameters", []) if p["in"] == "path"}
        assert names == declared, path


# -- real answers against the schemas -----------------------------------------------------------


class Checker:
    """Calls the server and validates each answer against the documented response of its status
    (which must be documented explicitly), recording which operations it saw succeed."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.succeeded: set[tuple[str, str]] = set()

    async def __call__(
        self,
        method: str,
        template: str,
        status: int,
        token: str | None = None,
        body: Any = None,
        raw: bytes | None = None,
        query: dict[str, str] | None = None,
        error_code: str | None = None,
        **params: str,
    ) -> Any:
        path = template.format(**params)
        headers = bearer(token) if token else {}
        data = raw if raw is not None else None
        async with self.http.request(
            method, path, json=body, data=data, headers=headers, params=query
        ) as resp:
            text = await resp.text()
            assert resp.status == status, (method, path, resp.status, text)
            operation = DOC["paths"][template][method.lower()]
            responses = operation["responses"]
            assert str(status) in responses, f"{method} {template}: {status} is not documented"
            documented = responses[str(status)]
            if "$ref" in documented:  # a shared one: #/components/responses/<name>
                documented = DOC["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
            schema = documented["content"]["application/json"]["schema"]
            assert resp.content_type == "application/json"
            answer = json.loads(text)
        errors = sorted(validator(schema).iter_errors(answer), key=str)
        assert not errors, f"{method} {template} {status}: " + "; ".join(
            f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]
        )
        if error_code is not None:
            assert answer["error"]["code"] == error_code, answer
        if body is not None and "requestBody" in operation:
            # the request schema says what the code enforces: what it took is valid, what it
            # refused as a bad field is not
            valid = validator(operation["requestBody"]["content"]["application/json"]["schema"]).is_valid(
                body
            )
            if status < 300:
                assert valid, f"{method} {template}: the server took a body its schema refuses: {body}"
            elif error_code in ("missing_field", "invalid_field"):
                assert not valid, f"{method} {template}: the server refused a body its schema takes: {body}"
        if status < 300:
            self.succeeded.add((template, method.upper()))
        return answer


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of ``schema`` whose ``#/components/...`` references resolve in the document."""
    return Draft202012Validator({**schema, "components": DOC["components"]})


async def ws_ask(client: Client, message: dict[str, Any]) -> dict[str, Any]:
    await client.send(message)
    return await client.recv_until(lambda m: m.get("rid") == message["rid"] and m["type"] in ("ack", "error"))


async def test_real_answers_match_their_schemas(server: Running, http: aiohttp.ClientSession) -> None:
    check = Checker(http)
    host = server.services.auth.mint("host1", ANY_ROOM, Role.HOST, 600)
    mod = token(server, "mo", Role.MODERATOR)
    ann, bob = token(server, "ann"), token(server, "bob")

    await check("GET", "/healthz", 200)
    await check("GET", "/readyz", 200)

    # rooms and products, and the usual refusals
    await check("POST", "/api/rooms", 401, body={"title": "x"}, error_code="token_missing")
    await check("POST", "/api/rooms", 401, "not-a-jwt", body={"title": "x"}, error_code="token_invalid")
    await check("POST", "/api/rooms", 403, ann, body={"title": "x"}, error_code="forbidden")
    await check("POST", "/api/rooms", 400, host, raw=b"{not json", error_code="bad_json")
    await check("POST", "/api/rooms", 400, host, body={"id": "shop"}, error_code="missing_field")
    await check("POST", "/api/rooms", 400, host, body={"title": "x", "id": "a b"}, error_code="invalid_field")
    room = await check("POST", "/api/rooms", 201, host, body={"id": "shop", "title": "春季上新"})
    assert room["id"] == "shop"
    await check(
        "POST", "/api/rooms", 409, host, body={"id": "shop", "title": "again"}, error_code="room_exists"
    )
    await check("GET", "/api/rooms", 200, host)
    await check("GET", "/api/rooms", 200, mod, query={"limit": "1"})
    await check("GET", "/api/rooms", 400, host, query={"limit": "0"}, error_code="invalid_field")
    await check("GET", "/api/rooms/{room_id}", 404, host, room_id="nowhere", error_code="room_not_found")
    await check("GET", "/api/rooms/{room_id}", 403, token(server, "x", room="other"), room_id="shop")
    product = await check(
        "POST",
        "/api/rooms/{room_id}/products",
        201,
        host,
        body={"title": "茶叶", "price_cents": 1500, "image_url": "https://example.com/t.png"},
        room_id="shop",
    )
    bare = await check(
        "POST",
        "/api/rooms/{room_id}/products",
        201,
        host,
        body={"title": "cup", "price_cents": 0},
        room_id="shop",
    )
    await check(
        "POST",
        "/api/rooms/{room_id}/products",
        400,
        host,
        body={"title": "x", "price_cents": 12.5},
        room_id="shop",
        error_code="invalid_field",
    )
    await check("GET", "/api/rooms/{room_id}", 200, ann, room_id="shop")
    await check("GET", "/api/rooms/{room_id}/products", 200, ann, room_id="shop")

    # a flash sale with group buying, a purchase, a team, coupons
    sale = await check(
        "POST",
        "/api/rooms/{room_id}/sales",
        201,
        host,
        body={
            "product_id": product["id"],
            "stock": 5,
            "per_user_limit": 2,
            "group": {"size": 2, "price_cents": 1000, "team_s": 60},
        },
        room_id="shop",
    )
    await check(
        "POST",
        "/api/rooms/{room_id}/sales",
        404,
        host,
        body={"product_id": "p_nothing", "stock": 5},
        room_id="shop",
        error_code="product_not_found",
    )
    sid = sale["id"]
    buyer = await Client.connect(http, "shop", ann)
    friend = await Client.connect(http, "shop", bob)
    held = await ws_ask(buyer, {"type": "reserve", "rid": "r1", "sale_id": sid, "quantity": 1})
    done = await ws_ask(buyer, {"type": "confirm", "rid": "c1", "hold_id": held["hold_id"]})
    order_id = done["order"]["order_id"]
    team = await ws_ask(buyer, {"type": "open_team", "rid": "t1", "sale_id": sid})
    assert team["type"] == "ack", team
    await check("GET", "/api/sales/{sale_id}/teams/{code}", 200, mod, sale_id=sid, code=team["code"])
    await check(
        "GET",
        "/api/sales/{sale_id}/teams/{code}",
        404,
        host,
        sale_id=sid,
        code="nope",
        error_code="team_not_found",
    )
    batch = await check(
        "POST",
        "/api/sales/{sale_id}/coupons",
        201,
        host,
        body={"count": 3, "discount_cents": 100},
        sale_id=sid,
    )
    await check(
        "GET", "/api/sales/{sale_id}/coupons/{batch_id}", 200, mod, sale_id=sid, batch_id=batch["batch_id"]
    )
    await check(
        "GET",
        "/api/sales/{sale_id}/coupons/{batch_id}",
        404,
        host,
        sale_id=sid,
        batch_id="c_x",
        error_code="batch_not_found",
    )
    for _ in range(50):  # the ledger may record it a moment after the ack
        async with http.get(f"/api/orders/{order_id}", headers=bearer(ann)) as resp:
            if resp.status == 200:
                break
        await asyncio.sleep(0.1)
    await check("GET", "/api/orders/{order_id}", 200, ann, order_id=order_id)
    await check("GET", "/api/orders/{order_id}", 200, host, order_id=order_id)
    await check("GET", "/api/orders/{order_id}", 403, bob, order_id=order_id, error_code="forbidden")
    await check(
        "GET", "/api/orders/{order_id}", 404, host, order_id="h_nothing", error_code="order_not_found"
    )
    page = await check("GET", "/api/sales/{sale_id}/orders", 200, mod, sale_id=sid)
    assert [o["order_id"] for o in page["orders"]] == [order_id]
    await check("GET", "/api/sales/{sale_id}/orders", 200, host, sale_id=sid, query={"after": page["cursor"]})
    await check("GET", "/api/sales/{sale_id}/orders", 400, host, sale_id=sid, query={"after": "-1"})
    await check("POST", "/api/sales/{sale_id}/stock", 200, host, body={"units": 5}, sale_id=sid)
    await check("POST", "/api/sales/{sale_id}/stock", 400, host, body={"units": 0}, sale_id=sid)
    await check("GET", "/api/sales/{sale_id}", 200, mod, sale_id=sid)
    await check("GET", "/api/sales/{sale_id}", 404, host, sale_id="s_nothing", error_code="unknown_sale")
    await check("GET", "/api/rooms/{room_id}/sales", 200, host, room_id="shop")
    await check("POST", "/api/sales/{sale_id}/stop", 403, mod, sale_id=sid, error_code="forbidden")
    await check("POST", "/api/sales/{sale_id}/stop", 200, host, sale_id=sid)

    # an auction with a bid
    auction = await check(
        "POST",
        "/api/rooms/{room_id}/auctions",
        201,
        host,
        body={
            "product_id": bare["id"],
            "start_cents": 100,
            "increment_cents": 10,
            "duration_s": 60,
            "reserve_cents": 500,
        },
        room_id="shop",
    )
    await check(
        "POST",
        "/api/rooms/{room_id}/auctions",
        400,
        host,
        body={"product_id": bare["id"], "start_cents": 0, "increment_cents": 10, "duration_s": 60},
        room_id="shop",
        error_code="invalid_field",
    )
    aid = auction["id"]
    bid = await ws_ask(friend, {"type": "bid", "rid": "b1", "auction_id": aid, "amount_cents": 100})
    assert bid["type"] == "ack", bid
    await check("GET", "/api/rooms/{room_id}/auctions", 200, mod, room_id="shop")
    await check(
        "GET", "/api/rooms/{room_id}/auctions/{auction_id}", 200, host, room_id="shop", auction_id=aid
    )
    bids = await check(
        "GET", "/api/rooms/{room_id}/auctions/{auction_id}/bids", 200, host, room_id="shop", auction_id=aid
    )
    assert [b["user_id"] for b in bids["bids"]] == ["bob"]
    await check(
        "GET",
        "/api/rooms/{room_id}/auctions/{auction_id}",
        404,
        host,
        room_id="shop",
        auction_id="a_nothing",
        error_code="auction_not_found",
    )

    # a lucky draw, entered, closed, verified; a coupon prize draw left open
    draw = await check(
        "POST",
        "/api/rooms/{room_id}/draws",
        201,
        mod,
        body={"prize": {"product_id": product["id"]}, "winners": 1, "duration_s": 60},
        room_id="shop",
    )
    other = await check(
        "POST",
        "/api/rooms/{room_id}/draws",
        201,
        host,
        body={
            "prize": {"coupon_batch_id": batch["batch_id"]},
            "winners": 2,
            "duration_s": 60,
            "keyword": "抽奖",
        },
        room_id="shop",
    )
    await check(
        "POST",
        "/api/rooms/{room_id}/draws",
        400,
        host,
        body={"prize": {}, "winners": 1, "duration_s": 60},
        room_id="shop",
        error_code="invalid_field",
    )
    did = draw["id"]
    entered = await ws_ask(buyer, {"type": "enter_draw", "rid": "e1", "draw_id": did})
    assert entered["type"] == "ack", entered
    await check("GET", "/api/rooms/{room_id}/draws/{draw_id}", 200, host, room_id="shop", draw_id=did)
    await check(
        "GET",
        "/api/rooms/{room_id}/draws/{draw_id}/verification",
        409,
        ann,
        room_id="shop",
        draw_id=did,
        error_code="draw_open",
    )
    closed = await check(
        "POST", "/api/rooms/{room_id}/draws/{draw_id}/close", 200, host, room_id="shop", draw_id=did
    )
    assert closed["state"] == "closed" and closed["winner_ids"] == ["ann"]
    await check("GET", "/api/rooms/{room_id}/draws/{draw_id}", 200, mod, room_id="shop", draw_id=did)
    await check(
        "GET", "/api/rooms/{room_id}/draws/{draw_id}/verification", 200, bob, room_id="shop", draw_id=did
    )
    await check(
        "GET", "/api/rooms/{room_id}/draws/{draw_id}/verification", 401, None, room_id="shop", draw_id=did
    )
    await check("GET", "/api/rooms/{room_id}/draws", 200, host, room_id="shop")
    await check(
        "GET",
        "/api/rooms/{room_id}/draws/{draw_id}",
        404,
        host,
        room_id="shop",
        draw_id="d_x",
        error_code="draw_not_found",
    )
    assert other["prize"]["coupon_batch_id"] == batch["batch_id"]

    # a poll, closed
    poll = await check(
        "POST",
        "/api/rooms/{room_id}/polls",
        201,
        host,
        body={"question": "哪个颜色?", "options": ["红", "蓝"], "duration_s": 60},
        room_id="shop",
    )
    await check(
        "POST",
        "/api/rooms/{room_id}/polls",
        400,
        host,
        body={"question": "one option?", "options": ["only"], "duration_s": 60},
        room_id="shop",
        error_code="invalid_field",
    )
    pid = poll["id"]
    await check("GET", "/api/rooms/{room_id}/polls/{poll_id}", 200, mod, room_id="shop", poll_id=pid)
    await check("GET", "/api/rooms/{room_id}/polls", 200, host, room_id="shop")
    await check("POST", "/api/rooms/{room_id}/polls/{poll_id}/close", 200, host, room_id="shop", poll_id=pid)
    await check(
        "POST",
        "/api/rooms/{room_id}/polls/{poll_id}/close",
        409,
        host,
        room_id="shop",
        poll_id=pid,
        error_code="poll_closed",
    )
    await check(
        "GET",
        "/api/rooms/{room_id}/polls/{poll_id}",
        404,
        host,
        room_id="shop",
        poll_id="p_x",
        error_code="poll_not_found",
    )

    # Q&A: two questions asked over the WebSocket, every staff action over HTTP
    first = (await ws_ask(buyer, {"type": "ask", "rid": "q1", "text": "能包邮吗?"}))["question"]["id"]
    second = (await ws_ask(friend, {"type": "ask", "rid": "q2", "text": "尺码偏大吗?"}))["question"]["id"]
    route = "/api/rooms/{room_id}/questions/{question_id}/"
    await check("GET", "/api/rooms/{room_id}/questions", 200, mod, room_id="shop")
    await check("POST", route + "pin", 200, host, room_id="shop", question_id=first)
    pinned = await check(
        "GET", "/api/rooms/{room_id}/questions", 200, host, room_id="shop", query={"limit": "1"}
    )
    assert pinned["pinned"]["id"] == first
    await check("POST", route + "unpin", 200, host, room_id="shop", question_id=first)
    await check("POST", route + "answer", 200, mod, room_id="shop", question_id=first)
    await check(
        "POST", route + "dismiss", 409, host, room_id="shop", question_id=first, error_code="question_closed"
    )
    await check("POST", route + "dismiss", 200, host, room_id="shop", question_id=second)
    await check(
        "POST", route + "pin", 404, host, room_id="shop", question_id="q_x", error_code="question_not_found"
    )
    await check(
        "POST", route + "answer", 403, ann, room_id="shop", question_id=second, error_code="forbidden"
    )
    await buyer.close()
    await friend.close()

    # every /api operation was seen to succeed
    api = {(p, m) for p, m in documented() if p.startswith("/api/") and p != openapi.ROUTE}
    assert api - check.succeeded == set()


async def test_the_server_serves_the_document(http: aiohttp.ClientSession) -> None:
    async with http.get(openapi.ROUTE) as resp:  # no token
        assert resp.status == 200
        assert resp.content_type == "application/json" and resp.charset == "utf-8"
        assert await resp.json() == DOC
        assert resp.headers["Cache-Control"] == f"public, max-age={openapi.MAX_AGE_S}"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        etag = resp.headers["ETag"]
    async with http.get(openapi.ROUTE, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304 and resp.headers["ETag"] == etag and await resp.read() == b""
    async with http.head(openapi.ROUTE) as resp:
        assert resp.status == 200
    async with http.post(openapi.ROUTE) as resp:
        assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"
    async with http.get("/metrics") as resp:  # the one non-JSON answer of the API
        assert (
            resp.status == 200
            and resp.content_type in DOC["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
        )


@pytest.mark.parametrize("path", ["/console", "/r/shop"])
async def test_the_pages_are_html_as_documented(http: aiohttp.ClientSession, path: str) -> None:
    template = "/r/{room_id}" if path.startswith("/r/") else path
    async with http.get(path) as resp:
        assert resp.status == 200
        assert resp.content_type in DOC["paths"][template]["get"]["responses"]["200"]["content"]
