"""The OpenAPI 3.1 description of the HTTP API (docs/http-api.md), and its route.

``live/openapi.json`` is the committed document and what ``GET /api/openapi.json`` serves. It is
generated from ``document()`` here, which takes its limits from the code that enforces them::

    python -m live.openapi          # rewrite live/openapi.json
    python -m live.openapi --check  # exit 1 if it is not current

tests/test_openapi.py checks the file is current, valid, names every route the app registers
(and no other), and that real answers match their schemas.
"""

from __future__ import annotations

import hashlib
import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web

from interact.auctions import MAX_AMOUNT_CENTS
from interact.draw_verify import RULES
from interact.polls import MAX_OPTION_CHARS, MAX_OPTIONS, MAX_QUESTION_CHARS, MIN_OPTIONS
from inventory.model import MAX_QUANTITY, MAX_STOCK
from live import __version__
from live.draws import MAX_KEYWORD
from live.http_api import DEFAULT_ROOMS_PAGE, MAX_PRICE_CENTS, MAX_ROOMS_PAGE, MAX_TITLE, MAX_URL
from live.questions import MAX_LISTED
from live.sales_api import DEFAULT_ORDERS_PAGE, MAX_ORDERS_PAGE
from live.selling import MAX_COUPONS, MAX_GROUP_SIZE, MAX_HOLD_MS, MAX_LEAD_MS, MAX_SALE_MS

PATH = Path(__file__).parent / "openapi.json"
#: The document's own path on the server.
ROUTE = "/api/openapi.json"
#: Clients may keep the document this long, then revalidate it (its ETag is its hash).
MAX_AGE_S = 300

Schema = dict[str, Any]

# -- schema helpers ---------------------------------------------------------------------------


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(
    required: dict[str, Schema], optional: dict[str, Schema] | None = None, closed: bool = True
) -> Schema:
    """An object with ``required`` properties (always present) and ``optional`` ones."""
    out: Schema = {"type": "object", "properties": {**required, **(optional or {})}}
    if required:
        out["required"] = list(required)
    if closed:
        out["additionalProperties"] = False
    return out


def integer(low: int | None = None, high: int | None = None, description: str = "") -> Schema:
    out: Schema = {"type": "integer"}
    if low is not None:
        out["minimum"] = low
    if high is not None:
        out["maximum"] = high
    if description:
        out["description"] = description
    return out


def string(description: str = "", **rules: Any) -> Schema:
    out: Schema = {"type": "string", **rules}
    if description:
        out["description"] = description
    return out


def nullable(schema: Schema) -> Schema:
    """``schema`` or null (in a response: the field is always there, maybe null)."""
    if "type" not in schema:  # a $ref, or an anyOf
        return {"anyOf": [schema, {"type": "null"}]}
    kind = schema["type"]
    return {**schema, "type": [*kind, "null"] if isinstance(kind, list) else [kind, "null"]}


def optional(schema: Schema) -> Schema:
    """An optional request field: absent and null both mean the default."""
    return nullable(schema)


def array(items: Schema, **rules: Any) -> Schema:
    return {"type": "array", "items": items, **rules}


def enum(*values: str, description: str = "") -> Schema:
    out: Schema = {"type": "string", "enum": list(values)}
    if description:
        out["description"] = description
    return out


MS = integer(0, description="ms since the epoch")
CENTS = integer(0, description="integer cents")
COUNT = integer(0)
USER = string("a user id (a token's sub)")

# -- components -------------------------------------------------------------------------------

PRODUCT_BRIEF = obj(
    {
        "id": string(),
        "title": string(),
        "price_cents": CENTS,
        "image_url": nullable(string()),
    }
)

AUCTION_OFFER = obj({"user_id": USER, "amount_cents": CENTS, "pay_by_ms": MS})

AUCTION_FIELDS: dict[str, Schema] = {
    "id": string(pattern="^a_"),
    "room_id": string(),
    "product": PRODUCT_BRIEF,
    "start_cents": CENTS,
    "increment_cents": CENTS,
    "reserve_met": {"type": "boolean"},
    "buy_now_cents": integer(0, description="0: no buy-now price"),
    "snipe_ms": COUNT,
    "max_extension_ms": COUNT,
    "opened_at_ms": MS,
    "ends_at_ms": MS,
    "state": enum("open", "offered", "sold", "unsold"),
    "leader_id": nullable(USER),
    "amount_cents": nullable(CENTS),
    "bids": COUNT,
    "bid_seq": COUNT,
    "min_bid_cents": CENTS,
    "hold_ms": COUNT,
    "reserve_cents": CENTS,
    "original_ends_at_ms": MS,
    "offer_next": {"type": "boolean"},
}

AUCTION_RESULT = obj(
    {},
    {
        "opened_at_ms": MS,
        "original_ends_at_ms": MS,
        "ends_at_ms": MS,
        "state": enum("open", "offered", "sold", "unsold"),
        "leader_id": nullable(USER),
        "leading_cents": nullable(CENTS),
        "bid_seq": COUNT,
        "bids": COUNT,
        "offer": nullable(AUCTION_OFFER),
        "offered": array(USER, description="the bidders offered it so far"),
        "winner_id": nullable(USER),
        "amount_cents": nullable(CENTS),
        "order_id": nullable(string()),
        "checkpoint_ms": MS,
    },
    closed=False,
)
AUCTION_RESULT["description"] = (
    "The auction's record (the store's tools row), checkpointed about once a second"
)

