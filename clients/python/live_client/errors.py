"""Typed errors: one class per error code of docs/protocol.md and docs/http-api.md.

Every refusal the server sends (a WebSocket ``error`` frame, a refused handshake, an HTTP error
body) is raised as the class of its ``code``; a code this version does not know is raised as
:class:`LiveError` itself. Each carries the server's ``code``, ``message`` and the whole error
object as ``data`` (``min_bid_cents`` of ``bid_too_low``, ``available`` of
``insufficient_stock``, ...), and for HTTP answers the ``status``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LiveError(Exception):
    """A refusal from the server (or, for the subclasses below that say so, from the client)."""

    #: The codes this class stands for (the first is its default code).
    codes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, code: str, message: str = "", data: dict[str, Any] | None = None, status: int | None = None
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.data: dict[str, Any] = dict(data or {})
        self.status = status


# -- the client's own ---------------------------------------------------------------------------


class ConnectionLost(LiveError):
    """The connection dropped after a command that is not safe to send twice (a comment, a host
    command) was sent and before its answer came: it may or may not have taken effect."""

    codes = ("connection_lost",)


class RequestTimeout(LiveError):
    """No answer within the request's timeout (the connection may have been down all along)."""

    codes = ("timeout",)


class Closed(LiveError):
    """The client was closed (``close()``, or the end of ``async with``) before the answer."""

    codes = ("closed",)


# -- authentication and access ------------------------------------------------------------------


class Unauthorized(LiveError):
    """401: no usable token. A client stops on it (it does not retry): get a fresh token."""

    codes = ("token_missing", "token_invalid", "cannot_sign")


class TokenExpired(Unauthorized):
    """The token expired (handshake 401, or close 4401 on an open connection)."""

    codes = ("token_expired",)


class Forbidden(LiveError):
    """403, or a viewer sending a staff command: the token's role may not do this."""

    codes = ("forbidden",)


class WrongRoom(Forbidden):
    codes = ("wrong_room",)


class Banned(Forbidden):
    """Banned from the room (handshake 403, close 4403, or an ``error`` frame). Not retried."""

    codes = ("banned",)


class LoginRequired(Forbidden):
    """An anonymous viewer tried to buy or bid."""

    codes = ("login_required", "sign_in_required")


class ProtectedUser(Forbidden):
    codes = ("protected_user",)


# -- not found ----------------------------------------------------------------------------------


class NotFound(LiveError):
    codes = ("not_found",)


class RoomNotFound(NotFound):
    codes = ("room_not_found",)


class ProductNotFound(NotFound):
    codes = ("product_not_found",)


class UnknownSale(NotFound):
    codes = ("unknown_sale",)


class HoldNotFound(NotFound):
    codes = ("hold_not_found",)


class OrderNotFound(NotFound):
    codes = ("order_not_found",)


class BatchNotFound(NotFound):
    codes = ("batch_not_found",)


class TeamNotFound(NotFound):
    codes = ("team_not_found",)


class AuctionNotFound(NotFound):
    codes = ("auction_not_found",)


class QuestionNotFound(NotFound):
    codes = ("question_not_found",)


class DrawNotFound(NotFound):
    codes = ("draw_not_found",)


class PollNotFound(NotFound):
    codes = ("poll_not_found",)


# -- bad requests -------------------------------------------------------------------------------


class BadRequest(LiveError):
    """The message or body was not understood: a bug in the caller (or in this client)."""

    codes = (
        "bad_json",
        "bad_msgpack",
        "bad_message",
        "bad_request",
        "wrong_framing",
        "unknown_type",
        "method_not_allowed",
        "body_too_large",
        "body_timeout",
        "headers_too_large",
    )


class MissingField(BadRequest):
    codes = ("missing_field",)


class InvalidField(BadRequest):
    codes = ("invalid_field",)


# -- retry later --------------------------------------------------------------------------------


class RetryLater(LiveError):
    """Not a decision: the same command may be sent again later (the client never does so by
    itself: a refused command is the caller's to retry)."""


class RateLimited(RetryLater):
    codes = ("rate_limited",)


class Unavailable(RetryLater):
    codes = ("unavailable", "server_busy", "server_full", "too_many_connections")


class Frozen(RetryLater):
    """An operator is repairing the sale; retry shortly."""

    codes = ("frozen",)


class InternalError(RetryLater):
    codes = ("internal",)


# -- chat ---------------------------------------------------------------------------------------


class ChatRefused(LiveError):
    """A comment (or a question) was refused."""


class CommentTooLong(ChatRefused):
    codes = ("comment_too_long",)


class BannedWords(ChatRefused):
    codes = ("banned_words",)


class Muted(ChatRefused):
    codes = ("muted",)


class SlowMode(ChatRefused):
    codes = ("slow_mode",)


# -- buying -------------------------------------------------------------------------------------


class BuyError(LiveError):
    """A buying command was refused; nothing was charged (or the payment was given back)."""


