"""A chat bot: answers "多少钱?" (how much?) with the pinned product's price.

export LIVE_URL=http://127.0.0.1:8080 LIVE_ROOM=spring
LIVE_TOKEN=$(live token --room spring --role viewer --user bot) python examples/chat_bot.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

from live_client import CommentBatch, Product, ProductPinned, ProductUnpinned, RoomClient

QUESTION = "多少钱"


def price(product: Product) -> str:
    return f"{product.title}: ¥{product.price_cents // 100}.{product.price_cents % 100:02d}"


async def main(duration_s: float | None = None) -> None:
    async with RoomClient(
        os.environ["LIVE_URL"], os.environ["LIVE_TOKEN"], room=os.environ["LIVE_ROOM"]
    ) as room:
        me = room.welcome.user.id
        pinned = room.welcome.pinned
        print(f"bot {me} in {room.welcome.room.id}", flush=True)
        async with asyncio.timeout(duration_s):
            async for event in room:
                if isinstance(event, ProductPinned):
                    pinned = event.product
                elif isinstance(event, ProductUnpinned):
                    pinned = None
                elif isinstance(event, CommentBatch):
                    for comment in event.comments:
                        if comment.user_id != me and QUESTION in comment.text:
                            await room.comment(price(pinned) if pinned else "还没有上架商品")


if __name__ == "__main__":
    with contextlib.suppress(TimeoutError):  # the optional duration (s) is over
        asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else None))
