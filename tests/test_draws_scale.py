"""A lucky draw at scale, across two `live serve` processes on one Valkey and one PostgreSQL
store of record (tests/nodes.py): thousands of entrants, half on each process, entering a keyword
draw by comment (some twice, some also trying ``enter_draw``, which a keyword draw refuses) and
a second draw by ``enter_draw`` (some twice). Once every entry is acknowledged and counted, each
draw is closed early through the process that did not open it, and: exactly min(N, eligible)
winners, each once; the entries are the acknowledged entrants, each once, no one else; the
winners are interact.draw_verify's recomputation from the revealed seed, whose SHA-256 is the
commitment published at the open; every viewer on both processes heard one ``draw_closed``
per draw, with the same winners and seed; each winner got ``draw_won`` on their process."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nodes import Api, LiveNodes, Viewer
from polling import until

from interact.draw_verify import commitment_of, draw_winners
from live import cli

pytestmark = pytest.mark.timeout(240)

#: Entrants (half on each process) and what each does, by ``n % len(PLAN)``.
USERS = 2400
PLAN = (
    "comment",  # the keyword, once
    "comment_twice",  # the keyword, in two comments
    "comment_and_enter",  # the keyword, then enter_draw on the keyword draw (keyword_required)
    "enter",  # enter_draw on the open draw
    "enter_twice",  # the same enter_draw twice (an ack each, one entry)
    "both",  # the keyword, and enter_draw on the open draw
    "chatter",  # a comment without the keyword: enters nothing
    "lurker",  # watches only
)
KEYWORD = "福袋GO"
KEYWORD_WINNERS, OPEN_WINNERS = 25, 10
#: Long enough never to close by the clock: both draws are closed early once every entry is in.
DURATION_S = 3600
#: The whole burst of connections at once would pass a process's pending-handshake cap per
#: client address (every socket here is 127.0.0.1): at most this many handshakes at a time.
CONNECTING = 100
#: Chat batches are most of what a viewer receives: only the frames a check reads are parsed.
WANTED = ('"rid"', '"draw_')


def wanted(text: str) -> bool:
    return any(marker in text for marker in WANTED)


@pytest.fixture
async def group(tmp_path: Path, redis_url: str, database_url: str) -> AsyncIterator[LiveNodes]:
    # every client is 127.0.0.1: no per-address entry limit (as live-loadtest --spawn runs)
    group = LiveNodes(
        tmp_path / "nodes",
        redis_url,
        f"t{uuid.uuid4().hex[:10]}",
        database_url,
        settings={"draw_max_entries_per_ip": 0, "tools_tick_ms": 50},
    )
    try:
        await group.start(2)
        yield group
    finally:
        group.stop_all()


def closes_of(viewer: Viewer, draw_id: str) -> list[dict[str, Any]]:
    return [m for m in viewer.of_type("draw_closed") if m["draw_id"] == draw_id]


def entry_counts(viewer: Viewer, draw_id: str) -> list[int]:
    """The ``draw_entries`` gauges the viewer got (alone, or in a chat batch's gauges)."""
    out = []
    for m in viewer.messages:
        for g in [m, *(m.get("gauges", []) if m["type"] == "batch" else [])]:
            if g.get("type") == "draw_entries" and g.get("draw_id") == draw_id:
                out.append(int(g["entrants"]))
    return out


async def test_thousands_of_entrants_on_two_processes_draw_exactly_n_verifiable_winners(
    group: LiveNodes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = group.nodes
    auth = group
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        on_first = Api(http, first.url, auth.host_token())
        on_second = Api(http, second.url, auth.host_token())
        await on_first.call("POST", "/api/rooms", {"id": "shop", "title": "Shop"}, status=201)
        product = await on_first.call(
            "POST", "/api/rooms/shop/products", {"title": "福袋", "price_cents": 9900}, status=201
        )

        def viewer(user: str, keep: bool = True) -> Viewer:
            return Viewer(http, "shop", auth.viewer_token(user, "shop"), user, keep=wanted if keep else None)

        watchers = {first.name: viewer("watch-a"), second.name: viewer("watch-b")}
        await watchers[first.name].connect(first)
        await watchers[second.name].connect(second)
        users = [f"u{n:04d}" for n in range(USERS)]
        where = {u: (first, second)[n % 2] for n, u in enumerate(users)}
        crowd = {u: viewer(u) for u in users}
        gate = asyncio.Semaphore(CONNECTING)

        async def join(user: str) -> None:
            async with gate:
                await crowd[user].connect(where[user])

        await asyncio.gather(*(join(u) for u in users))

        async def open_draw(api: Api, **body: Any) -> dict[str, Any]:
            fields = {"prize": {"product_id": product["id"]}, "duration_s": DURATION_S, **body}
            opened: dict[str, Any] = await api.call("POST", "/api/rooms/shop/draws", fields, status=201)
            return opened

        keyword = await open_draw(on_first, winners=KEYWORD_WINNERS, keyword=KEYWORD)
        plain = await open_draw(on_second, winners=OPEN_WINNERS)
        kid, pid = keyword["id"], plain["id"]
        for w in watchers.values():
            await until(lambda w=w: {m["draw"]["id"] for m in w.of_type("draw_opened")} == {kid, pid}, 30)
            heard = {m["draw"]["id"]: m["draw"]["commitment"] for m in w.of_type("draw_opened")}
            assert heard == {kid: keyword["commitment"], pid: plain["commitment"]}

        # The crowd, as soon as both processes' viewers heard of both draws (the keyword draw's
        # comments on the process that did not open it count from then on too): every command
        # sent at once, each answered (ack or error) before the close.
        sent: dict[str, list[tuple[str, str]]] = {u: [] for u in users}  # user -> [(rid, expect)]
        keyword_entrants: set[str] = set()
        plain_entrants: set[str] = set()

        async def act(n: int, user: str) -> None:
            me, what = crowd[user], PLAN[n % len(PLAN)]

            async def send(kind: str, expect: str, **fields: Any) -> None:
                rid = f"{user}.{len(sent[user])}"
                sent[user].append((rid, expect))
                await me.send({"type": kind, "rid": rid, **fields})

            if what in ("comment", "comment_twice", "comment_and_enter", "both"):
                await send("comment", "ack", text=f"我要 {KEYWORD.lower()}!")  # any case
                keyword_entrants.add(user)
            if what == "comment_twice":
                await send("comment", "ack", text=f"{KEYWORD} again")
            if what == "comment_and_enter":
                await send("enter_draw", "keyword_required", draw_id=kid)
            if what in ("enter", "enter_twice", "both"):
                await send("enter_draw", "ack", draw_id=pid)
                plain_entrants.add(user)
            if what == "enter_twice":
                await send("enter_draw", "ack", draw_id=pid)
            if what == "chatter":
                await send("comment", "ack", text="好看")

        await asyncio.gather(*(act(n, u) for n, u in enumerate(users)))

        def answered() -> bool:
            return all(crowd[u].answer(rid) is not None for u in users for rid, _ in sent[u])

        await until(answered, 90, every_s=0.2)
        for user in users:
            for rid, expect in sent[user]:
                reply = crowd[user].answer(rid)
                assert reply is not None
                got = reply["type"] if reply["type"] == "ack" else reply["code"]
                assert got == expect, (user, reply)

        # Comments enter their authors at their process's next tick: closed once both counts
        # are everyone's.
        async def all_counted() -> bool:
            k = await on_first.call("GET", f"/api/rooms/shop/draws/{kid}")
            p = await on_first.call("GET", f"/api/rooms/shop/draws/{pid}")
            assert k["entrants"] <= len(keyword_entrants) and p["entrants"] <= len(plain_entrants)
            return bool(k["entrants"] == len(keyword_entrants) and p["entrants"] == len(plain_entrants))

        await until(all_counted, 60, every_s=0.2)

        # the live count a viewer on either process is left with is everyone's, whichever
        # process sent the last one
        def final_counts() -> bool:
            return all(
                (entry_counts(w, kid) or [0])[-1] == len(keyword_entrants)
                and (entry_counts(w, pid) or [0])[-1] == len(plain_entrants)
                for w in watchers.values()
            )

        await until(final_counts, 30, every_s=0.2)

        # each closed early by the process that did not open it; a second close is the same
        closed = {
            kid: await on_second.call("POST", f"/api/rooms/shop/draws/{kid}/close"),
            pid: await on_first.call("POST", f"/api/rooms/shop/draws/{pid}/close"),
        }
        again = await on_first.call("POST", f"/api/rooms/shop/draws/{kid}/close")
        assert (again["seed"], again["winner_ids"]) == (closed[kid]["seed"], closed[kid]["winner_ids"])

        everyone = [*crowd.values(), *watchers.values()]
        for draw, entrants, winners in (
            (keyword, keyword_entrants, KEYWORD_WINNERS),
            (plain, plain_entrants, OPEN_WINNERS),
        ):
            result = closed[draw["id"]]
            assert result["state"] == "closed"
            assert result["entrants"] == len(entrants) == len(result["entries"])
            assert Counter(result["entries"]) == Counter(entrants)  # each once, no one else
            assert result["excluded"] == {}
            assert result["eligible"] == sorted(entrants, key=lambda u: u.encode("utf-8"))
            assert commitment_of(result["seed"]) == draw["commitment"] == result["commitment"]
            assert result["winner_ids"] == draw_winners(result["seed"], result["eligible"], winners)
            assert len(result["winner_ids"]) == len(set(result["winner_ids"])) == min(winners, len(entrants))
            assert set(result["winner_ids"]) <= entrants
            # `live draw verify` on the record as read through the other process
            record = await on_second.call("GET", f"/api/rooms/shop/draws/{draw['id']}")
            assert (record["seed"], record["winner_ids"]) == (result["seed"], result["winner_ids"])
            path = tmp_path / f"{draw['id']}.json"
            path.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
            assert cli.main(["draw", "verify", str(path), "--commitment", draw["commitment"]]) == 0
            assert capsys.readouterr().out.startswith(f"ok: draw {draw['id']}")

        # every viewer on both processes hears each close, and each winner is told privately
        def told() -> bool:
            return all(closes_of(v, kid) and closes_of(v, pid) for v in everyone) and all(
                any(m["draw_id"] == did for m in crowd[u].of_type("draw_won"))
                for did in (kid, pid)
                for u in closed[did]["winner_ids"]
            )

        await until(told, 60, every_s=0.2)
        await asyncio.sleep(0.5)  # anything more on its way: a second close, a stray draw_won
        for v in everyone:
            for did in (kid, pid):
                (event,) = closes_of(v, did)  # once
                result = closed[did]
                assert (event["seed"], event["winner_ids"], event["commitment"]) == (
                    result["seed"],
                    result["winner_ids"],
                    result["commitment"],
                )
                assert (event["entrants"], event["eligible"]) == (result["entrants"], len(result["eligible"]))
            won = Counter(m["draw_id"] for m in v.of_type("draw_won"))
            assert won == Counter(did for did in (kid, pid) if v.name in closed[did]["winner_ids"]), v.name
            assert not v.closed.is_set(), v.name  # nobody was cut off
        winners_on = Counter(where[u].name for did in (kid, pid) for u in closed[did]["winner_ids"])
        assert set(winners_on) == {first.name, second.name}, winners_on  # winners on both processes
        await asyncio.gather(*(v.close() for v in everyone))