DRAW_PRIZE: Schema = {
    "oneOf": [
        obj(
            {"product_id": string(), "title": string(), "price_cents": CENTS, "image_url": nullable(string())}
        ),
        obj({"coupon_batch_id": string(), "sale_id": string()}),
    ]
}

DRAW_FIELDS: dict[str, Schema] = {
    "id": string(pattern="^d_"),
    "room_id": string(),
    "prize": DRAW_PRIZE,
    "winners": integer(1, 1000, "the number of winners asked for"),
    "rules": obj(
        {
            "keyword": nullable(string()),
            "signed_in": {"type": "boolean"},
            "present_at_close": {"type": "boolean"},
            "min_watch_s": COUNT,
        }
    ),
    "opened_at_ms": MS,
    "closes_at_ms": MS,
    "state": enum("open", "closed"),
    "commitment": string("hex SHA-256 of the seed's hex text", pattern="^[0-9a-f]{64}$"),
    "entrants": COUNT,
}
DRAW_CLOSED_FIELDS: dict[str, Schema] = {
    "seed": string(pattern="^[0-9a-f]+$"),
    "claim_by_ms": MS,
    "claims_open": {"type": "boolean"},
}
EXCLUSION_RULE = enum(*RULES)
DRAW_LISTS: dict[str, Schema] = {
    "entries": array(USER, description="every entrant, in entry order"),
    "eligible": array(USER, description="the entries less the excluded, sorted by UTF-8 bytes"),
    "excluded": {"type": "object", "additionalProperties": EXCLUSION_RULE, "description": "user -> rule"},
    "winner_ids": array(USER, description="in draw order"),
    "claims": {"type": "object", "additionalProperties": string(), "description": "user -> order id"},
    "unclaimed": array(USER, description="after the claim window: the winners who did not claim"),
}

POLL = obj(
    {
        "id": string(pattern="^p_"),
        "room_id": string(),
        "question": string(minLength=1, maxLength=MAX_QUESTION_CHARS),
        "options": array(
            string(minLength=1, maxLength=MAX_OPTION_CHARS), minItems=MIN_OPTIONS, maxItems=MAX_OPTIONS
        ),
        "allow_change": {"type": "boolean"},
        "opened_at_ms": MS,
        "closes_at_ms": MS,
        "state": enum("open", "closed"),
        "tallies": array(COUNT, description="one count per option, in the order of options"),
        "votes": integer(0, description="voters"),
        "closed_at_ms": nullable(MS),
    }
)

QUESTION = obj(
    {
        "id": string(pattern="^q_"),
        "room_id": string(),
        "user_id": USER,
        "text": string(),
        "upvotes": COUNT,
        "state": enum("open", "answered", "dismissed"),
        "pinned": {"type": "boolean"},
        "asked_at_ms": MS,
    }
)

SALE_PHASE = enum("not_started", "live", "sold_out", "ended", "frozen")
SALE_GROUP = nullable(obj({"size": integer(2, MAX_GROUP_SIZE), "price_cents": CENTS, "team_ms": COUNT}))
SALE_FIELDS: dict[str, Schema] = {
    "id": string(pattern="^s_"),
    "room_id": string(),
    "product_id": string(),
    "phase": SALE_PHASE,
    "total": integer(0, description="initial stock + added = available + held + sold"),
    "available": COUNT,
    "held": COUNT,
    "sold": COUNT,
    "price_cents": CENTS,
    "per_user_limit": integer(1, MAX_QUANTITY),
    "starts_at_ms": MS,
    "ends_at_ms": MS,
    "hold_ms": COUNT,
    "group": SALE_GROUP,
}

ERROR = obj(
    {
        "error": obj(
            {
                "code": string("stable, machine-readable: docs/http-api.md#errors"),
                "message": string("for people; may change"),
            }
        )
    }
)

ROOM_FIELDS: dict[str, Schema] = {
    "id": string(pattern="^[A-Za-z0-9_-]{1,64}$"),
    "title": string(minLength=1, maxLength=MAX_TITLE),
    "host_id": USER,
    "allow_anonymous": {"type": "boolean"},
    "created_at_ms": MS,
}

