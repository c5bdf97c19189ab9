"""``HostClient``: the host HTTP API (docs/http-api.md) for shop back-ends and hosts' tools.

The standard library's ``urllib``, run in a thread (``asyncio.to_thread``): a host tool makes a
few calls a second at most, so a connection pool buys nothing, and the client needs no HTTP
library. Every refusal is raised as the typed error of its JSON body's ``code``.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from live_client.errors import LiveError, Unavailable, error_from
from live_client.models import CouponBatch, Order, OrdersPage, Product, Room, Sale, TeamStatus, build


def _q(part: str) -> str:
    if not isinstance(part, str) or not part:
        raise ValueError(f"an id must be a non-empty str, not {part!r}")
    return quote(part, safe="")


def _drop_none(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class HostClient:
    """``HostClient("http://127.0.0.1:8080", token)``: a host's (or moderator's) token."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 30.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"not an http:// or https:// URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    async def __aenter__(self) -> HostClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    # -- transport ------------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Any route: the JSON answer, or the typed error of a refusal."""
        url = self.base_url + path
        params = _drop_none(query or {})
        if params:
            url += "?" + urlencode(params)
        return await asyncio.to_thread(self._call, method, url, None if body is None else dict(body))

    def _call(self, method: str, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._refusal(exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            raise Unavailable("unavailable", f"{method} {url}: {exc}") from exc
        obj = json.loads(raw) if raw else {}
        if not isinstance(obj, dict):
            raise LiveError("bad_answer", f"{method} {url}: not a JSON object")
        return obj

    @staticmethod
    def _refusal(status: int, raw: bytes) -> LiveError:
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        error = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(error, dict):
            return error_from(error, status)
        return error_from({"code": f"http_{status}", "message": raw.decode(errors="replace")[:500]}, status)

    # -- rooms and products ---------------------------------------------------------------------

    async def create_room(self, title: str, *, id: str | None = None, allow_anonymous: bool = False) -> Room:
        body = _drop_none({"title": title, "id": id, "allow_anonymous": allow_anonymous})
        return build(Room, await self.call("POST", "/api/rooms", body))

    async def list_rooms(self, *, after: str | None = None, limit: int | None = None) -> list[Room]:
        answer = await self.call("GET", "/api/rooms", query={"after": after, "limit": limit})
        return [build(Room, r) for r in answer.get("rooms", [])]

    async def get_room(self, room: str) -> Room:
        return build(Room, await self.call("GET", f"/api/rooms/{_q(room)}"))

    async def create_product(
        self, room: str, title: str, price_cents: int, *, image_url: str | None = None
    ) -> Product:
        body = _drop_none({"title": title, "price_cents": price_cents, "image_url": image_url})
        return build(Product, await self.call("POST", f"/api/rooms/{_q(room)}/products", body))

    async def list_products(self, room: str) -> list[Product]:
        answer = await self.call("GET", f"/api/rooms/{_q(room)}/products")
        return [build(Product, p) for p in answer.get("products", [])]

    # -- flash sales, coupons, teams, orders ----------------------------------------------------

    async def create_sale(
        self,
        room: str,
        product_id: str,
        stock: int,
        *,
        price_cents: int | None = None,
        per_user_limit: int | None = None,
        starts_in_s: int | None = None,
        starts_at_ms: int | None = None,
        duration_s: int | None = None,
        hold_s: int | None = None,
        group: Mapping[str, int] | None = None,
    ) -> Sale:
        body = _drop_none(
            {
                "product_id": product_id,
                "stock": stock,
                "price_cents": price_cents,
                "per_user_limit": per_user_limit,
                "starts_in_s": starts_in_s,
                "starts_at_ms": starts_at_ms,
                "duration_s": duration_s,
                "hold_s": hold_s,
                "group": None if group is None else dict(group),
            }
        )
        return build(Sale, await self.call("POST", f"/api/rooms/{_q(room)}/sales", body))

    async def list_sales(self, room: str) -> list[Sale]:
        answer = await self.call("GET", f"/api/rooms/{_q(room)}/sales")
        return [build(Sale, s) for s in answer.get("sales", [])]

    async def get_sale(self, sale: str) -> Sale:
        return build(Sale, await self.call("GET", f"/api/sales/{_q(sale)}"))

    async def stop_sale(self, sale: str) -> Sale:
        return build(Sale, await self.call("POST", f"/api/sales/{_q(sale)}/stop"))

    async def add_stock(self, sale: str, units: int) -> Sale:
        return build(Sale, await self.call("POST", f"/api/sales/{_q(sale)}/stock", {"units": units}))

    async def drop_coupons(self, sale: str, count: int, discount_cents: int) -> CouponBatch:
        body = {"count": count, "discount_cents": discount_cents}
        return build(CouponBatch, await self.call("POST", f"/api/sales/{_q(sale)}/coupons", body))

    async def get_coupon_batch(self, sale: str, batch: str) -> CouponBatch:
        return build(CouponBatch, await self.call("GET", f"/api/sales/{_q(sale)}/coupons/{_q(batch)}"))

    async def get_team(self, sale: str, code: str) -> TeamStatus:
        return build(TeamStatus, await self.call("GET", f"/api/sales/{_q(sale)}/teams/{_q(code)}"))

    async def get_order(self, order: str) -> Order:
        return build(Order, await self.call("GET", f"/api/orders/{_q(order)}"))

    async def sale_orders(
        self, sale: str, *, after: str | None = None, limit: int | None = None
    ) -> OrdersPage:
        """One page of a sale's orders; ask again with ``after=page.cursor`` for the next."""
        answer = await self.call(
            "GET", f"/api/sales/{_q(sale)}/orders", query={"after": after, "limit": limit}
        )
        return build(OrdersPage, answer)

    # -- the room's tools: auctions, Q&A, lucky draws, polls (bodies as in docs/http-api.md) ----

    async def open_auction(self, room: str, **fields: Any) -> dict[str, Any]:
        return await self.call("POST", f"/api/rooms/{_q(room)}/auctions", fields)

    async def list_auctions(self, room: str) -> list[dict[str, Any]]:
        answer = await self.call("GET", f"/api/rooms/{_q(room)}/auctions")
        return list(answer.get("auctions", []))

    async def get_auction(self, room: str, auction: str) -> dict[str, Any]:
        return await self.call("GET", f"/api/rooms/{_q(room)}/auctions/{_q(auction)}")

    async def auction_bids(self, room: str, auction: str) -> dict[str, Any]:
        return await self.call("GET", f"/api/rooms/{_q(room)}/auctions/{_q(auction)}/bids")

    async def list_questions(self, room: str, *, limit: int | None = None) -> dict[str, Any]:
        return await self.call("GET", f"/api/rooms/{_q(room)}/questions", query={"limit": limit})

    async def question_action(self, room: str, question: str, action: str) -> dict[str, Any]:
        """``action``: ``answer``, ``pin``, ``unpin`` or ``dismiss``."""
        if action not in ("answer", "pin", "unpin", "dismiss"):
            raise ValueError(f"unknown question action {action!r}")
        return await self.call("POST", f"/api/rooms/{_q(room)}/questions/{_q(question)}/{action}")

    async def open_draw(self, room: str, **fields: Any) -> dict[str, Any]:
        return await self.call("POST", f"/api/rooms/{_q(room)}/draws", fields)

    async def list_draws(self, room: str) -> list[dict[str, Any]]:
        answer = await self.call("GET", f"/api/rooms/{_q(room)}/draws")
        return list(answer.get("draws", []))

    async def get_draw(self, room: str, draw: str) -> dict[str, Any]:
        return await self.call("GET", f"/api/rooms/{_q(room)}/draws/{_q(draw)}")

    async def draw_verification(self, room: str, draw: str) -> dict[str, Any]:
        return await self.call("GET", f"/api/rooms/{_q(room)}/draws/{_q(draw)}/verification")

    async def close_draw(self, room: str, draw: str) -> dict[str, Any]:
        return await self.call("POST", f"/api/rooms/{_q(room)}/draws/{_q(draw)}/close")

    async def open_poll(self, room: str, **fields: Any) -> dict[str, Any]:
        return await self.call("POST", f"/api/rooms/{_q(room)}/polls", fields)

    async def list_polls(self, room: str) -> list[dict[str, Any]]:
        answer = await self.call("GET", f"/api/rooms/{_q(room)}/polls")
        return list(answer.get("polls", []))

    async def get_poll(self, room: str, poll: str) -> dict[str, Any]:
        return await self.call("GET", f"/api/rooms/{_q(room)}/polls/{_q(poll)}")

    async def close_poll(self, room: str, poll: str) -> dict[str, Any]:
        return await self.call("POST", f"/api/rooms/{_q(room)}/polls/{_q(poll)}/close")