class SoldOut(BuyError):
    """No units left. Units may come back when holds expire: a new attempt is a new call (a
    new ``rid``)."""

    codes = ("sold_out",)


class InsufficientStock(BuyError):
    """Fewer units left than asked; ``available`` says how many there were."""

    codes = ("insufficient_stock",)

    @property
    def available(self) -> int | None:
        value = self.data.get("available")
        return value if isinstance(value, int) else None


class LimitReached(BuyError):
    """Held + bought + asked would pass the sale's ``per_user_limit``."""

    codes = ("limit_reached",)


class InvalidQuantity(BuyError):
    codes = ("invalid_quantity",)


class NotStarted(BuyError):
    codes = ("not_started",)


class SaleOver(BuyError):
    codes = ("ended", "already_ended")


class Duplicate(BuyError):
    """This ``rid`` was used with other fields (or by another command)."""

    codes = ("duplicate",)


class NotYourHold(BuyError):
    codes = ("not_your_hold",)


class HoldExpired(BuyError):
    codes = ("hold_expired",)


class AlreadyConfirmed(BuyError):
    codes = ("already_confirmed",)


class InTeam(BuyError):
    codes = ("in_team",)


class PaymentFailed(BuyError):
    codes = ("payment_failed",)


class AmountChanged(BuyError):
    codes = ("amount_changed",)


class CouponInvalid(BuyError):
    codes = ("coupon_invalid",)


class CouponsGone(BuyError):
    codes = ("coupons_gone",)


class NotGroupSale(BuyError):
    codes = ("not_group_sale",)


class TeamClosed(BuyError):
    codes = ("team_closed",)


class AlreadyInTeam(BuyError):
    codes = ("already_in_team",)


class TeamExists(BuyError):
    codes = ("team_exists",)


# -- auctions -----------------------------------------------------------------------------------


class AuctionError(LiveError):
    """A bid or an auction payment was refused."""


class AuctionOver(AuctionError):
    codes = ("auction_ended",)


class BidTooLow(AuctionError):
    """Below the start price or the leading bid + the increment; ``min_bid_cents`` says what
    would do."""

    codes = ("bid_too_low",)

    @property
    def min_bid_cents(self) -> int | None:
        value = self.data.get("min_bid_cents")
        return value if isinstance(value, int) else None


class InvalidAmount(AuctionError):
    codes = ("invalid_amount",)


class OwnAuction(AuctionError):
    codes = ("own_auction",)


class NotYourOffer(AuctionError):
    codes = ("not_your_offer",)


class OfferExpired(AuctionError):
    codes = ("offer_expired",)


# -- Q&A, draws, polls --------------------------------------------------------------------------


class InvalidText(ChatRefused):
    codes = ("invalid_text",)


class QueueFull(LiveError):
    codes = ("queue_full",)


class QuestionClosed(LiveError):
    codes = ("question_closed",)


class OwnQuestion(LiveError):
    codes = ("own_question",)


class DrawError(LiveError):
    """Entering a draw or claiming its prize was refused."""


class DrawOver(DrawError):
    codes = ("draw_closed",)


class DrawOpen(DrawError):
    codes = ("draw_open",)


class KeywordRequired(DrawError):
    codes = ("keyword_required",)


class DrawFull(DrawError):
    codes = ("draw_full",)


class NotAWinner(DrawError):
    codes = ("not_a_winner",)


class ClaimExpired(DrawError):
    codes = ("claim_expired",)


class PollError(LiveError):
    """A vote was refused."""


class PollOver(PollError):
    codes = ("poll_closed",)


class InvalidOption(PollError):
    codes = ("invalid_option",)


class AlreadyVoted(PollError):
    """The poll does not allow changing a vote; ``option`` is the vote given."""

    codes = ("already_voted",)


# -- host HTTP API ------------------------------------------------------------------------------


class Conflict(LiveError):
    codes = ("room_exists", "batch_exists")


class LimitExceeded(Conflict):
    codes = ("limit_exceeded",)


def _registry() -> dict[str, type[LiveError]]:
    found: dict[str, type[LiveError]] = {}
    todo: list[type[LiveError]] = [LiveError]
    while todo:
        cls = todo.pop()
        for code in cls.__dict__.get("codes", ()):
            assert code not in found, f"{code} is claimed twice"
            found[code] = cls
        todo.extend(cls.__subclasses__())
    return found


#: Every error code this client knows, with its class.
ERRORS: dict[str, type[LiveError]] = _registry()


def error_from(obj: Any, status: int | None = None) -> LiveError:
    """The typed error for an error object (``{"code", "message", ...}``) from the server."""
    if not isinstance(obj, dict):
        return LiveError(f"http_{status}" if status else "unknown", str(obj)[:500], None, status)
    code = obj.get("code")
    code = code if isinstance(code, str) and code else (f"http_{status}" if status else "unknown")
    message = obj.get("message")
    data = {k: v for k, v in obj.items() if k not in ("type", "code", "message", "rid")}
    return ERRORS.get(code, LiveError)(code, message if isinstance(message, str) else "", data, status)
