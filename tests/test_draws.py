"""Lucky draws end to end: the host API over HTTP, entrants over WebSocket (enter_draw, and a
keyword comment), the refusals, the exclusions (banned, muted, address_limit, not_present), the
close on the priority lane and privately to the winners, a claim once (an order in the ledger),
the claim window's end, ``live draw verify`` on the result (ok, and tampered), and the
verification read any token of the room (or a guest) may make."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import bearer
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from test_gateway import token
from wsclient import MSGPACK, Client

from interact import keys
from interact.draw_verify import commitment_of, draw_winners
from live import cli
from live import draws as live_draws
from live.auth import Role
from live.server import Running, running
from live.settings import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, tools_tick_ms=50, draw_max_entries=50, draw_max_entries_per_ip=0)


@pytest.fixture
async def shop(server: Running, http: aiohttp.ClientSession, host_token: str) -> dict[str, str]:
    await server.services.rooms.create("shop", host_id="host1", room_id="shop", allow_anonymous=True)
    async with http.post(
        "/api/rooms/shop/products", json={"title": "福袋", "price_cents": 9900}, headers=bearer(host_token)
    ) as resp:
        assert resp.status == 201
        product = await resp.json()
    return {"room": "shop", "product": product["id"]}


async def open_draw(http: aiohttp.ClientSession, host_token: str, product: str, **body: Any) -> Any:
    fields = {"prize": {"product_id": product}, "winners": 2, "duration_s": 60, **body}
    async with http.post("/api/rooms/shop/draws", json=fields, headers=bearer(host_token)) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def get_draw(http: aiohttp.ClientSession, host_token: str, draw_id: str) -> Any:
    async with http.get(f"/api/rooms/shop/draws/{draw_id}", headers=bearer(host_token)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def close_draw(http: aiohttp.ClientSession, host_token: str, draw_id: str) -> Any:
    async with http.post(f"/api/rooms/shop/draws/{draw_id}/close", headers=bearer(host_token)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def ask(client: Client, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    await client.send(message)
    return await client.recv_until(
        lambda m: m.get("rid") == message["rid"] and m["type"] in ("ack", "error"), timeout
    )


def enter(rid: str, draw_id: str) -> dict[str, Any]:
    return {"type": "enter_draw", "rid": rid, "draw_id": draw_id}


def claim(rid: str, draw_id: str) -> dict[str, Any]:
    return {"type": "claim_prize", "rid": rid, "draw_id": draw_id}


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def verify(path: Path, capsys: pytest.CaptureFixture[str], *more: str) -> tuple[int, str]:
    code = cli.main(["draw", "verify", str(path), *more])
    return code, capsys.readouterr().out


async def test_a_draw_from_open_to_claim_and_verify(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ann = await Client.connect(http, "shop", token(server, "ann"), framing=MSGPACK)
    bob = await Client.connect(http, "shop", token(server, "bob"))
    cat = await Client.connect(http, "shop", token(server, "cat"))
    draw = await open_draw(http, host_token, shop["product"], winners=2, claim_s=60)
    did = draw["id"]
    assert draw["state"] == "open" and "seed" not in draw and draw["entrants"] == 0
    assert draw["prize"]["title"] == "福袋" and draw["rules"]["keyword"] is None
    opened = await ann.recv_type("draw_opened")
    assert opened["draw"]["commitment"] == draw["commitment"] and "seq" in opened  # the priority lane

    for n, client in enumerate((ann, bob, cat)):
        ack = await ask(client, enter(f"e{n}", did))
        assert ack["type"] == "ack" and (ack["draw_id"], ack["entered"]) == (did, True)
    again = await ask(ann, enter("e9", did))
    assert again["type"] == "ack" and again["entered"] is True  # not counted twice
    gauge = await cat.recv_until(lambda m: m["type"] == "draw_entries" and m["entrants"] == 3)
    assert gauge["draw_id"] == did
    for message, code in (
        (enter("x1", "d_nothing"), "draw_not_found"),
        (enter("x2", "../x"), "draw_not_found"),
        (claim("x3", did), "not_a_winner"),
    ):
        answer = await ask(ann, message)
        assert (answer["type"], answer["code"]) == ("error", code), answer
    assert (await get_draw(http, host_token, did))["entrants"] == 3

    # a reconnecting viewer sees the open draw in the welcome
    again_viewer = await Client.connect(http, "shop", token(server, "dan"))
    shown = again_viewer.welcome["room"]["draws"]
    assert [(d["id"], d["entrants"], "seed" in d) for d in shown] == [(did, 3, False)]

    closed = await close_draw(http, host_token, did)  # early
    assert closed["state"] == "closed" and commitment_of(closed["seed"]) == draw["commitment"]
    assert sorted(closed["entries"]) == ["ann", "bob", "cat"] and closed["excluded"] == {}
    assert closed["eligible"] == ["ann", "bob", "cat"]
    assert closed["winner_ids"] == draw_winners(closed["seed"], closed["eligible"], 2)
    event = await again_viewer.recv_type("draw_closed")
    assert "seq" in event and (event["seed"], event["winner_ids"], event["entrants"], event["eligible"]) == (
        closed["seed"],
        closed["winner_ids"],
        3,
        3,
    )
    assert event["excluded"] == {
        "banned": 0,
        "muted": 0,
        "address_limit": 0,
        "not_present": 0,
        "watch_time": 0,
    }
    clients = {"ann": ann, "bob": bob, "cat": cat}
    winner, other = closed["winner_ids"]
    (loser,) = set(clients) - {winner, other}
    won = await clients[winner].recv_type("draw_won")
    assert won["draw_id"] == did and won["prize"]["product_id"] == shop["product"]
    assert won["claim_by_ms"] == closed["claim_by_ms"]
    assert not [m for m in await clients[loser].collect(0.3) if m["type"] == "draw_won"]
    assert (await ask(clients[loser], claim("c0", did)))["code"] == "not_a_winner"
    assert (await ask(bob, enter("late", did)))["code"] == "draw_closed"

    got = await ask(clients[winner], claim("c1", did))
    assert got["type"] == "ack", got
    order = got["order"]
    assert (order["sale_id"], order["amount_cents"], order["quantity"]) == (did, 0, 1)
    assert (await ask(clients[winner], claim("c2", did)))["order"] == order  # once
    recorded = await server.services.ledger.order(order["order_id"])
    assert recorded is not None and recorded.user_id == winner and recorded.amount_cents == 0
    async with http.get(f"/api/orders/{order['order_id']}", headers=bearer(token(server, winner))) as resp:
        assert resp.status == 200
    read = await get_draw(http, host_token, did)
    assert read["claims"] == {winner: order["order_id"]}
    assert (await close_draw(http, host_token, did))["winner_ids"] == closed["winner_ids"]  # once
    assert not [m for m in await again_viewer.collect(0.3) if m["type"] == "draw_closed"]
    async with http.get("/api/rooms/shop/draws", headers=bearer(host_token)) as resp:
        assert [d["id"] for d in (await resp.json())["draws"]] == [did]

    # live draw verify: the draw as read, ok; tampered, a mismatch
    good = tmp_path / "draw.json"
    good.write_text(json.dumps(read, ensure_ascii=False), encoding="utf-8")
    code, out = verify(good, capsys, "--commitment", draw["commitment"])
    assert code == 0 and out.startswith(f"ok: draw {did}")
    for tamper in (
        {"seed": "00" * 32},
        {"winner_ids": list(reversed(read["winner_ids"]))},
        {"eligible": read["eligible"][:-1]},
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**read, **tamper}), encoding="utf-8")
        code, out = verify(bad, capsys)
        assert code == 1 and out.startswith("mismatch:"), out
    code, out = verify(good, capsys, "--commitment", "ab" * 32)
    assert code == 1 and "published at its open" in out
    url = f"{server.url}/api/rooms/shop/draws/{did}"
    # (in a thread: the server runs on this event loop)
    assert await asyncio.to_thread(cli.main, ["draw", "verify", url, "--token", host_token]) == 0
    assert await asyncio.to_thread(cli.main, ["draw", "verify", url]) == 2  # no token: HTTP 401
    assert cli.main(["draw", "verify", "http://example.com/x"]) == 2
    assert cli.main(["draw", "verify", str(tmp_path / "missing.json")]) == 2
    (tmp_path / "junk.json").write_text("{nope")
    assert cli.main(["draw", "verify", str(tmp_path / "junk.json")]) == 2
    (tmp_path / "list.json").write_text("[]")
    assert cli.main(["draw", "verify", str(tmp_path / "list.json")]) == 2
    open_one = tmp_path / "open.json"
    open_one.write_text(json.dumps(draw))
    assert verify(open_one, capsys)[0] == 1


async def test_keyword_entry_by_comment_and_the_refusals(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: dict[str, str]
) -> None:
    ann = await Client.connect(http, "shop", token(server, "ann"))
    guest = await Client.connect(http, "shop")
    keyword = await open_draw(http, host_token, shop["product"], keyword="Lucky 福", signed_in=True)
    kid = keyword["id"]
    assert keyword["rules"]["keyword"] == "Lucky 福" and keyword["rules"]["signed_in"] is True
    # an enter_draw on a keyword draw: refused
    assert (await ask(ann, enter("k1", kid)))["code"] == "keyword_required"
    comment = await ask(ann, {"type": "comment", "rid": "c1", "text": "I want it! lucky 福 please"})
    assert comment["type"] == "ack" and "seq" in comment  # the comment's own ack
    await ask(guest, {"type": "comment", "rid": "g1", "text": "LUCKY 福"})  # a guest: not entered
    await ask(ann, {"type": "comment", "rid": "c2", "text": "no keyword here"})

    async def entered() -> bool:
        return bool((await get_draw(http, host_token, kid))["entrants"] == 1)

    await wait_for(entered)
    await ask(ann, {"type": "comment", "rid": "c3", "text": "lucky 福 again"})  # not twice
    guarded = await open_draw(http, host_token, shop["product"], signed_in=True)
    assert (await ask(guest, enter("g2", guarded["id"])))["code"] == "sign_in_required"
    # draw_full: draw_max_entries = 50
    full = await open_draw(http, host_token, shop["product"])
    many = aiohttp.ClientSession(base_url=server.url, connector=aiohttp.TCPConnector(limit=0))
    users = [await Client.connect(many, "shop", token(server, f"u{n}")) for n in range(50)]
    for n, client in enumerate(users):
        assert (await ask(client, enter(f"f{n}", full["id"])))["type"] == "ack"
    assert (await ask(ann, enter("f99", full["id"])))["code"] == "draw_full"
    assert (await ask(users[0], enter("f0b", full["id"])))["type"] == "ack"  # entered: still an ack
    closed = await close_draw(http, host_token, kid)
    assert closed["entries"] == ["ann"] and closed["winner_ids"] == ["ann"]
    await asyncio.gather(*(c.close() for c in users))
    await many.close()

    # the host API's own refusals
    product = shop["product"]
    for body, status, code in (
        ({"prize": {"product_id": "p_none"}, "winners": 1, "duration_s": 5}, 404, "product_not_found"),
        ({"prize": {"coupon_batch_id": "b_none"}, "winners": 1, "duration_s": 5}, 404, "batch_not_found"),
        ({"prize": {}, "winners": 1, "duration_s": 5}, 400, "invalid_field"),
        ({"prize": "x", "winners": 1, "duration_s": 5}, 400, "invalid_field"),
        ({"winners": 1, "duration_s": 5}, 400, "missing_field"),
        ({"prize": {"product_id": product}, "winners": 0, "duration_s": 5}, 400, "invalid_field"),
        ({"prize": {"product_id": product}, "winners": 1001, "duration_s": 5}, 400, "invalid_field"),
        (
            {"prize": {"product_id": product}, "winners": 1, "duration_s": 5, "keyword": " "},
            400,
            "invalid_field",
        ),
        (
            {"prize": {"product_id": product}, "winners": 1, "duration_s": 5, "min_watch_s": 6},
            400,
            "invalid_field",
        ),
        ({"prize": {"product_id": product}, "winners": 1}, 400, "missing_field"),
    ):
        async with http.post("/api/rooms/shop/draws", json=body, headers=bearer(host_token)) as resp:
            assert resp.status == status and (await resp.json())["error"]["code"] == code, body
    async with http.post(
        "/api/rooms/shop/draws",
        json={"prize": {"product_id": product}, "winners": 1, "duration_s": 5},
        headers=bearer(token(server, "ann")),
    ) as resp:
        assert resp.status == 403
    async with http.get("/api/rooms/shop/draws/d_nothing", headers=bearer(host_token)) as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "draw_not_found"
    moderator = token(server, "mod", Role.MODERATOR)
    async with http.get(f"/api/rooms/shop/draws/{kid}", headers=bearer(moderator)) as resp:
        assert resp.status == 200


async def test_exclusions_at_the_close_and_the_claim_window(settings: Settings) -> None:
    limited = dataclasses.replace(settings, draw_max_entries_per_ip=2)  # every socket is 127.0.0.1
    async with running(limited) as server, aiohttp.ClientSession(base_url=server.url) as http:
        await server.services.rooms.create("shop", host_id="host1", room_id="shop")
        host_token = server.services.auth.mint("host1", "shop", Role.HOST, 600)
        async with http.post(
            "/api/rooms/shop/products", json={"title": "福袋", "price_cents": 1}, headers=bearer(host_token)
        ) as resp:
            product = (await resp.json())["id"]
        await _exclusions(server, http, host_token, product)


async def _exclusions(server: Running, http: aiohttp.ClientSession, host_token: str, product: str) -> None:
    people = ["ann", "bob", "cat", "dan", "eve", "fay"]
    clients = {u: await Client.connect(http, "shop", token(server, u)) for u in people}
    # (the host closes it once dan has been gone longer than presence's grace, however long the
    # entries take; a claim window far longer than the winner's claim right after the close takes)
    draw = await open_draw(
        http, host_token, product, winners=10, duration_s=600, present_at_close=True, claim_s=5
    )
    did = draw["id"]
    for n, user in enumerate(people):
        assert (await ask(clients[user], enter(f"e{n}", did)))["type"] == "ack"
    bus = server.services.hub.bus
    await bus.ban("shop", "eve")
    await bus.mute("shop", "fay", int(time.time() * 1000) + 60_000)
    await clients["dan"].close()  # gone before the close
    redis, last = server.services.redis, keys.ToolKeys(server.services.settings.key_prefix, "shop", did)

    async def dan_gone() -> bool:
        """The others seen since dan left, dan last seen longer ago than presence's grace."""
        if "dan" in server.services.hub.present_users("shop"):
            return False
        seen = [await redis.zscore(last.part("last"), u) for u in people]
        dan, others = seen[people.index("dan")], [t for u, t in zip(people, seen, strict=True) if u != "dan"]
        secs, micros = await redis.time()  # the shard's clock, as the close's
        now = secs * 1000 + micros // 1000
        return all(t is not None and (dan is None or t > dan) for t in others) and (
            dan is None or dan < now - live_draws.PRESENCE_GRACE_MS
        )

    await wait_for(dan_gone, timeout=30)
    watcher = clients["ann"]
    await close_draw(http, host_token, did)
    event = await watcher.recv_type("draw_closed", timeout=15)
    read = await get_draw(http, host_token, did)
    assert read["excluded"] == {"eve": "banned", "fay": "muted", "cat": "address_limit", "dan": "not_present"}
    assert read["eligible"] == ["ann", "bob"] and sorted(read["winner_ids"]) == ["ann", "bob"]
    assert event["excluded"] == {
        "banned": 1,
        "muted": 1,
        "address_limit": 1,
        "not_present": 1,
        "watch_time": 0,
    }
    assert event["eligible"] == 2 and event["entrants"] == 6
    winner = read["winner_ids"][0]
    assert (await ask(clients[winner], claim("c1", did)))["type"] == "ack"

    async def expired() -> bool:
        row = await server.services.store.tool(did)
        return row is not None and "unclaimed" in json.loads(row.result or "{}")

    await wait_for(expired, timeout=30)
    late = read["winner_ids"][1]
    assert (await ask(clients[late], claim("c2", did)))["code"] == "claim_expired"
    assert (await ask(clients[winner], claim("c3", did)))["type"] == "ack"  # claimed before: kept
    row = await server.services.store.tool(did)
    assert row is not None and row.state == "closed"
    result = json.loads(row.result or "{}")
    assert result["unclaimed"] == [late] and result["claims_open"] is False
    fresh = await Client.connect(http, "shop", token(server, "zed"))
    assert fresh.welcome["room"]["draws"] == []  # settled: no longer shown


