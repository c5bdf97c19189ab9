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

    codes: ClassVar[tuple[str, ...]] = ("connection_lost",)


class RequestTimeout(LiveError):
    """No answer within the request's timeout (the connection may have been down all along)."""

    codes: ClassVar[tuple[str, ...]] = ("timeout",)


class Closed(LiveError):
    """The client was closed (``close()``, or the end of ``async with``) before the answer."""

    codes: ClassVar[tuple[str, ...]] = ("closed",)


# -- authentication and access ------------------------------------------------------------------


class Unauthorized(LiveError):
    """401: no usable token. A client stops on it (it does not retry): get a fresh token."""

    codes: ClassVar[tuple[str, ...]] = ("token_missing", "token_invalid", "cannot_sign")


class TokenExpired(Unauthorized):
    """The token expired (handshake 401, or close 4401 on an open connection)."""

    codes: ClassVar[tuple[str, ...]] = ("token_expired",)


class Forbidden(LiveError):
    """403, or a viewer sending a staff command: the token's role may not do this."""

    codes: ClassVar[tuple[str, ...]] = ("forbidden",)


class WrongRoom(Forbidden):
    codes: ClassVar[tuple[str, ...]] = ("wrong_room",)


class Banned(Forbidden):
    """Banned from the room (handshake 403, close 4403, or an ``error`` frame). Not retried."""

    codes: ClassVar[tuple[str, ...]] = ("banned",)


class LoginRequired(Forbidden):
    """An anonymous viewer tried to buy or bid."""

    codes: ClassVar[tuple[str, ...]] = ("login_required", "sign_in_required")


class ProtectedUser(Forbidden):
    codes: ClassVar[tuple[str, ...]] = ("protected_user",)


# -- not found ----------------------------------------------------------------------------------


class NotFound(LiveError):
    codes: ClassVar[tuple[str, ...]] = ("not_found",)


class RoomNotFound(NotFound):
    codes: ClassVar[tuple[str, ...]] = ("room_not_found",)


class ProductNotFound(NotFound):
    codes: ClassVar[tuple[str, ...]] = ("product_not_found",)


class UnknownSale(NotFound):
    codes: ClassVar[tuple[str, ...]] = ("unknown_sale",)


class HoldNotFound(NotFound):
    codes: ClassVar[tuple[str, ...]] = ("hold_not_found",)


class OrderNotFound(NotFound):
    codes: ClassVar[tuple[str, ...]] = ("order_not_found",)


class BatchNotFound(NotFound):
    codes: ClassVar[tuple[str, ...]] = ("batch_not_found",)


class TeamNotFound(NotFound):
    codes: ClassVar[tuple[str, ...]] = ("team_not_found",)


class AuctionNotFound(NotFound):
    codes: ClassVar[tuple[str, ...]] = ("auction_not_found",)


class QuestionNotFound(NotFound):
    codes: ClassVar[tuple[str, ...]] = ("question_not_found",)


class DrawNotFound(NotFound):
    codes: ClassVar[tuple[str, ...]] = ("draw_not_found",)


class PollNotFound(NotFound):
    codes: ClassVar[tuple[str, ...]] = ("poll_not_found",)


# -- bad requests -------------------------------------------------------------------------------


