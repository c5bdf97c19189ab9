"""Property-based tests of the HTTP API: arbitrary JSON values, arbitrary Unicode (lone
surrogates included) and arbitrary bytes as every request body, path and query parameter,
against a real server (real Redis, real SQLite, real sockets). Every answer must be typed: a
2xx, or a 4xx with ``{"error": {"code", "message"}}``, never a 5xx; and the server must still
work afterwards.

Hypothesis runs its examples in a plain function, so the server runs in a thread of its own,
with its own event loop, and the examples speak to it with a synchronous client.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import SECRET
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from live.auth import ANY_ROOM, Role
from live.server import running
from live.settings import Settings

#: Every example of every test here: no per-example deadline (a loaded 2-core machine), and
#: the module-scoped server fixture is shared on purpose.
FUZZ = settings(
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Served:
    port: int
    token: str
    room: str
    product: str
    sale: str
    #: A sale that only the stop endpoint is fuzzed on (a stopped sale refuses stock).
    stop_sale: str

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, Any] | None = None,
    ) -> tuple[int, str, bytes]:
        """One request on a new connection: the status, content type and body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            sent = {"Authorization": f"Bearer {self.token}", **(headers or {})}
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type", ""), resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, _, raw = self.call(method, path, None if body is None else json.dumps(body).encode())
        assert 200 <= status < 300, (status, raw)
        return json.loads(raw)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Served]:
    config = Settings(
        data_dir=Path(tmp_path_factory.mktemp("fuzz")) / "data",
        redis_url=redis_url,
        key_prefix=f"t{uuid.uuid4().hex[:12]}",
        secret=SECRET,
        port=0,
        max_rooms_per_host=100_000,
        max_active_sales_per_room=100_000,
    )
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with running(config) as server:
            box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
            box["url"] = server.url
            box["token"] = server.services.auth.mint("fuzzer", ANY_ROOM, Role.HOST, 3600)
            ready.set()
            await box["stop"].wait()

    def thread_main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=thread_main, name="fuzz-server", daemon=True)
    thread.start()
    assert ready.wait(60) and "error" not in box, box.get("error")
    served = Served(int(box["url"].rsplit(":", 1)[1]), box["token"], "fuzz", "", "", "")
    served.json("POST", "/api/rooms", {"id": "fuzz", "title": "fuzz room"})
    served.product = served.json("POST", "/api/rooms/fuzz/products", {"title": "tea", "price_cents": 100})[
        "id"
    ]
    for name in ("sale", "stop_sale"):
        sale = served.json("POST", "/api/rooms/fuzz/sales", {"product_id": served.product, "stock": 5})
        setattr(served, name, sale["id"])
    try:
        yield served
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(60)
    assert "error" not in box, box["error"]


def assert_typed(status: int, content_type: str, raw: bytes) -> None:
    assert status < 500, (status, raw[:500])
    if status >= 400 or content_type.startswith("application/json"):
        assert content_type.startswith("application/json"), (status, content_type, raw[:500])
        answer = json.loads(raw)
        if status >= 400:
            assert set(answer) == {"error"}, answer
            assert set(answer["error"]) == {"code", "message"}, answer
            assert all(isinstance(v, str) and v for v in answer["error"].values()), answer
    else:
        assert 200 <= status < 300, status


def assert_still_works(served: Served) -> None:
    status, _, raw = served.call("GET", "/readyz")
    assert status == 200 and json.loads(raw)["status"] == "ready", raw
    room_id = f"ok-{uuid.uuid4().hex[:8]}"
    assert served.json("POST", "/api/rooms", {"id": room_id, "title": "春季 still works"})["id"] == room_id
    product = served.json("POST", f"/api/rooms/{room_id}/products", {"title": "tea", "price_cents": 1})
    assert served.json("GET", f"/api/rooms/{room_id}")["products"] == [product]


# -- strategies -----------------------------------------------------------------------------

#: Any code point, with lone surrogates (which st.characters() leaves out) often.
any_char = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))
any_text = st.text(alphabet=any_char, max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(any_text, inner, max_size=5),
    max_leaves=25,
)


