// live-client: a room's WebSocket (docs/protocol.md) and the host HTTP API (docs/http-api.md)
// for browsers and Node 20+, with no dependencies: one ES module.
//
// RoomClient connects (JSON or MessagePack framing), authenticates with its first message (the
// token is in no URL), keeps the welcome snapshot, and reconnects by itself: exponential
// backoff with jitter, at least the retry_ms of a 1001 close, resuming with last_seq and
// dropping events it has already delivered. It stops with a typed error on what retrying
// cannot fix (a 4401, 4403 or 4404 close, or the error frame before it). Commands carry a rid;
// the ones the server decides once per rid (buying, bids, claims, votes, ...) are sent again
// with the same rid when the connection drops before their answer, so a purchase happens once
// however the network behaves. A refusal is never sent again.
//
// The same model as the Python client (clients/python/live_client): the same error classes by
// code, the same retry rules. This file is also served to the pages as /static/live-client.js
// (a copy kept identical by tests/test_js_client.py).

// -- MessagePack (the subset the protocol uses: nil, bool, int, float, str, bin, array, map) -----

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

/** Encode a value as MessagePack (maps from plain objects; integers as the smallest int). */
export function packMsgpack(value) {
  const out = new Packer();
  out.pack(value, 0);
  return out.result();
}

/** Decode one MessagePack value; throws a TypeError on truncated or invalid input. */
export function unpackMsgpack(bytes) {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const reader = new Unpacker(view);
  const value = reader.unpack(0);
  if (reader.pos !== view.length) throw new TypeError("msgpack: extra bytes after the value");
  return value;
}

const MAX_DEPTH = 64;

class Packer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
  }

  result() {
    return this.buf.slice(0, this.pos);
  }

  reserve(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.buf.subarray(0, this.pos));
    this.buf = bigger;
    this.view = new DataView(bigger.buffer);
  }

  byte(b) {
    this.reserve(1);
    this.buf[this.pos++] = b;
  }

  bytes(data) {
    this.reserve(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
  }

  head(small, fixMask, fixMax, c8, c16, c32, n) {
    if (small && n <= fixMax) this.byte(fixMask | n);
    else if (c8 !== null && n < 0x100) this.bytes([c8, n]);
    else if (n < 0x10000) {
      this.reserve(3);
      this.buf[this.pos] = c16;
      this.view.setUint16(this.pos + 1, n);
      this.pos += 3;
    } else {
      this.reserve(5);
      this.buf[this.pos] = c32;
      this.view.setUint32(this.pos + 1, n);
      this.pos += 5;
    }
  }

  pack(value, depth) {
    if (depth > MAX_DEPTH) throw new TypeError("msgpack: nested too deep");
    if (value === null || value === undefined) this.byte(0xc0);
    else if (value === false) this.byte(0xc2);
    else if (value === true) this.byte(0xc3);
    else if (typeof value === "number") this.number(value);
    else if (typeof value === "bigint") this.bigint(value);
    else if (typeof value === "string") {
      const data = textEncoder.encode(value);
      this.head(true, 0xa0, 31, 0xd9, 0xda, 0xdb, data.length);
      this.bytes(data);
    } else if (value instanceof Uint8Array || value instanceof ArrayBuffer) {
      const data = value instanceof Uint8Array ? value : new Uint8Array(value);
      this.head(false, 0, 0, 0xc4, 0xc5, 0xc6, data.length);
      this.bytes(data);
    } else if (Array.isArray(value)) {
      this.head(true, 0x90, 15, null, 0xdc, 0xdd, value.length);
      for (const item of value) this.pack(item, depth + 1);
    } else if (typeof value === "object") {
      const entries = Object.entries(value).filter(([, v]) => v !== undefined);
      this.head(true, 0x80, 15, null, 0xde, 0xdf, entries.length);
      for (const [k, v] of entries) {
        this.pack(k, depth + 1);
        this.pack(v, depth + 1);
      }
    } else throw new TypeError(`msgpack: cannot encode a ${typeof value}`);
  }

  number(n) {
    if (Number.isInteger(n) && Number.isSafeInteger(n)) {
      if (n >= 0 && n < 0x80) return this.byte(n);
      if (n < 0 && n >= -32) return this.byte(0xe0 | (n + 32));
      this.reserve(9);
      const v = this.view;
      const p = this.pos;
      if (n >= 0) {
        if (n < 0x100) (this.buf[p] = 0xcc), v.setUint8(p + 1, n), (this.pos += 2);
        else if (n < 0x10000) (this.buf[p] = 0xcd), v.setUint16(p + 1, n), (this.pos += 3);
        else if (n < 0x100000000) (this.buf[p] = 0xce), v.setUint32(p + 1, n), (this.pos += 5);
        else (this.buf[p] = 0xcf), v.setBigUint64(p + 1, BigInt(n)), (this.pos += 9);
      } else if (n >= -0x80) (this.buf[p] = 0xd0), v.setInt8(p + 1, n), (this.pos += 2);
      else if (n >= -0x8000) (this.buf[p] = 0xd1), v.setInt16(p + 1, n), (this.pos += 3);
      else if (n >= -0x80000000) (this.buf[p] = 0xd2), v.setInt32(p + 1, n), (this.pos += 5);
      else (this.buf[p] = 0xd3), v.setBigInt64(p + 1, BigInt(n)), (this.pos += 9);
      return;
    }
    this.reserve(9);
    this.buf[this.pos] = 0xcb;
    this.view.setFloat64(this.pos + 1, n);
    this.pos += 9;
  }

  bigint(n) {
    if (n < -(2n ** 63n) || n >= 2n ** 64n) throw new TypeError("msgpack: integer out of range");
    this.reserve(9);
    if (n >= 0n) {
      this.buf[this.pos] = 0xcf;
      this.view.setBigUint64(this.pos + 1, n);
    } else {
      this.buf[this.pos] = 0xd3;
      this.view.setBigInt64(this.pos + 1, n);
    }
    this.pos += 9;
  }
}

