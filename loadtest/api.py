"""The server's HTTP API as the harness uses it: set a room up, read a sale and its ledger."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt

TOKEN_TTL_S = 86_400


class ApiError(RuntimeError):
    """The server refused a setup or audit call; the message has its status and answer."""


def mint(secret: str, user: str, room: str, role: str) -> str:
    now = int(time.time())
    claims = {"sub": user, "room": room, "role": role, "iat": now, "exp": now + TOKEN_TTL_S}
    return jwt.encode(claims, secret, algorithm="HS256")


#: How long a node has to answer its readiness probe (before the run, and for the audit).
PROBE_TIMEOUT_S = 5.0


async def not_ready(base_url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the node at ``base_url`` is not ready (``GET /readyz`` did not answer 200), or None
    when it is."""
    url = base_url.rstrip("/") + "/readyz"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
            http.get(url) as response,
        ):
            if response.status == 200:
                return None
            return f"/readyz answered HTTP {response.status} {(await response.text())[:200]}"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except aiohttp.ClientError as exc:
        return f"not reachable ({exc or type(exc).__name__})"


class Api:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"}, timeout=aiohttp.ClientTimeout(total=30)
        )

    async def close(self) -> None:
        await self._http.close()

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            async with self._http.request(method, self.base_url + path, json=body) as response:
                text = await response.text()
                if response.status >= 400:
                    raise ApiError(f"{method} {path}: HTTP {response.status} {text[:300]}")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(f"{method} {path}: {exc!r}") from exc

    async def create_room(self, room: str, title: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/api/rooms", {"id": room, "title": title})
        return result

    async def create_product(self, room: str, title: str, price_cents: int) -> str:
        body = {"title": title, "price_cents": price_cents}
        product = await self._call("POST", f"/api/rooms/{room}/products", body)
        return str(product["id"])

    async def open_sale(self, room: str, **fields: Any) -> dict[str, Any]:
        sale: dict[str, Any] = await self._call("POST", f"/api/rooms/{room}/sales", fields)
        return sale

    async def sale(self, sale_id: str) -> dict[str, Any]:
        sale: dict[str, Any] = await self._call("GET", f"/api/sales/{sale_id}")
        return sale

    async def orders(self, sale_id: str, page: int = 5000) -> list[dict[str, Any]]:
        """Every order of the sale in the ledger, page by page."""
        orders: list[dict[str, Any]] = []
        after = "0"
        while True:
            answer = await self._call("GET", f"/api/sales/{sale_id}/orders?limit={page}&after={quote(after)}")
            orders.extend(answer["orders"])
            if not answer["more"]:
                return orders
            after = answer["cursor"]

    # -- the room's interaction tools (issue 14) ------------------------------------------------

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call("POST", path, body)
        return answer

    async def get(self, path: str) -> Any:
        return await self._call("GET", path)

    async def open_draw(self, room: str, **fields: Any) -> dict[str, Any]:
        return await self.post(f"/api/rooms/{room}/draws", fields)

    async def draw(self, room: str, draw_id: str) -> dict[str, Any]:
        draw: dict[str, Any] = await self.get(f"/api/rooms/{room}/draws/{draw_id}")
        return draw

    async def open_auction(self, room: str, **fields: Any) -> dict[str, Any]:
        return await self.post(f"/api/rooms/{room}/auctions", fields)

    async def auction(self, room: str, auction_id: str) -> dict[str, Any]:
        auction: dict[str, Any] = await self.get(f"/api/rooms/{room}/auctions/{auction_id}")
        return auction

    async def auction_bids(self, room: str, auction_id: str) -> list[dict[str, Any]]:
        answer = await self.get(f"/api/rooms/{room}/auctions/{auction_id}/bids")
        bids: list[dict[str, Any]] = answer["bids"] if isinstance(answer, dict) else answer
        return bids

    async def open_poll(self, room: str, **fields: Any) -> dict[str, Any]:
        return await self.post(f"/api/rooms/{room}/polls", fields)

    async def poll(self, room: str, poll_id: str) -> dict[str, Any]:
        poll: dict[str, Any] = await self.get(f"/api/rooms/{room}/polls/{poll_id}")
        return poll

    async def questions(self, room: str) -> list[dict[str, Any]]:
        """The room's open questions (the host's full queue)."""
        answer = await self.get(f"/api/rooms/{room}/questions")
        questions: list[dict[str, Any]] = answer["questions"] if isinstance(answer, dict) else answer
        return questions

    async def order(self, order_id: str) -> dict[str, Any]:
        order: dict[str, Any] = await self.get(f"/api/orders/{quote(order_id)}")
        return order