def _endpoints(served: Served) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each endpoint that takes a body: its path and a valid body."""
    return {
        "rooms": ("/api/rooms", {"title": "a room"}),
        "products": (f"/api/rooms/{served.room}/products", {"title": "tea", "price_cents": 100}),
        "sales": (
            f"/api/rooms/{served.room}/sales",
            {"product_id": served.product, "stock": 5, "group": {"size": 2, "price_cents": 50, "team_s": 60}},
        ),
        "stock": (f"/api/sales/{served.sale}/stock", {"units": 1}),
        "coupons": (f"/api/sales/{served.sale}/coupons", {"count": 1, "discount_cents": 1}),
        "stop": (f"/api/sales/{served.stop_sale}/stop", {}),
        "polls": (
            f"/api/rooms/{served.room}/polls",
            {"question": "q?", "options": ["a", "b"], "duration_s": 60},
        ),
    }


#: The fields the endpoints read, so that generated bodies hit them, not only unknown keys.
FIELDS = [
    "title",
    "id",
    "allow_anonymous",
    "price_cents",
    "image_url",
    "product_id",
    "stock",
    "per_user_limit",
    "starts_at_ms",
    "starts_in_s",
    "duration_s",
    "hold_s",
    "group",
    "units",
    "count",
    "discount_cents",
    "question",
    "options",
    "allow_change",
]


@st.composite
def bodies(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    kinds = ["any_json", "fields", "raw_text", "raw_bytes", "deep", *["one_field_changed"] * 4]
    kind = draw(st.sampled_from(kinds))
    if kind == "deep":  # nesting deeper than Python's recursion limit, up to past the body limit
        depth = draw(st.integers(1, 70_000))
        return draw(st.sampled_from([b"[", b'{"a":'])) * depth
    if kind == "raw_text":  # lone surrogates as (invalid) UTF-8 bytes, not as JSON escapes
        return draw(any_text).encode("utf-8", "surrogatepass")
    if kind == "raw_bytes":
        return draw(st.binary(max_size=200))
    value: Any
    values = any_text | json_values  # text half the time: most fields are read as text
    if kind == "any_json":
        value = draw(json_values)
    elif kind == "fields":
        value = draw(st.dictionaries(st.sampled_from(FIELDS) | any_text, values, max_size=8))
    else:  # a valid body with one field (most often one the endpoint reads) made anything
        fields = sorted(valid) or FIELDS
        field = draw(st.sampled_from(fields) | st.sampled_from([*FIELDS, "group.size", "group.team_s"]))
        value = json.loads(json.dumps(valid))
        if field.startswith("group."):
            value.setdefault("group", {})[field.split(".")[1]] = draw(values)
        else:
            value[field] = draw(values)
    # ensure_ascii: a lone surrogate goes as a \ud800 escape, which is valid JSON
    return json.dumps(value, ensure_ascii=True).encode()


# -- tests ----------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_any_body_to_any_endpoint_gets_a_typed_answer(served: Served, data: st.DataObject) -> None:
    path, valid = _endpoints(served)[data.draw(st.sampled_from(sorted(_endpoints(served))), label="endpoint")]
    body = data.draw(bodies(valid), label="body")
    assert_typed(*served.call("POST", path, body, {"Content-Type": "application/json"}))
    assert served.call("GET", "/readyz")[0] == 200


def test_the_server_still_works_after_the_bodies(served: Served) -> None:
    assert_still_works(served)  # (runs after the test above: same module, same server)


#: Paths with one parameter ({} is where it goes), and the methods they answer.
PATHS = [
    ("GET", "/api/rooms/{}"),
    ("GET", "/api/rooms/{}/products"),
    ("POST", "/api/rooms/{}/products"),
    ("GET", "/api/rooms/{}/sales"),
    ("POST", "/api/rooms/{}/sales"),
    ("GET", "/api/sales/{}"),
    ("POST", "/api/sales/{}/stock"),
    ("GET", "/api/sales/SALE/teams/{}"),
    ("GET", "/api/sales/SALE/coupons/{}"),
    ("GET", "/api/orders/{}"),
    ("GET", "/api/rooms?after={}"),
    ("GET", "/api/rooms?limit={}"),
    ("GET", "/api/sales/SALE/orders?after={}"),
    ("GET", "/api/sales/SALE/orders?limit={}"),
    ("GET", "/api/rooms?{}=1"),
    ("GET", "/r/{}"),
    ("GET", "/api/rooms/fuzz/polls/{}"),
    ("POST", "/api/rooms/fuzz/polls/{}/close"),
]


@FUZZ
@given(
    where=st.sampled_from(PATHS),
    text=any_text,
    raw_auth=st.one_of(
        st.none(), st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
    ),
)
def test_any_path_query_and_token_text_gets_a_typed_answer(
    served: Served, where: tuple[str, str], text: str, raw_auth: bytes | None
) -> None:
    method, template = where
    # percent-encoded UTF-8, a lone surrogate as the (invalid) bytes it would be
    param = quote(text.encode("utf-8", "surrogatepass"), safe="")
    path = template.replace("SALE", served.sale).format(param)
    headers = {} if raw_auth is None else {"Authorization": b"Bearer " + raw_auth}
    body = b"{}" if method == "POST" else None
    assert_typed(*served.call(method, path, body, headers))
    assert served.call("GET", "/readyz")[0] == 200


def test_the_server_still_works_after_the_parameters(served: Served) -> None:
    assert_still_works(served)