async def test_watch_time_and_a_coupon_prize(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: dict[str, str]
) -> None:
    async with http.post(
        "/api/rooms/shop/sales",
        json={
            "product_id": shop["product"],
            "stock": 5,
            "price_cents": 9900,
            "per_user_limit": 1,
            "duration_s": 600,
        },
        headers=bearer(host_token),
    ) as resp:
        assert resp.status == 201, await resp.text()
        sale = await resp.json()
    async with http.post(
        f"/api/sales/{sale['id']}/coupons",
        json={"count": 5, "discount_cents": 500},
        headers=bearer(host_token),
    ) as resp:
        assert resp.status == 201, await resp.text()
        batch = await resp.json()
    ann = await Client.connect(http, "shop", token(server, "ann"))
    draw = await open_draw(
        http, host_token, shop["product"], prize={"coupon_batch_id": batch["batch_id"]}, winners=1,
        duration_s=600, min_watch_s=3,
    )  # fmt: skip
    assert draw["prize"] == {"coupon_batch_id": batch["batch_id"], "sale_id": sale["id"]}
    assert (await ask(ann, enter("e1", draw["id"])))["type"] == "ack"
    # Presence is sampled about once a second; the host closes the draw once ann's samples span
    # min_watch_s, as soon as bob (just come) has been seen: bob is seen, for a sample or two.
    redis, prefix = server.services.redis, server.services.settings.key_prefix
    seen = keys.ToolKeys(prefix, "shop", draw["id"])

    async def ann_watched() -> bool:
        first = await redis.zscore(seen.part("first"), "ann")
        last = await redis.zscore(seen.part("last"), "ann")
        return first is not None and last is not None and last - first >= 3000

    await wait_for(ann_watched, timeout=30)
    late = await Client.connect(http, "shop", token(server, "bob"))
    assert (await ask(late, enter("e2", draw["id"])))["type"] == "ack"

    async def bob_seen() -> bool:
        return await redis.zscore(seen.part("first"), "bob") is not None

    await wait_for(bob_seen, timeout=30)
    await close_draw(http, host_token, draw["id"])
    await ann.recv_type("draw_closed", timeout=15)
    read = await get_draw(http, host_token, draw["id"])
    assert read["excluded"] == {"bob": "watch_time"} and read["winner_ids"] == ["ann"]
    got = await ask(ann, claim("c1", draw["id"]))
    assert got["type"] == "ack", got
    assert got["coupon"]["discount_cents"] == 500 and got["order"]["coupon_id"] == got["coupon"]["coupon_id"]
    assert (await ask(ann, claim("c2", draw["id"])))["coupon"] == got["coupon"]


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    users=st.lists(
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=10), max_size=25
    ),
    winners=st.integers(1, 8),
)
async def test_verify_recomputes_what_the_server_drew(
    server: Running, users: list[str], winners: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """For any entry list (non-ASCII ids too) the server's winners are what ``live draw verify``
    recomputes."""
    draws = next(t for t in server.services.tools if t.welcome_key == "draws")
    box = draws.box  # type: ignore[attr-defined]
    spec = dataclasses.replace(_spec(winners), id=f"d_{time.monotonic_ns()}")
    await box.open(spec)
    for n, user in enumerate(users):
        await box.enter("shop", spec.id, user, f"10.0.0.{n % 4}", False, False, 0)
    await server.services.redis.hset(box.keys("shop", spec.id).tool, "closes_at", 0)
    step = await box.close("shop", spec.id, "{shop}:b", "{shop}:m", 0, 0)
    assert step.closed is not None
    read = {**(await box.get("shop", spec.id)).public(), **(await box.result("shop", spec.id))}
    path = tmp_path_factory.mktemp("v") / "draw.json"
    path.write_text(json.dumps(read, ensure_ascii=False), encoding="utf-8")
    assert cli.main(["draw", "verify", str(path)]) == 0
    assert read["winner_ids"] == step.closed.winner_ids
    assert len(read["winner_ids"]) == min(winners, len(set(users)))


def _spec(winners: int) -> Any:
    from interact.draws import DrawSpec, new_seed

    return DrawSpec(
        id="",
        room_id="shop",
        prize={"product_id": "p"},
        winners=winners,
        keyword=None,
        signed_in=False,
        present_at_close=False,
        min_watch_ms=0,
        claim_ms=1000,
        duration_ms=60_000,
        seed=new_seed(),
    )


async def test_a_restart_mid_draw_and_a_redis_that_lost_it(settings: Settings) -> None:
    async with running(settings) as first, aiohttp.ClientSession(base_url=first.url) as http:
        await first.services.rooms.create("shop", host_id="host1", room_id="shop")
        host_token = first.services.auth.mint("host1", "shop", Role.HOST, 600)
        async with http.post(
            "/api/rooms/shop/products", json={"title": "玉", "price_cents": 500}, headers=bearer(host_token)
        ) as resp:
            product = (await resp.json())["id"]
        # (done is closed by the host, so the entries need not fit before a close time; kept and
        # lost are opened last, their close time seconds beyond this process's stop)
        done = await open_draw(http, host_token, product, winners=1, duration_s=600, claim_s=600)
        ann = await Client.connect(http, "shop", token(first, "ann"))
        assert (await ask(ann, enter("e0", done["id"])))["type"] == "ack"
        await close_draw(http, host_token, done["id"])
        closed = await ann.recv_type("draw_closed", timeout=10)
        assert closed["draw_id"] == done["id"] and closed["winner_ids"] == ["ann"]
        kept = await open_draw(http, host_token, product, winners=1, duration_s=6)
        lost = await open_draw(http, host_token, product, winners=1, duration_s=6)
        for n, draw in enumerate((kept, lost), 1):
            assert (await ask(ann, enter(f"e{n}", draw["id"])))["type"] == "ack"
        await ann.close()
    # the Redis lost one draw (a failover, say) and everything about when each is due
    redis = first.services.redis
    await redis.delete(
        *[k async for k in redis.scan_iter(match=f"{settings.key_prefix}:tool:*{lost['id']}*")]
    )
    await redis.delete(f"{{{settings.key_prefix}:tools}}:due")
    async with running(settings) as second, aiohttp.ClientSession(base_url=second.url) as http:
        watcher = await Client.connect(http, "shop", token(second, "cat"))
        shown = {d["id"]: d for d in watcher.welcome["room"]["draws"]}
        assert set(shown) == {kept["id"], lost["id"], done["id"]}
        assert shown[lost["id"]]["commitment"] == lost["commitment"] and shown[lost["id"]]["entrants"] == 0
        assert shown[lost["id"]]["closes_at_ms"] == lost["closes_at_ms"]
        endings: dict[str, dict[str, Any]] = {}
        while len(endings) < 2:
            ended = await watcher.recv_type("draw_closed", timeout=30)
            assert ended["draw_id"] not in endings  # each closes once
            endings[ended["draw_id"]] = ended
        assert endings[kept["id"]]["winner_ids"] == ["ann"]
        assert (
            endings[lost["id"]]["winner_ids"] == []
            and commitment_of(endings[lost["id"]]["seed"]) == lost["commitment"]
        )
        assert not [m for m in await watcher.collect(0.5) if m["type"] == "draw_closed"]
        host_token = second.services.auth.mint("host1", "shop", Role.HOST, 600)
        read = await get_draw(http, host_token, done["id"])
        assert read["claims_open"] is True and read["winner_ids"] == ["ann"]


async def test_a_keyword_comment_on_another_process_enters_at_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A viewer on a process that did not open the keyword draw comments the keyword as soon as
    they hear ``draw_opened``: entered, although that process's periodic read of the open draws
    (made rare here) has not seen the draw yet."""
    monkeypatch.setattr(live_draws, "REFRESH_MS", 3_600_000)
    async with (
        running(dataclasses.replace(settings, node_name="draw-a")) as a,
        running(dataclasses.replace(settings, node_name="draw-b"), worker=True) as b,
    ):
        await a.services.rooms.create("shop", host_id="host1", room_id="shop")
        host_token = a.services.auth.mint("host1", "shop", Role.HOST, 600)
        async with (
            aiohttp.ClientSession(base_url=a.url) as on_a,
            aiohttp.ClientSession(base_url=b.url) as on_b,
        ):
            body = {"title": "福袋", "price_cents": 1}
            async with on_a.post("/api/rooms/shop/products", json=body, headers=bearer(host_token)) as resp:
                product = (await resp.json())["id"]
            ann = await Client.connect(on_b, "shop", token(a, "ann"))
            bob = await Client.connect(on_a, "shop", token(a, "bob"))
            draw = await open_draw(on_a, host_token, product, keyword="福")
            await ann.recv_type("draw_opened")
            for client, rid in ((ann, "a1"), (bob, "b1")):
                assert (await ask(client, {"type": "comment", "rid": rid, "text": "要福"}))["type"] == "ack"

            async def entered() -> bool:
                return bool((await get_draw(on_b, host_token, draw["id"]))["entrants"] == 2)

            await wait_for(entered, timeout=15)  # (its refresh: an hour away)
            closed = await close_draw(on_b, host_token, draw["id"])
            assert sorted(closed["entries"]) == ["ann", "bob"]


def gauges_of(frames: list[dict[str, Any]], draw_id: str) -> list[int]:
    """The draw_entries counts among frames (alone, or in a chat batch's gauges)."""
    out = []
    for m in frames:
        for g in [m, *(m.get("gauges", []) if m["type"] == "batch" else [])]:
            if g.get("type") == "draw_entries" and g.get("draw_id") == draw_id:
                out.append(int(g["entrants"]))
    return out


async def test_the_count_sent_is_the_count_now_and_is_sent_again_after_the_last_change(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process's entries (entered here straight through the script) since this one's
    last change: the count this process sends is read at its tick, and read and sent once more
    a moment after its last change, so a viewer is not left with an older count."""
    monkeypatch.setattr(live_draws, "SETTLE_MS", 5000)
    box = next(t for t in server.services.tools if t.welcome_key == "draws").box  # type: ignore[attr-defined]
    ann = await Client.connect(http, "shop", token(server, "ann"))
    draw = await open_draw(http, host_token, shop["product"])
    did = draw["id"]
    for n in range(3):  # "elsewhere", before this process's entry is sent
        await box.enter("shop", did, f"other{n}", "10.0.0.1", False, False, 0)
    assert (await ask(ann, enter("e1", did)))["type"] == "ack"
    frames = [await ann.recv_until(lambda m: bool(gauges_of([m], did)), timeout=15)]
    assert gauges_of(frames, did) == [4]
    # (elsewhere, after the tick's send and well before the send once more: SETTLE_MS made long)
    await box.enter("shop", did, "later", "10.0.0.1", False, False, 0)

    async def sent_again() -> bool:
        frames.extend(await ann.collect(0.2))
        return gauges_of(frames, did)[-1] == 5

    await wait_for(sent_again, timeout=30)
    assert gauges_of(frames, did) == [4, 5]  # once more, then no more
    assert not gauges_of(await ann.collect(1.5), did)


async def test_only_a_draw_with_a_presence_rule_is_told_who_is_present(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: dict[str, str]
) -> None:
    ann = await Client.connect(http, "shop", token(server, "ann"))
    plain = await open_draw(http, host_token, shop["product"], winners=1, duration_s=60)
    watched = await open_draw(http, host_token, shop["product"], winners=1, duration_s=60, min_watch_s=1)
    redis, prefix = server.services.redis, server.services.settings.key_prefix

    def seen(draw_id: str) -> Awaitable[int]:
        return redis.zcard(keys.ToolKeys(prefix, "shop", draw_id).part("last"))

    async def recorded() -> bool:
        return await seen(watched["id"]) == 1

    await wait_for(recorded)  # (a refresh came: it skipped the draw with no presence rule)
    assert await seen(plain["id"]) == 0
    await ann.close()


async def verification(
    http: aiohttp.ClientSession, room: str, draw_id: str, tok: str | None
) -> tuple[int, Any]:
    headers = bearer(tok) if tok is not None else {}
    async with http.get(f"/api/rooms/{room}/draws/{draw_id}/verification", headers=headers) as resp:
        return resp.status, await resp.json()


async def test_anyone_in_the_room_reads_a_closed_draws_verification(
    server: Running,
    http: aiohttp.ClientSession,
    host_token: str,
    shop: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``GET .../draws/{id}/verification``: any token of the room (and a guest where the room
    admits guests) reads a closed draw's seed, eligible list and winners, the exclusions only as
    counts; ``live draw verify`` checks it with a viewer's token."""
    await server.services.rooms.create("privy", host_id="host2", room_id="privy")
    people = ["ann", "bob", "cat", "eve"]
    clients = {u: await Client.connect(http, "shop", token(server, u)) for u in people}
    draw = await open_draw(http, host_token, shop["product"], winners=2)
    did = draw["id"]
    for n, user in enumerate(people):
        assert (await ask(clients[user], enter(f"e{n}", did)))["type"] == "ack"
    viewer = token(server, "zed")

    status, body = await verification(http, "shop", did, viewer)  # open: the seed is secret
    assert (status, body["error"]["code"]) == (409, "draw_open") and set(body) == {"error"}
    for room, draw_id, tok, want in (
        ("shop", "d_nothing", viewer, (404, "draw_not_found")),
        ("shop", "notadraw", viewer, (404, "draw_not_found")),
        ("shop", did, token(server, "zed", room="privy"), (403, "wrong_room")),
        ("privy", did, token(server, "zed", room="privy"), (404, "draw_not_found")),  # shop's draw
        ("privy", did, None, (401, "token_missing")),  # privy admits no guests
        ("nowhere", did, None, (404, "room_not_found")),
        ("shop", did, "junk", (401, "token_invalid")),
    ):
        status, body = await verification(http, room, draw_id, tok)
        assert (status, body["error"]["code"]) == want, (room, draw_id, body)

    await server.services.hub.bus.ban("shop", "eve")
    staff = await close_draw(http, host_token, did)
    assert staff["excluded"] == {"eve": "banned"}
    for tok in (viewer, token(server, "mod", Role.MODERATOR), host_token, None):  # None: a guest
        status, read = await verification(http, "shop", did, tok)
        assert status == 200, read
        assert read == {
            "draw_id": did,
            "room_id": "shop",
            "state": "closed",
            "commitment": draw["commitment"],
            "seed": staff["seed"],
            "winners": 2,
            "entrants": 4,
            "eligible": ["ann", "bob", "cat"],
            "winner_ids": staff["winner_ids"],
            "excluded_counts": {
                "banned": 1,
                "muted": 0,
                "address_limit": 0,
                "not_present": 0,
                "watch_time": 0,
            },
        }
    text = json.dumps(read)
    assert "eve" not in text and "127.0.0.1" not in text  # who was excluded, and addresses: staff's
    status, wrong = await verification(http, "shop", did, token(server, "zed", room="privy"))
    assert (status, wrong["error"]["code"]) == (403, "wrong_room")

    # live draw verify on the URL with a viewer's token (in a thread: the server runs on this loop)
    url = f"{server.url}/api/rooms/shop/draws/{did}/verification"
    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, ["draw", "verify", url, "--token", viewer]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: draw {did}:") and "3 eligible" in out
    assert await asyncio.to_thread(cli.main, ["draw", "verify", url, "--commitment", draw["commitment"]]) == 0
    good = tmp_path / "verification.json"
    good.write_text(json.dumps(read), encoding="utf-8")
    assert verify(good, capsys)[0] == 0
    for tamper in (
        {"seed": "00" * 32},
        {"winner_ids": list(reversed(read["winner_ids"]))},
        {"eligible": ["ann", "bob", "cat", "dan"]},
        {"excluded_counts": {**read["excluded_counts"], "banned": 0}},
        {"excluded_counts": {**read["excluded_counts"], "bribed": 1}},
    ):
        bad = tmp_path / "tampered.json"
        bad.write_text(json.dumps({**read, **tamper}), encoding="utf-8")
        code, out = verify(bad, capsys)
        assert code == 1 and out.startswith(f"mismatch: draw {did}:"), (tamper, out)

    # a draw whose Redis keys are gone is answered from its record, the same
    box = next(t for t in server.services.tools if t.welcome_key == "draws").box  # type: ignore[attr-defined]
    keys = box.keys("shop", did)
    await server.services.redis.delete(
        keys.tool, *(keys.part(p) for p in ("order", "ip", "eligible", "excluded", "winners"))
    )
    assert await verification(http, "shop", did, viewer) == (200, read)


async def test_an_early_close_counts_the_viewers_here_present(
    server: Running, http: aiohttp.ClientSession, host_token: str, shop: dict[str, str]
) -> None:
    """Closed by the host at once, before any periodic presence sample: the closing process
    records its own users first, so a viewer who is here is not excluded as not present."""
    ann = await Client.connect(http, "shop", token(server, "ann"))
    draw = await open_draw(
        http, host_token, shop["product"], winners=1, duration_s=600, present_at_close=True
    )
    assert (await ask(ann, enter("e1", draw["id"])))["type"] == "ack"
    closed = await close_draw(http, host_token, draw["id"])
    assert (closed["excluded"], closed["eligible"], closed["winner_ids"]) == ({}, ["ann"], ["ann"])
    await ann.close()