class BadRequest(LiveError):
    """The message or body was not understood: a bug in the caller (or in this client)."""

    codes: ClassVar[tuple[str, ...]] = (
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
    codes: ClassVar[tuple[str, ...]] = ("missing_field",)


class InvalidField(BadRequest):
    codes: ClassVar[tuple[str, ...]] = ("invalid_field",)


# -- retry later --------------------------------------------------------------------------------


class RetryLater(LiveError):
    """Not a decision: the same command may be sent again later (the client never does so by
    itself: a refused command is the caller's to retry)."""


class RateLimited(RetryLater):
    codes: ClassVar[tuple[str, ...]] = ("rate_limited",)


class Unavailable(RetryLater):
    codes: ClassVar[tuple[str, ...]] = ("unavailable", "server_busy", "server_full", "too_many_connections")


class Frozen(RetryLater):
    """An operator is repairing the sale; retry shortly."""

    codes: ClassVar[tuple[str, ...]] = ("frozen",)


class InternalError(RetryLater):
    codes: ClassVar[tuple[str, ...]] = ("internal",)


# -- chat ---------------------------------------------------------------------------------------


class ChatRefused(LiveError):
    """A comment (or a question) was refused."""


class CommentTooLong(ChatRefused):
    codes: ClassVar[tuple[str, ...]] = ("comment_too_long",)


class BannedWords(ChatRefused):
    codes: ClassVar[tuple[str, ...]] = ("banned_words",)


class Muted(ChatRefused):
    codes: ClassVar[tuple[str, ...]] = ("muted",)


class SlowMode(ChatRefused):
    codes: ClassVar[tuple[str, ...]] = ("slow_mode",)


# -- buying -------------------------------------------------------------------------------------


class BuyError(LiveError):
    """A buying command was refused; nothing was charged (or the payment was given back)."""


class SoldOut(BuyError):
    """No units left. Units may come back when holds expire: a new attempt is a new call (a
    new ``rid``)."""

    codes: ClassVar[tuple[str, ...]] = ("sold_out",)


class InsufficientStock(BuyError):
    """Fewer units left than asked; ``available`` says how many there were."""

    codes: ClassVar[tuple[str, ...]] = ("insufficient_stock",)

    @property
    def available(self) -> int | None:
        value = self.data.get("available")
        return value if isinstance(value, int) else None


class LimitReached(BuyError):
    """Held + bought + asked would pass the sale's ``per_user_limit``."""

    codes: ClassVar[tuple[str, ...]] = ("limit_reached",)


class InvalidQuantity(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("invalid_quantity",)


class NotStarted(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("not_started",)


class SaleOver(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("ended", "already_ended")


class Duplicate(BuyError):
    """This ``rid`` was used with other fields (or by another command)."""

    codes: ClassVar[tuple[str, ...]] = ("duplicate",)


class NotYourHold(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("not_your_hold",)


class HoldExpired(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("hold_expired",)


class AlreadyConfirmed(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("already_confirmed",)


class InTeam(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("in_team",)


class PaymentFailed(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("payment_failed",)


class AmountChanged(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("amount_changed",)


class CouponInvalid(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("coupon_invalid",)


class CouponsGone(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("coupons_gone",)


class NotGroupSale(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("not_group_sale",)


class TeamClosed(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("team_closed",)


class AlreadyInTeam(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("already_in_team",)


class TeamExists(BuyError):
    codes: ClassVar[tuple[str, ...]] = ("team_exists",)


# -- auctions -----------------------------------------------------------------------------------


class AuctionError(LiveError):
    """A bid or an auction payment was refused."""


class AuctionOver(AuctionError):
    codes: ClassVar[tuple[str, ...]] = ("auction_ended",)


class BidTooLow(AuctionError):
    """Below the start price or the leading bid + the increment; ``min_bid_cents`` says what
    would do."""

    codes: ClassVar[tuple[str, ...]] = ("bid_too_low",)

    @property
    def min_bid_cents(self) -> int | None:
        value = self.data.get("min_bid_cents")
        return value if isinstance(value, int) else None


class InvalidAmount(AuctionError):
    codes: ClassVar[tuple[str, ...]] = ("invalid_amount",)


class OwnAuction(AuctionError):
    codes: ClassVar[tuple[str, ...]] = ("own_auction",)


class NotYourOffer(AuctionError):
    codes: ClassVar[tuple[str, ...]] = ("not_your_offer",)


class OfferExpired(AuctionError):
    codes: ClassVar[tuple[str, ...]] = ("offer_expired",)


# -- Q&A, draws, polls --------------------------------------------------------------------------


class InvalidText(ChatRefused):
    codes: ClassVar[tuple[str, ...]] = ("invalid_text",)


class QueueFull(LiveError):
    codes: ClassVar[tuple[str, ...]] = ("queue_full",)


class QuestionClosed(LiveError):
    codes: ClassVar[tuple[str, ...]] = ("question_closed",)


class OwnQuestion(LiveError):
    codes: ClassVar[tuple[str, ...]] = ("own_question",)


class DrawError(LiveError):
    """Entering a draw or claiming its prize was refused."""


class DrawOver(DrawError):
    codes: ClassVar[tuple[str, ...]] = ("draw_closed",)


class DrawOpen(DrawError):
    codes: ClassVar[tuple[str, ...]] = ("draw_open",)


class KeywordRequired(DrawError):
    codes: ClassVar[tuple[str, ...]] = ("keyword_required",)


class DrawFull(DrawError):
    codes: ClassVar[tuple[str, ...]] = ("draw_full",)


class NotAWinner(DrawError):
    codes: ClassVar[tuple[str, ...]] = ("not_a_winner",)


class ClaimExpired(DrawError):
    codes: ClassVar[tuple[str, ...]] = ("claim_expired",)


class PollError(LiveError):
    """A vote was refused."""


class PollOver(PollError):
    codes: ClassVar[tuple[str, ...]] = ("poll_closed",)


class InvalidOption(PollError):
    codes: ClassVar[tuple[str, ...]] = ("invalid_option",)


class AlreadyVoted(PollError):
    """The poll does not allow changing a vote; ``option`` is the vote given."""

    codes: ClassVar[tuple[str, ...]] = ("already_voted",)


# -- host HTTP API ------------------------------------------------------------------------------


class Conflict(LiveError):
    codes: ClassVar[tuple[str, ...]] = ("room_exists", "batch_exists")


class LimitExceeded(Conflict):
    codes: ClassVar[tuple[str, ...]] = ("limit_exceeded",)


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