class Unpacker {
  constructor(bytes) {
    this.buf = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  need(n) {
    if (this.pos + n > this.buf.length) throw new TypeError("msgpack: truncated");
    const at = this.pos;
    this.pos += n;
    return at;
  }

  /** A 64-bit integer as a number when it is safe, else as a BigInt (never a silent rounding). */
  wide(big) {
    return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
  }

  unpack(depth) {
    if (depth > MAX_DEPTH) throw new TypeError("msgpack: nested too deep");
    const b = this.buf[this.need(1)];
    if (b < 0x80) return b;
    if (b >= 0xe0) return b - 0x100;
    if (b >= 0xa0 && b <= 0xbf) return this.str(b & 0x1f);
    if (b >= 0x90 && b <= 0x9f) return this.array(b & 0x0f, depth);
    if (b >= 0x80 && b <= 0x8f) return this.map(b & 0x0f, depth);
    const v = this.view;
    switch (b) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return this.bin(v.getUint8(this.need(1)));
      case 0xc5:
        return this.bin(v.getUint16(this.need(2)));
      case 0xc6:
        return this.bin(v.getUint32(this.need(4)));
      case 0xca:
        return v.getFloat32(this.need(4));
      case 0xcb:
        return v.getFloat64(this.need(8));
      case 0xcc:
        return v.getUint8(this.need(1));
      case 0xcd:
        return v.getUint16(this.need(2));
      case 0xce:
        return v.getUint32(this.need(4));
      case 0xcf:
        return this.wide(v.getBigUint64(this.need(8)));
      case 0xd0:
        return v.getInt8(this.need(1));
      case 0xd1:
        return v.getInt16(this.need(2));
      case 0xd2:
        return v.getInt32(this.need(4));
      case 0xd3:
        return this.wide(v.getBigInt64(this.need(8)));
      case 0xd9:
        return this.str(v.getUint8(this.need(1)));
      case 0xda:
        return this.str(v.getUint16(this.need(2)));
      case 0xdb:
        return this.str(v.getUint32(this.need(4)));
      case 0xdc:
        return this.array(v.getUint16(this.need(2)), depth);
      case 0xdd:
        return this.array(v.getUint32(this.need(4)), depth);
      case 0xde:
        return this.map(v.getUint16(this.need(2)), depth);
      case 0xdf:
        return this.map(v.getUint32(this.need(4)), depth);
      default:
        throw new TypeError(`msgpack: unsupported type byte 0x${b.toString(16)}`);
    }
  }

  str(n) {
    const at = this.need(n);
    try {
      return textDecoder.decode(this.buf.subarray(at, at + n));
    } catch (error) {
      throw new TypeError("msgpack: a string that is not UTF-8");
    }
  }

  bin(n) {
    const at = this.need(n);
    return this.buf.slice(at, at + n);
  }

  array(n, depth) {
    if (n > this.buf.length - this.pos) throw new TypeError("msgpack: truncated");
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.unpack(depth + 1);
    return out;
  }