SCHEMAS: dict[str, Schema] = {
    "Error": ERROR,
    "Health": obj({"status": {"const": "ok"}, "version": string()}),
    "Ready": obj(
        {
            "status": enum("ready", "unready"),
            "redis": string("ok, or error: <reason>"),
            "sqlite": string("the store of record (SQLite or PostgreSQL): ok, or error: <reason>"),
            "tasks": string("ok, or error: restarting <task>, ..."),
        },
        {"node": string("present only when another node holds this node's name")},
    ),
    "Room": obj(ROOM_FIELDS),
    "Product": obj(
        {
            "id": string(),
            "room_id": string(),
            "title": string(minLength=1, maxLength=MAX_TITLE),
            "price_cents": integer(0, MAX_PRICE_CENTS),
            "image_url": nullable(string(maxLength=MAX_URL)),
            "created_at_ms": MS,
        }
    ),
    "RoomWithProducts": obj({**ROOM_FIELDS, "products": array(ref("Product"))}),
    "RoomPage": obj(
        {
            "rooms": array(ref("Room")),
            "cursor": string(
                "the id of the page's last room; after itself on an empty page; '' with no rooms"
            ),
            "more": {"type": "boolean"},
        }
    ),
    "ProductList": obj({"products": array(ref("Product"))}),
    "Sale": obj(SALE_FIELDS),
    "SaleView": {
        "description": "A sale with its record's state; or, a sale not over that Redis lost, its record",
        "oneOf": [
            obj({**SALE_FIELDS, "state": enum("open", "stopped"), "created_at_ms": MS}),
            obj(
                {
                    "id": string(),
                    "room_id": string(),
                    "product_id": string(),
                    "stock": COUNT,
                    "price_cents": CENTS,
                    "per_user_limit": COUNT,
                    "starts_at_ms": MS,
                    "ends_at_ms": MS,
                    "hold_ms": COUNT,
                    "group_size": COUNT,
                    "group_price_cents": CENTS,
                    "team_ms": COUNT,
                    "state": enum("open", "stopped"),
                    "created_at_ms": MS,
                    "phase": {"const": "missing_in_redis"},
                }
            ),
        ],
    },
    "SaleList": obj({"sales": array(ref("SaleView"))}),
    "CouponBatchCreated": obj(
        {
            "sale_id": string(),
            "batch_id": string(),
            "count": integer(1, MAX_COUPONS),
            "discount_cents": integer(1, MAX_PRICE_CENTS),
            "remaining": COUNT,
        }
    ),
    "CouponBatch": obj({"sale_id": string(), "batch_id": string(), "remaining": COUNT}),
    "Team": obj(
        {
            "code": string(),
            "sale_id": string(),
            "state": enum("open", "complete", "failed"),
            "deadline_ms": MS,
            "size": integer(2, MAX_GROUP_SIZE),
            "members": COUNT,
            "price_cents": CENTS,
        }
    ),
    "Order": obj(
        {
            "order_id": string(),
            "sale_id": string("the sale, or the auction or draw it was won in"),
            "quantity": integer(1),
            "unit_price_cents": CENTS,
            "discount_cents": CENTS,
            "amount_cents": CENTS,
            "coupon_id": nullable(string()),
            "team_code": nullable(string()),
            "confirmed_at_ms": MS,
            "user_id": USER,
        }
    ),
    "OrderPage": obj(
        {
            "sale_id": string(),
            "orders": array(ref("Order")),
            "cursor": string("the position after this page (digits): pass it as after", pattern="^[0-9]+$"),
            "more": {"type": "boolean", "description": "this page was full"},
        }
    ),
    "Auction": {
        **obj(AUCTION_FIELDS, {"offer": AUCTION_OFFER}),
        "description": "The protocol's auction object with the host's fields (reserve_cents, ...)",
    },
    "AuctionView": {
        "oneOf": [
            obj(AUCTION_FIELDS, {"offer": AUCTION_OFFER, "result": nullable(AUCTION_RESULT)}),
            obj(
                {
                    "id": string(pattern="^a_"),
                    "room_id": string(),
                    "spec": {"type": "object", "description": "the auction as it was opened"},
                    "state": enum("open", "offered", "sold", "unsold"),
                    "result": nullable(AUCTION_RESULT),
                }
            ),
        ],
        "description": "The auction in full with its record's result; a finished auction whose Redis "
        "keys expired (7 days) is answered from its record: spec, state, result",
    },
    "AuctionList": obj({"auctions": array(ref("AuctionView"))}),
    "Bids": obj(
        {
            "auction_id": string(),
            "bids": array(
                obj(
                    {
                        "seq": integer(1),
                        "user_id": USER,
                        "amount_cents": CENTS,
                        "at_ms": MS,
                        "ends_at_ms": {**MS, "description": "the end after this bid"},
                    }
                )
            ),
        }
    ),
    "Draw": {**obj(DRAW_FIELDS, DRAW_CLOSED_FIELDS), "description": "The protocol's draw object"},
    "DrawView": {
        "description": "The draw object; once closed also its lists. A draw whose record is all "
        "that is left of it but not its result is answered as id, room_id, state",
        "oneOf": [
            obj(DRAW_FIELDS, {**DRAW_CLOSED_FIELDS, **DRAW_LISTS}),
            obj({"id": string(pattern="^d_"), "room_id": string(), "state": string()}),
        ],
    },
    "DrawList": obj({"draws": array(ref("DrawView"))}),
    "DrawVerification": obj(
        {
            "draw_id": string(),
            "room_id": string(),
            "state": {"const": "closed"},
            "commitment": string(pattern="^[0-9a-f]{64}$"),
            "seed": string(pattern="^[0-9a-f]+$"),
            "winners": integer(1, 1000, "the count asked for"),
            "entrants": COUNT,
            "eligible": array(USER, description="sorted by UTF-8 bytes"),
            "winner_ids": array(USER, description="in draw order"),
            "excluded_counts": obj({rule: COUNT for rule in RULES}),
        }
    ),
    "Poll": POLL,
    "PollList": obj({"polls": array(ref("Poll"))}),
    "Question": QUESTION,
    "QuestionQueue": obj(
        {"questions": array(ref("Question")), "pinned": nullable(ref("Question"))},
    ),
    "QuestionDecision": obj(
        {
            "question": ref("Question"),
            "changed": {"type": "boolean", "description": "false: it was so already, nothing announced"},
        }
    ),
}

# -- request bodies ---------------------------------------------------------------------------

DAY_S, YEAR_S = 86_400, MAX_LEAD_MS // 1000
TEXT_RULE = "1-{n} characters after trimming whitespace"

