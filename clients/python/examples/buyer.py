"""A buyer: joins a room, and when a flash sale opens reserves one unit and pays for it.

export LIVE_URL=http://127.0.0.1:8080 LIVE_ROOM=spring
LIVE_TOKEN=$(live token --room spring --role viewer --user me) python examples/buyer.py
"""

from __future__ import annotations

import asyncio
import os

from live_client import BuyError, RoomClient, Sale, SaleOpened, SaleStarted


async def buy(room: RoomClient, sale_id: str) -> bool:
    try:
        hold = await room.reserve(sale_id, 1)  # a lost answer is retried with the same rid
        order = await room.confirm(hold.hold_id)
    except BuyError as error:  # SoldOut, LimitReached, NotStarted, ...
        print(f"not bought: {error.code}", flush=True)
        return False
    print(f"bought {order.order_id} for {order.amount_cents} cents", flush=True)
    return True


async def main() -> None:
    async with RoomClient(
        os.environ["LIVE_URL"], os.environ["LIVE_TOKEN"], room=os.environ["LIVE_ROOM"]
    ) as room:
        print(f"joined {room.welcome.room.id}", flush=True)
        live: list[Sale] = [s for s in room.welcome.room.sales if s.phase == "live"]
        for sale in live:
            if await buy(room, sale.id):
                return
        async for event in room:
            sale_id = None
            if isinstance(event, SaleOpened) and event.sale.phase == "live":
                sale_id = event.sale.id
            elif isinstance(event, SaleStarted):
                sale_id = event.sale_id
            if sale_id is not None and await buy(room, sale_id):
                return


if __name__ == "__main__":
    asyncio.run(main())