  map(n, depth) {
    if (n * 2 > this.buf.length - this.pos) throw new TypeError("msgpack: truncated");
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = this.unpack(depth + 1);
      if (typeof key !== "string") throw new TypeError("msgpack: a map key that is not a string");
      // defineProperty: a "__proto__" key is data, never the object's prototype
      Object.defineProperty(out, key, { value: this.unpack(depth + 1), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
}

// -- typed errors: one class per error code of docs/protocol.md and docs/http-api.md ---------------

/**
 * A refusal from the server (or, for the client's own classes, from the client): `code`, the
 * server's `message`, the error's other fields as `data` (`min_bid_cents` of `bid_too_low`,
 * `available` of `insufficient_stock`, ...), and `status` for HTTP answers.
 */
export class LiveError extends Error {
  static codes = [];

  constructor(code, message = "", data = {}, status = null) {
    super(message ? `${code}: ${message}` : code);
    this.name = new.target.name;
    this.code = code;
    this.serverMessage = message;
    this.data = { ...data };
    this.status = status;
  }
}

// the client's own
/** The connection dropped after a command that is not safe to send twice was sent and before its answer: it may or may not have taken effect. */
export class ConnectionLost extends LiveError {
  static codes = ["connection_lost"];
}
/** No answer within the request's timeout. */
export class RequestTimeout extends LiveError {
  static codes = ["timeout"];
}
/** The client was closed before the answer. */
export class Closed extends LiveError {
  static codes = ["closed"];
}
// authentication and access
/** 401: no usable token. A client stops on it (it does not retry): get a fresh token. */
export class Unauthorized extends LiveError {
  static codes = ["token_missing", "token_invalid", "cannot_sign"];
}
export class TokenExpired extends Unauthorized {
  static codes = ["token_expired"];
}
/** 403: this user may not do that (or come in). */
export class Forbidden extends LiveError {
  static codes = ["forbidden"];
}
export class WrongRoom extends Forbidden {
  static codes = ["wrong_room"];
}
export class Banned extends Forbidden {
  static codes = ["banned"];
}
export class LoginRequired extends Forbidden {
  static codes = ["login_required", "sign_in_required"];
}
export class ProtectedUser extends Forbidden {
  static codes = ["protected_user"];
}
// not found
export class NotFound extends LiveError {
  static codes = ["not_found"];
}
export class RoomNotFound extends NotFound {
  static codes = ["room_not_found"];
}
export class ProductNotFound extends NotFound {
  static codes = ["product_not_found"];
}
export class UnknownSale extends NotFound {
  static codes = ["unknown_sale"];
}
export class HoldNotFound extends NotFound {
  static codes = ["hold_not_found"];
}
export class OrderNotFound extends NotFound {
  static codes = ["order_not_found"];
}
export class BatchNotFound extends NotFound {
  static codes = ["batch_not_found"];
}
export class TeamNotFound extends NotFound {
  static codes = ["team_not_found"];
}
export class AuctionNotFound extends NotFound {
  static codes = ["auction_not_found"];
}
export class QuestionNotFound extends NotFound {
  static codes = ["question_not_found"];
}
export class DrawNotFound extends NotFound {
  static codes = ["draw_not_found"];
}
export class PollNotFound extends NotFound {
  static codes = ["poll_not_found"];
}
/** The message or body was not understood: a bug in the caller (or in this client). */
export class BadRequest extends LiveError {
  static codes = ["bad_json", "bad_msgpack", "bad_message", "bad_request", "wrong_framing", "unknown_type", "method_not_allowed", "body_too_large", "body_timeout", "headers_too_large"];
}
export class MissingField extends BadRequest {
  static codes = ["missing_field"];
}
export class InvalidField extends BadRequest {
  static codes = ["invalid_field"];
}
/** Not a decision: the same command may be sent again later (the client never does so by itself: a refused command is the caller's to retry). */
export class RetryLater extends LiveError {}
export class RateLimited extends RetryLater {
  static codes = ["rate_limited"];
}
export class Unavailable extends RetryLater {
  static codes = ["unavailable", "server_busy", "server_full", "too_many_connections"];
}
/** An operator is repairing the sale; retry shortly. */
export class Frozen extends RetryLater {
  static codes = ["frozen"];
}
export class InternalError extends RetryLater {
  static codes = ["internal"];
}
/** A comment (or a question) was refused. */
export class ChatRefused extends LiveError {}
export class CommentTooLong extends ChatRefused {
  static codes = ["comment_too_long"];
}
export class BannedWords extends ChatRefused {
  static codes = ["banned_words"];
}
export class Muted extends ChatRefused {
  static codes = ["muted"];
}
export class SlowMode extends ChatRefused {
  static codes = ["slow_mode"];
}
/** A buying command was refused; nothing was charged (or the payment was given back). */
export class BuyError extends LiveError {}
/** No units left. Units may come back when holds expire: a new attempt is a new call (a new `rid`). */
export class SoldOut extends BuyError {
  static codes = ["sold_out"];
}
/** Fewer units left than asked; `available` says how many there were. */
export class InsufficientStock extends BuyError {
  static codes = ["insufficient_stock"];
}
/** Held + bought + asked would pass the sale's `per_user_limit`. */
export class LimitReached extends BuyError {
  static codes = ["limit_reached"];
}
export class InvalidQuantity extends BuyError {
  static codes = ["invalid_quantity"];
}
export class NotStarted extends BuyError {
  static codes = ["not_started"];
}
export class SaleOver extends BuyError {
  static codes = ["ended", "already_ended"];
}
/** This `rid` was used with other fields (or by another command). */
export class Duplicate extends BuyError {
  static codes = ["duplicate"];
}
export class NotYourHold extends BuyError {
  static codes = ["not_your_hold"];
}
export class HoldExpired extends BuyError {
  static codes = ["hold_expired"];
}
export class AlreadyConfirmed extends BuyError {
  static codes = ["already_confirmed"];
}
export class InTeam extends BuyError {
  static codes = ["in_team"];
}
export class PaymentFailed extends BuyError {
  static codes = ["payment_failed"];
}
export class AmountChanged extends BuyError {
  static codes = ["amount_changed"];
}
export class CouponInvalid extends BuyError {
  static codes = ["coupon_invalid"];
}
export class CouponsGone extends BuyError {
  static codes = ["coupons_gone"];
}
export class NotGroupSale extends BuyError {
  static codes = ["not_group_sale"];
}
export class TeamClosed extends BuyError {
  static codes = ["team_closed"];
}
export class AlreadyInTeam extends BuyError {
  static codes = ["already_in_team"];
}
export class TeamExists extends BuyError {
  static codes = ["team_exists"];
}
/** A bid or an auction payment was refused. */
export class AuctionError extends LiveError {}
export class AuctionOver extends AuctionError {
  static codes = ["auction_ended"];
}
/** Below the start price or the leading bid + the increment; `min_bid_cents` says what would do. */
export class BidTooLow extends AuctionError {
  static codes = ["bid_too_low"];
}
export class InvalidAmount extends AuctionError {
  static codes = ["invalid_amount"];
}
export class OwnAuction extends AuctionError {
  static codes = ["own_auction"];
}
export class NotYourOffer extends AuctionError {
  static codes = ["not_your_offer"];
}
export class OfferExpired extends AuctionError {
  static codes = ["offer_expired"];
}
export class InvalidText extends ChatRefused {
  static codes = ["invalid_text"];
}
export class QueueFull extends LiveError {
  static codes = ["queue_full"];
}
export class QuestionClosed extends LiveError {
  static codes = ["question_closed"];
}
export class OwnQuestion extends LiveError {
  static codes = ["own_question"];
}
/** Entering a draw or claiming its prize was refused. */
export class DrawError extends LiveError {}
export class DrawOver extends DrawError {
  static codes = ["draw_closed"];
}
export class DrawOpen extends DrawError {
  static codes = ["draw_open"];
}
export class KeywordRequired extends DrawError {
  static codes = ["keyword_required"];
}
export class DrawFull extends DrawError {
  static codes = ["draw_full"];
}
export class NotAWinner extends DrawError {
  static codes = ["not_a_winner"];
}
export class ClaimExpired extends DrawError {
  static codes = ["claim_expired"];
}
/** A vote was refused. */
export class PollError extends LiveError {}
export class PollOver extends PollError {
  static codes = ["poll_closed"];
}
export class InvalidOption extends PollError {
  static codes = ["invalid_option"];
}
/** The poll does not allow changing a vote; `option` is the vote given. */
export class AlreadyVoted extends PollError {
  static codes = ["already_voted"];
}
export class Conflict extends LiveError {
  static codes = ["room_exists", "batch_exists"];
}
export class LimitExceeded extends Conflict {
  static codes = ["limit_exceeded"];
}

/** Every error class, for the code registry. */
const ERROR_CLASSES = [
  LiveError, ConnectionLost, RequestTimeout, Closed, Unauthorized, TokenExpired, Forbidden,
  WrongRoom, Banned, LoginRequired, ProtectedUser, NotFound, RoomNotFound, ProductNotFound,
  UnknownSale, HoldNotFound, OrderNotFound, BatchNotFound, TeamNotFound, AuctionNotFound,
  QuestionNotFound, DrawNotFound, PollNotFound, BadRequest, MissingField, InvalidField, RetryLater,
  RateLimited, Unavailable, Frozen, InternalError, ChatRefused, CommentTooLong, BannedWords, Muted,
  SlowMode, BuyError, SoldOut, InsufficientStock, LimitReached, InvalidQuantity, NotStarted,
  SaleOver, Duplicate, NotYourHold, HoldExpired, AlreadyConfirmed, InTeam, PaymentFailed,
  AmountChanged, CouponInvalid, CouponsGone, NotGroupSale, TeamClosed, AlreadyInTeam, TeamExists,
  AuctionError, AuctionOver, BidTooLow, InvalidAmount, OwnAuction, NotYourOffer, OfferExpired,
  InvalidText, QueueFull, QuestionClosed, OwnQuestion, DrawError, DrawOver, DrawOpen,
  KeywordRequired, DrawFull, NotAWinner, ClaimExpired, PollError, PollOver, InvalidOption,
  AlreadyVoted, Conflict, LimitExceeded,
];

/** Every error code this client knows, with its class. */
export const ERRORS = new Map();
for (const cls of ERROR_CLASSES) {
  for (const code of Object.hasOwn(cls, "codes") ? cls.codes : []) {
    if (ERRORS.has(code)) throw new Error(`${code} is claimed twice`);
    ERRORS.set(code, cls);
  }
}

/** The typed error for an error object (`{code, message, ...}`) from the server. */
export function errorFrom(obj, status = null) {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    return new LiveError(status ? `http_${status}` : "unknown", String(obj).slice(0, 500), {}, status);
  }
  const code = typeof obj.code === "string" && obj.code ? obj.code : status ? `http_${status}` : "unknown";
  const data = {};
  for (const [k, v] of Object.entries(obj)) if (!["type", "code", "message", "rid"].includes(k)) data[k] = v;
  const Kind = ERRORS.get(code) || LiveError;
  return new Kind(code, typeof obj.message === "string" ? obj.message : "", data, status);
}

// -- argument checks: a bad argument throws at once, nothing is sent --------------------------------

const MAX_INT = Number.MAX_SAFE_INTEGER;

function checkInt(name, value, lo, hi = MAX_INT) {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TypeError(`${name} must be an integer, not ${value === null ? "null" : typeof value}`);
  }
  if (value < lo || value > hi) throw new RangeError(`${name} must be ${lo} to ${hi}, not ${value}`);
  return value;
}

function checkText(name, value) {
  if (typeof value !== "string") throw new TypeError(`${name} must be a string, not ${typeof value}`);
  if (!value.trim()) throw new RangeError(`${name} must not be empty`);
  return value;
}

function checkId(name, value) {
  if (typeof value !== "string") throw new TypeError(`${name} must be a string, not ${typeof value}`);
  if (!value) throw new RangeError(`${name} must not be empty`);
  return value;
}

function checkRid(value) {
  if (value === undefined || value === null) return null;
  if (typeof value !== "string") throw new TypeError(`rid must be a string, not ${typeof value}`);
  if (value.length < 1 || value.length > 64) throw new RangeError("rid must be 1 to 64 characters");
  return value;
}

// -- the room's WebSocket -------------------------------------------------------------------------

export const SUBPROTOCOLS = { json: "live.v1.json", msgpack: "live.v1.msgpack" };
/** Close codes retrying cannot fix: [the default error, the base class a reason's code must be of]. */
const FINAL_CLOSES = new Map([
  [4401, [TokenExpired, Unauthorized]],
  [4403, [Banned, Forbidden]],
  [4404, [RoomNotFound, NotFound]],
]);
/** A 1008 (flood) close: wait at least this long before connecting again. */
const FLOOD_BACKOFF_MS = 10000;
/** How many comment ids are remembered to drop comments seen before a reconnect. */
const SEEN_COMMENTS = 2000;

/** The WebSocket URL of a room on a server (`http(s)://` or `ws(s)://`; a path prefix is kept). */
export function roomUrl(base, room) {
  const url = new URL(base);
  url.protocol = { "http:": "ws:", "https:": "wss:" }[url.protocol] || url.protocol;
  url.pathname = `${url.pathname.replace(/\/+$/, "")}/ws/rooms/${encodeURIComponent(checkId("room", room))}`;
  url.hash = "";
  return url.toString();
}

function randomHex(bytes) {
  const out = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(out);
  return Array.from(out, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * One room, over one WebSocket at a time, that stays up.
 *
 * Events (an EventTarget): "message" (detail: each server message other than answers, as
 * sent; priority events already delivered before a resume are dropped, so are comments already
 * shown), "welcome" (detail: the welcome, the first and after every reconnect), "state"
 * (detail: connecting | live | reconnecting | offline | banned | expired | refused; the last
 * three are final and `refusal` is the typed error that says why).
 */
export class RoomClient extends EventTarget {
  constructor(url, options = {}) {
    super();
    const {
      token = null,
      room = null,
      framing = "json",
      auth = "message",
      WebSocket: WebSocketClass = globalThis.WebSocket,
      requestTimeoutMs = 30000,
      connectTimeoutMs = 30000,
      backoffInitialMs = 500,
      backoffMaxMs = 10000,
    } = options;
    if (!(framing in SUBPROTOCOLS)) throw new RangeError(`framing must be "json" or "msgpack", not ${framing}`);
    if (auth !== "message" && auth !== "query") throw new RangeError(`auth must be "message" or "query", not ${auth}`);
    if (typeof WebSocketClass !== "function") {
      throw new TypeError("no WebSocket: pass options.WebSocket (Node 20: run with --experimental-websocket)");
    }
    this.url = room === null ? url : roomUrl(url, room);
    if (!/^wss?:\/\//.test(this.url)) throw new RangeError(`not a ws:// or wss:// URL: ${this.url}`);
    this.framing = framing;
    this.auth = auth;
    this.requestTimeoutMs = requestTimeoutMs;
    this.connectTimeoutMs = connectTimeoutMs;
    this.backoffInitialMs = backoffInitialMs;
    this.backoffMaxMs = backoffMaxMs;
    this.token = token;
    this.WebSocket = WebSocketClass;
    /** The latest welcome (null before the first). */
    this.welcome = null;
    /** The highest room seq delivered: sent as last_seq on a reconnect. */
    this.lastSeq = null;
    /** connecting | live | reconnecting | offline | banned | expired | refused */
    this.state = "offline";
    /** The typed error the client stopped with (null while it may go on). */
    this.refusal = null;
    this.stats = {
      reconnects: 0,
      duplicatesDropped: 0,
      laggedFrames: 0,
      laggedComments: 0,
      skippedComments: 0,
      resent: 0,
      failedConnects: 0,
      lastCloseCode: null,
      lastCloseReason: "",
    };
    this.offsetMs = 0; // the server's clock - ours, from the welcome and pongs
    this._ws = null;
    this._conn = 0;
    this._attempt = 0;
    this._timer = null;
    this._stopped = true;
    this._pending = new Map(); // rid -> {message, resolve, reject, timer, resend, sentOn}
    this._seenComments = new Map();
    this._ridPrefix = randomHex(4);
    this._ridNext = 0;
    this._waiters = []; // connect() promises waiting for the first welcome
    this._queue = []; // messages for the async iterator
    this._takers = [];
  }

  /** Connect; resolves with the welcome, rejects with the typed error of a refusal (or a timeout). */
  connect() {
    if (!this._stopped) throw new Error("this RoomClient is connected already");
    this._stopped = false;
    this.refusal = null;
    const first = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const error = new RequestTimeout("timeout", `no welcome from ${this.url} in ${this.connectTimeoutMs} ms`);
        this._settleWaiters(null, error);
      }, this.connectTimeoutMs);
      this._waiters.push({ resolve, reject, timer });
    });
    this._open();
    return first;
  }