BODIES: dict[str, Schema] = {
    "CreateRoom": obj(
        {"title": string(TEXT_RULE.format(n=MAX_TITLE), minLength=1, maxLength=MAX_TITLE)},
        {
            "id": optional(
                string(
                    "generated when absent; a host whose token is for one room may create only "
                    "that room (its id defaults to it)",
                    pattern="^[A-Za-z0-9_-]{1,64}$",
                )
            ),
            "allow_anonymous": optional({"type": "boolean", "default": False}),
        },
        closed=False,
    ),
    "AddProduct": obj(
        {
            "title": string(TEXT_RULE.format(n=MAX_TITLE), minLength=1, maxLength=MAX_TITLE),
            "price_cents": integer(0, MAX_PRICE_CENTS),
        },
        {
            "image_url": optional(
                string("an http or https URL, no whitespace", maxLength=MAX_URL, pattern=r"^https?://\S+$")
            )
        },
        closed=False,
    ),
    "OpenSale": obj(
        {
            "product_id": string("a product of the room"),
            "stock": integer(1, MAX_STOCK),
        },
        {
            "price_cents": optional(integer(0, MAX_PRICE_CENTS, "default: the product's price")),
            "per_user_limit": optional(
                {**integer(1, MAX_QUANTITY, "units one user may hold + buy"), "default": 1}
            ),
            "starts_at_ms": optional(
                integer(description="ms since the epoch, from a minute ago to a year ahead; default now")
            ),
            "starts_in_s": optional(integer(0, YEAR_S, "not with starts_at_ms")),
            "duration_s": optional({**integer(1, MAX_SALE_MS // 1000), "default": 600}),
            "hold_s": optional(
                {
                    **integer(1, MAX_HOLD_MS // 1000, "how long a reservation waits for payment"),
                    "default": 300,
                }
            ),
            "group": optional(
                obj(
                    {},
                    {
                        "size": optional(
                            {
                                "anyOf": [{"const": 0}, integer(2, MAX_GROUP_SIZE)],
                                "description": "members of a team; absent or 0: no group buying",
                            }
                        ),
                        "price_cents": optional(integer(0, MAX_PRICE_CENTS, "at most the sale's price")),
                        "team_s": optional(integer(1, MAX_SALE_MS // 1000, "the team's deadline")),
                    },
                    closed=False,
                )
            ),
        },
        closed=False,
    ),
    "AddStock": obj({"units": integer(1, MAX_STOCK)}, closed=False),
    "DropCoupons": obj(
        {"count": integer(1, MAX_COUPONS), "discount_cents": integer(1, MAX_PRICE_CENTS)}, closed=False
    ),
    "OpenAuction": obj(
        {
            "product_id": string("a product of the room"),
            "start_cents": integer(1, MAX_AMOUNT_CENTS),
            "increment_cents": integer(1, MAX_AMOUNT_CENTS),
            "duration_s": integer(1, DAY_S),
        },
        {
            "snipe_s": optional({**integer(0, 3600), "default": 10}),
            "max_extension_s": optional({**integer(0, DAY_S), "default": 300}),
            "reserve_cents": optional({**integer(0, MAX_AMOUNT_CENTS, "0: no reserve"), "default": 0}),
            "buy_now_cents": optional(
                {**integer(0, MAX_AMOUNT_CENTS, "0: none, else at least start_cents"), "default": 0}
            ),
            "hold_s": optional({**integer(1, DAY_S), "default": 300}),
            "offer_next": optional({"type": "boolean", "default": True}),
        },
        closed=False,
    ),
    "OpenDraw": obj(
        {
            "prize": {
                "description": "a product of the room, or a coupon batch of one of the room's sales "
                "(one coupon per winner); product_id is looked at first",
                "oneOf": [
                    obj({"product_id": string()}, closed=False),
                    obj(
                        {"coupon_batch_id": string()},
                        {"sale_id": optional(string("the batch's sale; default: any of the room's"))},
                        closed=False,
                    ),
                ],
            },
            "winners": integer(1, 1000),
            "duration_s": integer(1, DAY_S),
        },
        {
            "keyword": optional(
                string(
                    "entered only by a comment containing it; " + TEXT_RULE.format(n=MAX_KEYWORD),
                    minLength=1,
                    maxLength=MAX_KEYWORD,
                )
            ),
            "signed_in": optional({"type": "boolean", "default": False}),
            "present_at_close": optional({"type": "boolean", "default": False}),
            "min_watch_s": optional({**integer(0, DAY_S, "at most duration_s"), "default": 0}),
            "claim_s": optional({**integer(1, 7 * DAY_S), "default": 600}),
        },
        closed=False,
    ),
    "OpenPoll": obj(
        {
            "question": string(
                TEXT_RULE.format(n=MAX_QUESTION_CHARS), minLength=1, maxLength=MAX_QUESTION_CHARS
            ),
            "options": array(
                string(TEXT_RULE.format(n=MAX_OPTION_CHARS), minLength=1, maxLength=MAX_OPTION_CHARS),
                minItems=MIN_OPTIONS,
                maxItems=MAX_OPTIONS,
            ),
            "duration_s": integer(1, DAY_S),
        },
        {"allow_change": optional({"type": "boolean", "default": True})},
        closed=False,
    ),
}

# -- operations -------------------------------------------------------------------------------


def errors(status: int, *codes: str) -> Schema:
    """A typed error response whose ``error.code`` is one of ``codes``."""
    return {
        "description": ", ".join(codes),
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [ref("Error")],
                    "properties": {"error": {"properties": {"code": {"enum": list(codes)}}}},
                }
            }
        },
    }


def ok(schema_name: str, status: int = 200, description: str = "") -> tuple[str, Schema]:
    return str(status), {
        "description": description or schema_name,
        "content": {"application/json": {"schema": ref(schema_name)}},
    }


DEFAULT_ERROR: Schema = {
    "description": "Any other refusal of docs/http-api.md#errors: 408 body_timeout, 413 "
    "body_too_large, 429 too_many_connections, 431 headers_too_large, 500 internal, 503 "
    "unavailable or server_busy, 405 method_not_allowed, 400 bad_request",
    "content": {"application/json": {"schema": ref("Error")}},
}

AUTH_ERRORS = {
    "401": errors(401, "token_missing", "token_invalid", "token_expired"),
    "403": errors(403, "wrong_room", "forbidden"),
}
BODY_ERRORS = {"400": errors(400, "bad_json", "missing_field", "invalid_field")}
#: Responses in components/responses, referenced by the operations that have them exactly.
SHARED = {"401": "Unauthorized", "403": "Forbidden"}
SHARED_RESPONSES = {"Unauthorized": AUTH_ERRORS["401"], "Forbidden": AUTH_ERRORS["403"]}
PARAM_ERRORS = {"400": errors(400, "invalid_field")}


def param(name: str, where: str = "path", schema: Schema | None = None, description: str = "") -> Schema:
    out: Schema = {"name": name, "in": where, "required": where == "path", "schema": schema or string()}
    if description:
        out["description"] = description
    return out


def op(
    summary: str,
    tag: str,
    responses: list[tuple[str, Schema]],
    refusals: dict[str, Schema] | None = None,
    body: str | None = None,
    who: str = "",
    public: bool = False,
    params: list[Schema] | None = None,
    description: str = "",
    operation_id: str = "",
) -> Schema:
    out: Schema = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    text = f"Who: {who}." if who else ""
    if description:
        text = f"{text} {description}".strip()
    if text:
        out["description"] = text
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    if public:
        out["security"] = []
    all_responses: dict[str, Schema] = dict(responses)
    all_responses.update(refusals or {})
    for status, name in SHARED.items():  # the common refusals, by reference
        if all_responses.get(status) == SHARED_RESPONSES[name]:
            all_responses[status] = {"$ref": f"#/components/responses/{name}"}
    all_responses["default"] = {"$ref": "#/components/responses/Error"}
    out["responses"] = dict(sorted(all_responses.items(), key=lambda kv: (kv[0] == "default", kv[0])))
    return out


def _merge(*parts: dict[str, Schema]) -> dict[str, Schema]:
    """Refusals of several kinds: the codes of one status together."""
    out: dict[str, Schema] = {}
    for part in parts:
        for status, response in part.items():
            if status in out:
                codes = _codes(out[status]) + [c for c in _codes(response) if c not in _codes(out[status])]
                out[status] = errors(int(status), *codes)
            else:
                out[status] = response
    return out


def _codes(response: Schema) -> list[str]:
    codes: list[str] = response["content"]["application/json"]["schema"]["properties"]["error"]["properties"][
        "code"
    ]["enum"]
    return codes


def refused(
    *extra: tuple[int, str], body: bool = False, auth: bool = True, params: bool = False
) -> dict[str, Schema]:
    parts: list[dict[str, Schema]] = []
    if body:
        parts.append(BODY_ERRORS)
    if params:
        parts.append(PARAM_ERRORS)
    if auth:
        parts.append(AUTH_ERRORS)
    by_status: dict[int, list[str]] = {}
    for status, code in extra:
        by_status.setdefault(status, []).append(code)
    parts.extend({str(s): errors(s, *codes)} for s, codes in by_status.items())
    return _merge(*parts)


ROOM = param("room_id", description="a room id")
SALE = param("sale_id")
STAFF = "a host or moderator of the room (or a * token)"
HOST = "a host of the room (or a * token)"
ROOM_404 = (404, "room_not_found")


def paths() -> dict[str, Schema]:
    page_limit = integer(1, MAX_ROOMS_PAGE)
    question_actions = {
        "answer": "the question answered: it leaves the queue (unpinned if pinned); question_answered",
        "pin": "the question pinned (the one before unpinned); question_pinned",
        "unpin": "the question unpinned; question_unpinned if it was pinned",
        "dismiss": "the question dismissed: it leaves the queue",
    }
    out: dict[str, Schema] = {
        "/healthz": {
            "get": op(
                "Liveness",
                "Operations",
                [ok("Health", description="while the process runs")],
                public=True,
                operation_id="healthz",
            )
        },
        "/readyz": {
            "get": op(
                "Readiness",
                "Operations",
                [
                    ok("Ready", description="Redis, the store of record and the background tasks answer"),
                    ok("Ready", 503, "unready: the failing check's value is error: <reason>"),
                ],
                public=True,
                operation_id="readyz",
            )
        },
        "/metrics": {
            "get": {
                **op("Prometheus metrics", "Operations", [], public=True, operation_id="metrics"),
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format (docs/http-api.md#operations)",
                        "content": {"text/plain": {"schema": string()}},
                    },
                    "default": {"$ref": "#/components/responses/Error"},
                },
            }
        },
        ROUTE: {
            "get": {
                **op(
                    "This document",
                    "Operations",
                    [],
                    public=True,
                    operation_id="openapi",
                    description="Cacheable: Cache-Control public with a max-age, an ETag, and 304 to "
                    "If-None-Match",
                ),
                "responses": {
                    "200": {
                        "description": "the OpenAPI 3.1 document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "304": {"description": "not modified (If-None-Match matched the ETag)"},
                    "default": {"$ref": "#/components/responses/Error"},
                },
            }
        },
        "/api/rooms": {
            "post": op(
                "Create a room",
                "Rooms",
                [ok("Room", 201)],
                refused((409, "room_exists"), (409, "limit_exceeded"), body=True),
                body="CreateRoom",
                who="a host",
                operation_id="createRoom",
            ),
            "get": op(
                "List rooms, a page at a time",
                "Rooms",
                [ok("RoomPage")],
                refused(params=True),
                who="a host or moderator; a token for one room lists that room only",
                description="Oldest first (creation time, then id). Ask again with after=<cursor> for "
                "the next page, or later for the rooms created since.",
                params=[
                    param(
                        "after",
                        "query",
                        description="a cursor (a room id) from an earlier answer; "
                        "absent or empty: from the first",
                    ),
                    param("limit", "query", {**page_limit, "default": DEFAULT_ROOMS_PAGE}),
                ],
                operation_id="listRooms",
            ),
        },
        "/api/rooms/{room_id}": {
            "parameters": [ROOM],
            "get": op(
                "A room with its products",
                "Rooms",
                [ok("RoomWithProducts")],
                refused(ROOM_404),
                who="any token of the room",
                operation_id="getRoom",
            ),
        },
        "/api/rooms/{room_id}/products": {
            "parameters": [ROOM],
            "post": op(
                "Add a product",
                "Products",
                [ok("Product", 201)],
                refused(ROOM_404, (409, "limit_exceeded"), body=True),
                body="AddProduct",
                who=HOST,
                operation_id="addProduct",
            ),
            "get": op(
                "The room's products, oldest first",
                "Products",
                [ok("ProductList")],
                refused(),
                who="any token of the room",
                operation_id="listProducts",
            ),
        },
        "/api/rooms/{room_id}/sales": {
            "parameters": [ROOM],
            "post": op(
                "Open a flash sale",
                "Sales",
                [ok("Sale", 201)],
                refused(ROOM_404, (404, "product_not_found"), (409, "limit_exceeded"), body=True),
                body="OpenSale",
                who=HOST,
                description="The room gets sale_opened (docs/protocol.md#flash-sale-events).",
                operation_id="openSale",
            ),
            "get": op(
                "Every sale of the room",
                "Sales",
                [ok("SaleList")],
                refused(),
                who=STAFF,
                operation_id="listSales",
            ),
        },
        "/api/sales/{sale_id}": {
            "parameters": [SALE],
            "get": op(
                "A sale",
                "Sales",
                [ok("SaleView")],
                refused((404, "unknown_sale")),
                who=STAFF,
                description="A sale over and settled whose Redis keys expired is answered from its "
                "record and the ledger.",
                operation_id="getSale",
            ),
        },
        "/api/sales/{sale_id}/stop": {
            "parameters": [SALE],
            "post": op(
                "Stop a sale: no new holds",
                "Sales",
                [ok("Sale")],
                refused((404, "unknown_sale"), (409, "already_ended"), (503, "frozen")),
                who=HOST,
                operation_id="stopSale",
            ),
        },
        "/api/sales/{sale_id}/stock": {
            "parameters": [SALE],
            "post": op(
                "Add stock",
                "Sales",
                [ok("Sale")],
                refused((404, "unknown_sale"), (409, "already_ended"), (503, "frozen"), body=True),
                body="AddStock",
                who=HOST,
                operation_id="addStock",
            ),
        },
        "/api/sales/{sale_id}/coupons": {
            "parameters": [SALE],
            "post": op(
                "Drop a batch of coupons",
                "Coupons",
                [ok("CouponBatchCreated", 201)],
                refused((404, "unknown_sale"), (409, "batch_exists"), (409, "already_ended"), body=True),
                body="DropCoupons",
                who=HOST,
                description="The room gets coupons_dropped.",
                operation_id="dropCoupons",
            ),
        },
        "/api/sales/{sale_id}/coupons/{batch_id}": {
            "parameters": [SALE, param("batch_id")],
            "get": op(
                "A coupon batch: coupons left",
                "Coupons",
                [ok("CouponBatch")],
                refused((404, "unknown_sale"), (404, "batch_not_found")),
                who=STAFF,
                operation_id="getCouponBatch",
            ),
        },
        "/api/sales/{sale_id}/teams/{code}": {
            "parameters": [SALE, param("code", description="a team's code")],
            "get": op(
                "A group-buy team",
                "Teams",
                [ok("Team")],
                refused((404, "unknown_sale"), (404, "team_not_found")),
                who=STAFF,
                operation_id="getTeam",
            ),
        },
        "/api/sales/{sale_id}/orders": {
            "parameters": [SALE],
            "get": op(
                "The sale's orders in the ledger, a page at a time",
                "Orders",
                [ok("OrderPage")],
                refused((404, "unknown_sale"), params=True),
                who=STAFF,
                description="In the order the ledger recorded them. Ask again with after=<cursor> for "
                "the next page, or later for the orders recorded since.",
                params=[
                    param(
                        "after",
                        "query",
                        {**integer(0, 2**62), "default": 0},
                        "a cursor from an earlier answer; absent: from the start",
                    ),
                    param("limit", "query", {**integer(1, MAX_ORDERS_PAGE), "default": DEFAULT_ORDERS_PAGE}),
                ],
                operation_id="listSaleOrders",
            ),
        },
        "/api/orders/{order_id}": {
            "parameters": [param("order_id")],
            "get": op(
                "An order from the ledger",
                "Orders",
                [ok("Order")],
                refused((404, "order_not_found"), (404, "unknown_sale")),
                who="the buyer, or a host or moderator of the room",
                description="Orders of sales, and of auctions won and prizes drawn (sale_id is then "
                "the auction's or draw's id).",
                operation_id="getOrder",
            ),
        },
        "/api/rooms/{room_id}/auctions": {
            "parameters": [ROOM],
            "post": op(
                "Open an auction",
                "Auctions",
                [ok("Auction", 201)],
                refused(ROOM_404, (404, "product_not_found"), (409, "limit_exceeded"), body=True),
                body="OpenAuction",
                who=HOST,
                description="The room gets auction_opened. Rules: docs/auctions.md.",
                operation_id="openAuction",
            ),
            "get": op(
                "Every auction of the room",
                "Auctions",
                [ok("AuctionList")],
                refused(),
                who=STAFF,
                operation_id="listAuctions",
            ),
        },
        "/api/rooms/{room_id}/auctions/{auction_id}": {
            "parameters": [ROOM, param("auction_id")],
            "get": op(
                "An auction in full, with its record",
                "Auctions",
                [ok("AuctionView")],
                refused((404, "auction_not_found")),
                who=STAFF,
                operation_id="getAuction",
            ),
        },
        "/api/rooms/{room_id}/auctions/{auction_id}/bids": {
            "parameters": [ROOM, param("auction_id")],
            "get": op(
                "Every accepted bid, in order",
                "Auctions",
                [ok("Bids")],
                refused((404, "auction_not_found")),
                who=STAFF,
                operation_id="listBids",
            ),
        },
        "/api/rooms/{room_id}/draws": {
            "parameters": [ROOM],
            "post": op(
                "Open a lucky draw",
                "Draws",
                [ok("Draw", 201)],
                refused(
                    ROOM_404,
                    (404, "product_not_found"),
                    (404, "batch_not_found"),
                    (409, "limit_exceeded"),
                    body=True,
                ),
                body="OpenDraw",
                who=STAFF,
                description="The room gets draw_opened. Rules: docs/draws.md.",
                operation_id="openDraw",
            ),
            "get": op(
                "Every draw of the room",
                "Draws",
                [ok("DrawList")],
                refused(),
                who=STAFF,
                operation_id="listDraws",
            ),
        },
        "/api/rooms/{room_id}/draws/{draw_id}": {
            "parameters": [ROOM, param("draw_id")],
            "get": op(
                "A draw, with its lists once closed",
                "Draws",
                [ok("DrawView")],
                refused((404, "draw_not_found")),
                who=STAFF,
                operation_id="getDraw",
            ),
        },
        "/api/rooms/{room_id}/draws/{draw_id}/verification": {
            "parameters": [ROOM, param("draw_id")],
            "get": {
                **op(
                    "A closed draw's proof, for anyone in the room",
                    "Draws",
                    [ok("DrawVerification")],
                    refused(ROOM_404, (404, "draw_not_found"), (409, "draw_open")),
                    who="any token of the room (viewers too); no token where the room admits guests "
                    "(allow_anonymous)",
                    description="What a viewer needs to recompute the winners (docs/draws.md).",
                    operation_id="getDrawVerification",
                ),
                "security": [{}, {"bearerAuth": []}],
            },
        },
        "/api/rooms/{room_id}/draws/{draw_id}/close": {
            "parameters": [ROOM, param("draw_id")],
            "post": op(
                "Close an open draw now",
                "Draws",
                [ok("DrawView", description="the draw, as the GET answers it")],
                refused((404, "draw_not_found")),
                who=STAFF,
                operation_id="closeDraw",
            ),
        },
        "/api/rooms/{room_id}/polls": {
            "parameters": [ROOM],
            "post": op(
                "Open a poll",
                "Polls",
                [ok("Poll", 201)],
                refused(ROOM_404, (409, "limit_exceeded"), body=True),
                body="OpenPoll",
                who=STAFF,
                description="The room gets poll_opened. Rules: docs/polls.md.",
                operation_id="openPoll",
            ),
            "get": op(
                "Every poll of the room, oldest first",
                "Polls",
                [ok("PollList")],
                refused(),
                who=STAFF,
                operation_id="listPolls",
            ),
        },
        "/api/rooms/{room_id}/polls/{poll_id}": {
            "parameters": [ROOM, param("poll_id")],
            "get": op(
                "A poll with its tallies",
                "Polls",
                [ok("Poll")],
                refused((404, "poll_not_found")),
                who=STAFF,
                operation_id="getPoll",
            ),
        },
        "/api/rooms/{room_id}/polls/{poll_id}/close": {
            "parameters": [ROOM, param("poll_id")],
            "post": op(
                "Close a poll now",
                "Polls",
                [ok("Poll", description="the closed poll with its final tallies")],
                refused((404, "poll_not_found"), (409, "poll_closed")),
                who=STAFF,
                description="The room gets poll_closed (once).",
                operation_id="closePoll",
            ),
        },
        "/api/rooms/{room_id}/questions": {
            "parameters": [ROOM],
            "get": op(
                "The ranked open question queue",
                "Questions",
                [ok("QuestionQueue")],
                refused(ROOM_404, params=True),
                who=STAFF,
                description="Upvotes descending, then asked_at_ms. Rules: docs/questions.md.",
                params=[param("limit", "query", {**integer(1, MAX_LISTED), "default": 100})],
                operation_id="listQuestions",
            ),
        },
    }
    for action, what in question_actions.items():
        out[f"/api/rooms/{{room_id}}/questions/{{question_id}}/{action}"] = {
            "parameters": [ROOM, param("question_id")],
            "post": op(
                f"{action.capitalize()} a question",
                "Questions",
                [ok("QuestionDecision", description=what)],
                refused(ROOM_404, (404, "question_not_found"), (409, "question_closed")),
                who=STAFF,
                description="The room gets the same events as the WebSocket command.",
                operation_id=f"{action}Question",
            ),
        }
    html = {"text/html": {"schema": string()}}
    out["/console"] = {
        "get": {
            **op("The host console (a browser page)", "Pages", [], public=True, operation_id="console"),
            "responses": {"200": {"description": "HTML (docs/pages.md)", "content": html}},
        }
    }
    out["/r/{room_id}"] = {
        "parameters": [ROOM],
        "get": {
            **op(
                "The viewer page of a room (a browser page)", "Pages", [], public=True, operation_id="viewer"
            ),
            "responses": {"200": {"description": "HTML (docs/pages.md)", "content": html}},
        },
    }
    out["/static/{file}"] = {
        "x-live-route": "/static/",
        "parameters": [param("file", description="a file of live/static (scripts, styles)")],
        "get": {
            **op("The pages' scripts and styles", "Pages", [], public=True, operation_id="static"),
            "responses": {
                "200": {"description": "the file (Cache-Control: no-cache)"},
                "404": errors(404, "not_found"),
            },
        },
    }
    out["/ws/rooms/{room_id}"] = {
        "x-live-route": "/ws/{tail}",
        "parameters": [ROOM],
        "get": {
            **op(
                "A room's WebSocket (docs/protocol.md)",
                "WebSocket",
                [],
                operation_id="roomSocket",
                description="An upgrade to the room's WebSocket, subprotocol live.v1.json or "
                "live.v1.msgpack. A token as Authorization: Bearer, or ?token= (browsers); none "
                "where the room admits guests. A refused handshake answers the JSON error body.",
                params=[
                    param("token", "query", description="a token, for clients that cannot set headers"),
                    param("last_seq", "query", integer(0), "resume after this seq (docs/protocol.md#resume)"),
                ],
            ),
            "security": [{}, {"bearerAuth": []}],
            "responses": {
                "101": {"description": "switching protocols: the WebSocket"},
                **_merge(
                    refused(ROOM_404, (404, "not_found"), (403, "banned"), params=True),
                    {
                        "429": errors(429, "too_many_connections"),
                        "503": errors(503, "server_full", "unavailable"),
                    },
                ),
                "default": {"$ref": "#/components/responses/Error"},
            },
        },
    }
    return out


def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "live HTTP API",
            "version": __version__,
            "summary": "Rooms, products, flash sales, group buys, coupons, orders and the interaction "
            "tools of a livestream-commerce server",
            "description": "Bodies and answers are JSON (UTF-8). Money is integer cents, times are ms "
            'since the epoch. Every refusal is {"error": {"code", "message"}} with a stable code '
            "(docs/http-api.md#errors). A field given the wrong JSON type is invalid_field (true is "
            "not an integer, 12.5 or 12.0 is not cents); an optional field given null takes its "
            "default; unknown fields are ignored. Viewers act over the WebSocket (docs/protocol.md). "
            "Every GET also answers HEAD.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "http://127.0.0.1:8080", "description": "live serve's default address"}],
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": name}
            for name in (
                "Operations",
                "Rooms",
                "Products",
                "Sales",
                "Coupons",
                "Teams",
                "Orders",
                "Auctions",
                "Draws",
                "Polls",
                "Questions",
                "Pages",
                "WebSocket",
            )
        ],
        "paths": paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "claims sub (user id), room (a room id or *), role (host, "
                    "moderator, viewer), exp; never read from the query string by the HTTP API",
                }
            },
            "responses": {"Error": DEFAULT_ERROR, **SHARED_RESPONSES},
            "schemas": {**SCHEMAS, **BODIES},
        },
    }


def render() -> str:
    return json.dumps(document(), ensure_ascii=False, indent=2) + "\n"


# -- the route --------------------------------------------------------------------------------


@cache
def _served() -> tuple[bytes, str]:
    body = PATH.read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def openapi(request: web.Request) -> web.Response:
    body, etag = _served()
    headers = {
        "Cache-Control": f"public, max-age={MAX_AGE_S}",
        "ETag": etag,
        "Access-Control-Allow-Origin": "*",  # public, no credentials: doc tools on other origins
        "X-Content-Type-Options": "nosniff",
    }
    if etag in (t.strip() for t in request.headers.get("If-None-Match", "").split(",")):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", charset="utf-8", headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_get(ROUTE, openapi)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        current = PATH.read_text(encoding="utf-8") if PATH.exists() else ""
        if current != text:
            print(f"{PATH} is not current: run python -m live.openapi", file=sys.stderr)
            return 1
        return 0
    PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