  /** Close and stop reconnecting; pending commands reject with Closed. */
  close() {
    this._stop(null, "offline");
  }

  /** The server's clock now (from the welcome and pongs), ms since the epoch. */
  now() {
    return Date.now() + this.offsetMs;
  }

  /** True while a connection is open and welcomed. */
  get connected() {
    return this.state === "live";
  }

  /** Messages as an async iterator (`for await (const m of room.messages())`), until close. */
  async *messages() {
    for (;;) {
      const item = this._queue.length ? this._queue.shift() : await new Promise((r) => this._takers.push(r));
      if (item === END) {
        this._queue.unshift(END); // every later iterator ends too
        if (this.refusal) throw this.refusal;
        return;
      }
      yield item;
    }
  }

  /** Send a message that is never answered (`like`), or dropped while offline. */
  send(type, fields = {}) {
    const ws = this._ws;
    if (this.state === "live" && ws) ws.send(this._encode({ ...fields, type }));
  }

  /**
   * Send any command with a rid: resolves with its ack (or pong), rejects with its typed error.
   * `resend`: the server decides it once per rid, so it goes again (same rid) on the next
   * connection when this one drops before the answer; otherwise such a drop rejects with
   * ConnectionLost. Commands made while offline wait for the next welcome.
   */
  request(type, fields = {}, { resend = false, rid = null, timeoutMs = null } = {}) {
    if (this.refusal) return Promise.reject(this.refusal);
    if (this._stopped) return Promise.reject(new Closed("closed", "the client is not connected"));
    const id = checkRid(rid ?? fields.rid) || `${this._ridPrefix}.${++this._ridNext}`;
    if (this._pending.has(id)) return Promise.reject(new RangeError(`rid ${id} is in use by a command still waiting`));
    const message = { ...fields, type, rid: id };
    return new Promise((resolve, reject) => {
      const timeout = timeoutMs ?? this.requestTimeoutMs;
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new RequestTimeout("timeout", `no answer to ${type} in ${timeout} ms`, { rid: id }));
      }, timeout);
      const pending = { message, resolve, reject, timer, resend, sentOn: null };
      this._pending.set(id, pending);
      if (this.state === "live") this._write(pending);
    });
  }

  // commands (docs/protocol.md "Client -> server")

  /** Round trip; the server's clock. */
  async ping() {
    return (await this.request("ping", {}, { resend: true })).server_time_ms;
  }

  /** Post a comment; its id (the room seq it got). */
  async comment(text) {
    return (await this.request("comment", { text: checkText("text", text) })).seq;
  }

  like(count = 1) {
    this.send("like", { count: checkInt("count", count, 1, 1000) });
  }

  /** Hold units of a sale: the ack's hold (`hold_id`, `quantity`, `expires_at_ms`). */
  reserve(saleId, quantity = 1, { rid = null } = {}) {
    const fields = { sale_id: checkId("sale_id", saleId), quantity: checkInt("quantity", quantity, 1, 1000000) };
    return this.request("reserve", fields, { resend: true, rid });
  }

  /** Pay for a hold; the order. Confirming again returns the same order, never charged twice. */
  async confirm(holdId, couponId = null, { rid = null } = {}) {
    const fields = { hold_id: checkId("hold_id", holdId) };
    if (couponId !== null) fields.coupon_id = checkId("coupon_id", couponId);
    return (await this.request("confirm", fields, { resend: true, rid })).order;
  }

  cancel(holdId, { rid = null } = {}) {
    return this.request("cancel", { hold_id: checkId("hold_id", holdId) }, { resend: true, rid });
  }

  openTeam(saleId, quantity = 1, { rid = null } = {}) {
    const fields = { sale_id: checkId("sale_id", saleId), quantity: checkInt("quantity", quantity, 1, 1000000) };
    return this.request("open_team", fields, { resend: true, rid });
  }

  joinTeam(saleId, code, quantity = 1, { rid = null } = {}) {
    const fields = {
      sale_id: checkId("sale_id", saleId),
      code: checkId("code", code),
      quantity: checkInt("quantity", quantity, 1, 1000000),
    };
    return this.request("join_team", fields, { resend: true, rid });
  }

  claimCoupon(saleId, batchId) {
    const fields = { sale_id: checkId("sale_id", saleId), batch_id: checkId("batch_id", batchId) };
    return this.request("claim_coupon", fields, { resend: true });
  }

  bid(auctionId, amountCents, { rid = null } = {}) {
    const fields = { auction_id: checkId("auction_id", auctionId), amount_cents: checkInt("amount_cents", amountCents, 1, 1e12) };
    return this.request("bid", fields, { resend: true, rid });
  }

  async payAuction(auctionId) {
    return (await this.request("pay_auction", { auction_id: checkId("auction_id", auctionId) }, { resend: true })).order;
  }

  enterDraw(drawId) {
    return this.request("enter_draw", { draw_id: checkId("draw_id", drawId) }, { resend: true });
  }

  claimPrize(drawId) {
    return this.request("claim_prize", { draw_id: checkId("draw_id", drawId) }, { resend: true });
  }

  vote(pollId, option) {
    return this.request("vote", { poll_id: checkId("poll_id", pollId), option: checkInt("option", option, 0, 1000) }, { resend: true });
  }

  async ask(text) {
    return (await this.request("ask", { text: checkText("text", text) }, { resend: true })).question;
  }

  async upvote(questionId) {
    return (await this.request("upvote", { question_id: checkId("question_id", questionId) }, { resend: true })).upvotes;
  }

  // hosts and moderators (not sent twice)

  hostMessage(text) {
    return this.request("host_message", { text: checkText("text", text) });
  }

  pinProduct(productId) {
    return this.request("pin_product", { product_id: checkId("product_id", productId) });
  }

  unpinProduct() {
    return this.request("unpin_product");
  }

  mute(userId, durationS) {
    return this.request("mute", { user_id: checkId("user_id", userId), duration_s: checkInt("duration_s", durationS, 1, 30 * 86400) });
  }

  unmute(userId) {
    return this.request("unmute", { user_id: checkId("user_id", userId) });
  }

  ban(userId) {
    return this.request("ban", { user_id: checkId("user_id", userId) });
  }

  unban(userId) {
    return this.request("unban", { user_id: checkId("user_id", userId) });
  }

  deleteComment(commentId) {
    return this.request("delete_comment", { comment_id: checkInt("comment_id", commentId, 1) });
  }

  slowMode(intervalS) {
    return this.request("slow_mode", { interval_s: checkInt("interval_s", intervalS, 0, 3600) });
  }

  clearChat() {
    return this.request("clear_chat");
  }

  async answerQuestion(questionId) {
    return (await this.request("answer_question", { question_id: checkId("question_id", questionId) })).question;
  }

  async pinQuestion(questionId) {
    return (await this.request("pin_question", { question_id: checkId("question_id", questionId) })).question;
  }

  async unpinQuestion(questionId) {
    return (await this.request("unpin_question", { question_id: checkId("question_id", questionId) })).question;
  }

  async dismissQuestion(questionId) {
    return (await this.request("dismiss_question", { question_id: checkId("question_id", questionId) })).question;
  }

  // -- the connection ---------------------------------------------------------------------------

  /** The URL to connect to: `?auth=message` (the token goes in the first message), or `?token=`. */
  connectUrl() {
    const url = new URL(this.url);
    url.searchParams.delete("auth");
    url.searchParams.delete("token");
    url.searchParams.delete("last_seq");
    if (this.auth === "message") url.searchParams.set("auth", "message");
    else {
      if (this.token) url.searchParams.set("token", this.token);
      if (this.lastSeq !== null) url.searchParams.set("last_seq", String(this.lastSeq));
    }
    return url.toString();
  }

  /** The first message of first-message auth: the token (none for a guest), and last_seq when resuming. */
  authMessage() {
    const message = { type: "auth" };
    if (this.token) message.token = this.token;
    if (this.lastSeq !== null) message.last_seq = this.lastSeq;
    return message;
  }

  _open() {
    this._setState(this._attempt ? "reconnecting" : "connecting");
    const conn = ++this._conn;
    let ws;
    try {
      ws = new this.WebSocket(this.connectUrl(), SUBPROTOCOLS[this.framing]);
    } catch (error) {
      // a URL the platform refuses: nothing to retry
      return this._stop(new LiveError("bad_request", `cannot connect to ${this.url}: ${error.message}`), "refused");
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    let welcomed = false;
    let refused = null; // an error frame without a rid before the welcome: a refused auth
    ws.onopen = () => {
      if (this.auth === "message") ws.send(this._encode(this.authMessage()));
    };
    ws.onmessage = (event) => {
      if (this._ws !== ws) return;
      const message = this._decode(event.data);
      if (message === null) return;
      if (!welcomed && message.type === "error" && message.rid === undefined) {
        refused = message;
        return;
      }
      if (message.type === "welcome") {
        welcomed = true;
        this._onWelcome(message, conn);
      } else this._onMessage(message);
    };
    ws.onerror = () => {}; // a close always follows, and says more
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._lost(conn);
      if (this._stopped) return;
      if (welcomed) this._attempt = 0;
      else this.stats.failedConnects += 1;
      let hintMs;
      try {
        hintMs = this._afterClose(event.code, event.reason || "", refused);
      } catch (error) {
        if (!(error instanceof LiveError)) throw error;
        const state = error instanceof Banned ? "banned" : error instanceof TokenExpired ? "expired" : "refused";
        return this._stop(error, state);
      }
      this._attempt += 1;
      this._setState("reconnecting");
      clearTimeout(this._timer);
      this._timer = setTimeout(() => this._open(), this.delayMs(this._attempt, hintMs));
    };
  }

  /** How long to wait before attempt `attempt`: backoff with jitter, at least the server's hint. */
  delayMs(attempt, hintMs = null) {
    const backoff = Math.min(this.backoffMaxMs, this.backoffInitialMs * 2 ** Math.min(attempt - 1, 16));
    let delay = backoff * (0.5 + Math.random() / 2); // jitter: many clients do not come back at once
    if (hintMs !== null && hintMs !== undefined) delay = Math.max(delay, hintMs * (1 + Math.random() / 2));
    return delay;
  }

  /** What a close says: throws the typed error of a final one, else the least wait (ms) or null. */
  _afterClose(code, reason, refused) {
    this.stats.lastCloseCode = code;
    this.stats.lastCloseReason = reason;
    let fields = {};
    try {
      const parsed = reason ? JSON.parse(reason) : {};
      if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) fields = parsed;
    } catch (error) {
      fields = {};
    }
    let message = `the server closed the connection (${code} ${reason})`;
    let final = FINAL_CLOSES.get(code) || null;
    const refusedCode = refused ? String(refused.code) : null;
    const RefusedKind = refusedCode !== null ? ERRORS.get(refusedCode) : undefined;
    if (final === null && RefusedKind) {
      // the close was lost (a proxy, a browser): the refusal frame decides
      final = [...FINAL_CLOSES.values()].find(([, base]) => RefusedKind === base || RefusedKind.prototype instanceof base) || null;
    }
    if (final !== null) {
      const [Default, Base] = final;
      const ofBase = (Kind) => Kind === Base || Kind.prototype instanceof Base;
      let reasonCode = fields.code;
      if (!reasonCode && RefusedKind && ofBase(RefusedKind)) reasonCode = refusedCode;
      reasonCode = String(reasonCode || Default.codes[0]);
      const Kind = ERRORS.get(reasonCode) || Default;
      let data = { ...fields };
      if (refused) {
        data = {};
        for (const [k, v] of Object.entries(refused)) if (!["type", "code", "message", "rid"].includes(k)) data[k] = v;
        Object.assign(data, fields);
        if (typeof refused.message === "string" && refused.message) message = `${refused.message} (${code} ${reason})`;
      }
      throw new (ofBase(Kind) ? Kind : Default)(reasonCode, message, data);
    }
    if (code === 1008) return FLOOD_BACKOFF_MS;
    const retryMs = fields.retry_ms;
    return typeof retryMs === "number" && retryMs >= 0 ? retryMs : null;
  }

  _decode(data) {
    try {
      const message = typeof data === "string" ? JSON.parse(data) : unpackMsgpack(new Uint8Array(data));
      if (message && typeof message === "object" && typeof message.type === "string") return message;
    } catch (error) {
      console.warn("live-client: a frame that does not decode", error);
    }
    return null;
  }

  _encode(message) {
    return this.framing === "msgpack" ? packMsgpack(message) : JSON.stringify(message);
  }

  _onWelcome(message, conn) {
    const first = this.welcome === null;
    this.welcome = message;
    if (typeof message.server_time_ms === "number") this.offsetMs = message.server_time_ms - Date.now();
    // Resumed: the missed events follow, oldest first, and move lastSeq on. Not resumed: the
    // welcome is a fresh snapshot and its seq is where we stand.
    if (!message.resumed || this.lastSeq === null) this.lastSeq = message.seq ?? 0;
    const comments = Array.isArray(message.comments) ? message.comments : [];
    const fresh = comments.filter((c) => !this._seen(c.id));
    if (!first) this.stats.reconnects += 1;
    // Commands waiting for this connection: never sent, or sent on one that dropped before their
    // answer (those are the ones safe to send again, with the same rid).
    for (const pending of this._pending.values()) {
      if (pending.sentOn === conn) continue;
      if (pending.sentOn !== null) this.stats.resent += 1;
      this._write(pending, conn);
    }
    this._setState("live");
    this.dispatchEvent(new CustomEvent("welcome", { detail: message }));
    if (!first && fresh.length) this._deliver({ type: "batch", comments: fresh }); // said while we were away
    this._settleWaiters(message, null);
  }

  _seen(commentId) {
    if (typeof commentId !== "number") return false;
    if (this._seenComments.has(commentId)) return true;
    this._seenComments.set(commentId, true);
    if (this._seenComments.size > SEEN_COMMENTS) this._seenComments.delete(this._seenComments.keys().next().value);
    return false;
  }

  _onMessage(message) {
    const kind = message.type;
    if (kind === "ack" || kind === "error" || kind === "pong") {
      if (kind === "pong" && typeof message.server_time_ms === "number") this.offsetMs = message.server_time_ms - Date.now();
      const pending = this._pending.get(String(message.rid));
      if (pending) {
        this._pending.delete(String(message.rid));
        clearTimeout(pending.timer);
        if (kind === "error") pending.reject(errorFrom(message));
        else pending.resolve(message);
      }
      return;
    }
    // Room events carry the room's seq (a batch's comments carry their own ids)
    if (kind !== "batch" && typeof message.seq === "number") {
      if (this.lastSeq !== null && message.seq <= this.lastSeq) {
        this.stats.duplicatesDropped += 1;
        return;
      }
      this.lastSeq = message.seq;
    }
    if (kind === "batch") {
      this.stats.skippedComments += message.skipped || 0;
      const comments = Array.isArray(message.comments) ? message.comments : [];
      const fresh = comments.filter((c) => !this._seen(c.id));
      if (fresh.length !== comments.length) {
        this.stats.duplicatesDropped += comments.length - fresh.length;
        if (!fresh.length && message.likes === undefined && message.online === undefined) return;
        message = { ...message, comments: fresh };
      }
    } else if (kind === "lagged") {
      this.stats.laggedFrames += message.dropped_frames || 0;
      this.stats.laggedComments += message.dropped_comments || 0;
    }
    this._deliver(message);
  }

  _deliver(message) {
    this.dispatchEvent(new CustomEvent("message", { detail: message }));
    const taker = this._takers.shift();
    if (taker) taker(message);
    else if (this._queue.length < 10000) this._queue.push(message); // nobody iterating: keep a bounded tail
    else this._queue.shift(), this._queue.push(message);
  }

  /** The connection `conn` dropped: what was sent on it and is unsafe to send again rejects. */
  _lost(conn) {
    for (const [rid, pending] of this._pending) {
      if (pending.sentOn === conn && !pending.resend) {
        this._pending.delete(rid);
        clearTimeout(pending.timer);
        pending.reject(new ConnectionLost("connection_lost", `the connection dropped before the answer to ${pending.message.type}`, { rid }));
      }
    }
  }

  _write(pending, conn = this._conn) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) {
      pending.sentOn = null;
      return;
    }
    pending.sentOn = conn;
    ws.send(this._encode(pending.message));
  }

  _stop(error, state) {
    this._stopped = true;
    clearTimeout(this._timer);
    if (error && !this.refusal) this.refusal = error;
    const ws = this._ws;
    this._ws = null;
    if (ws && ws.readyState <= 1) ws.close(1000);
    const end = this.refusal || new Closed("closed", "the client is closed");
    for (const pending of this._pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(end);
    }
    this._pending.clear();
    this._settleWaiters(null, end);
    this._setState(state);
    for (const taker of this._takers.splice(0)) taker(END);
    this._queue.push(END);
  }

  _settleWaiters(welcome, error) {
    for (const { resolve, reject, timer } of this._waiters.splice(0)) {
      clearTimeout(timer);
      if (error) reject(error);
      else resolve(welcome);
    }
    if (error && this.welcome === null && !this._stopped) this._stop(error, "offline");
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }
}

const END = Symbol("end");

// -- the host HTTP API ------------------------------------------------------------------------------

/** The host HTTP API (docs/http-api.md) with fetch: each method resolves with the JSON answer or
 * rejects with the typed error of the server's `{"error": {code, message}}`. */
export class HostClient {
  constructor(baseUrl, token, { fetch: fetchFn = globalThis.fetch } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.token = token;
    this.fetch = fetchFn;
  }

  async call(method, path, body = undefined) {
    const headers = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await this.fetch(this.baseUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (error) {
      throw new Unavailable("unavailable", `cannot reach ${this.baseUrl}: ${error.message}`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (error) {
      data = null;
    }
    if (!response.ok) {
      const err = data && typeof data === "object" ? data.error : null;
      throw errorFrom(err && typeof err === "object" ? err : { code: `http_${response.status}`, message: text.slice(0, 500) }, response.status);
    }
    return data;
  }

  createRoom(title, { id = undefined, allowAnonymous = false } = {}) {
    return this.call("POST", "/api/rooms", { title: checkText("title", title), allow_anonymous: allowAnonymous, ...(id ? { id } : {}) });
  }

  async listRooms({ after = undefined, limit = undefined } = {}) {
    return (await this.call("GET", `/api/rooms${query({ after, limit })}`)).rooms;
  }

  getRoom(room) {
    return this.call("GET", `/api/rooms/${q(room)}`);
  }

  createProduct(room, title, priceCents, { imageUrl = undefined } = {}) {
    const body = { title: checkText("title", title), price_cents: checkInt("price_cents", priceCents, 0) };
    if (imageUrl !== undefined) body.image_url = imageUrl;
    return this.call("POST", `/api/rooms/${q(room)}/products`, body);
  }

  async listProducts(room) {
    return (await this.call("GET", `/api/rooms/${q(room)}/products`)).products;
  }

  /** Open a flash sale: `fields` as docs/http-api.md lists them (starts_at_ms, duration_s, hold_s, group, ...). */
  createSale(room, productId, stock, fields = {}) {
    const body = { product_id: checkId("product_id", productId), stock: checkInt("stock", stock, 1), ...fields };
    return this.call("POST", `/api/rooms/${q(room)}/sales`, body);
  }

  async listSales(room) {
    return (await this.call("GET", `/api/rooms/${q(room)}/sales`)).sales;
  }

  getSale(sale) {
    return this.call("GET", `/api/sales/${q(sale)}`);
  }

  stopSale(sale) {
    return this.call("POST", `/api/sales/${q(sale)}/stop`);
  }

  addStock(sale, units) {
    return this.call("POST", `/api/sales/${q(sale)}/stock`, { units: checkInt("units", units, 1) });
  }

  dropCoupons(sale, count, discountCents) {
    const body = { count: checkInt("count", count, 1), discount_cents: checkInt("discount_cents", discountCents, 1) };
    return this.call("POST", `/api/sales/${q(sale)}/coupons`, body);
  }

  getCouponBatch(sale, batch) {
    return this.call("GET", `/api/sales/${q(sale)}/coupons/${q(batch)}`);
  }

  getTeam(sale, code) {
    return this.call("GET", `/api/sales/${q(sale)}/teams/${q(code)}`);
  }

  getOrder(order) {
    return this.call("GET", `/api/orders/${q(order)}`);
  }

  /** One page of a sale's orders: `{sale_id, orders, cursor, more}` (pass `cursor` as `after` for the next). */
  saleOrders(sale, { after = undefined, limit = undefined } = {}) {
    return this.call("GET", `/api/sales/${q(sale)}/orders${query({ after, limit })}`);
  }
}

function q(value) {
  return encodeURIComponent(checkId("id", value));
}

function query(params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) search.set(k, String(v));
  const text = search.toString();
  return text ? `?${text}` : "";
}
