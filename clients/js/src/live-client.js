// live-client: a client for live's WebSocket protocol (docs/protocol.md) and its host HTTP API
// (docs/http-api.md), for browsers and Node 20+. No dependencies.
//
// RoomClient keeps one room's WebSocket up: JSON or MessagePack framing, first-message auth
// (the token is in no URL), the welcome snapshot, reconnects with backoff and jitter honouring
// a 1001 close's retry_ms, resumes with last_seq and drops events it has already delivered.
// Commands are methods that resolve with the server's answer or reject with the LiveError
// subclass of its code. Commands the server decides once per rid (buying, bids, claims, votes)
// are sent again with the same rid when their answer was lost with the connection, so a
// purchase happens once however the network behaves; a refusal is never sent again.
//
// The same file is served to the pages as /static/live-client.js (a byte-identical copy,
// checked by tests/test_js_client_copy.py).

// -- errors ---------------------------------------------------------------------------------------

/** A refusal from the server (or, for the subclasses that say so, from the client). */
export class LiveError extends Error {
  /** @param {string} code @param {string} [message] @param {object} [data] @param {number|null} [status] */
  constructor(code, message = "", data = {}, status = null) {
    // message: the server's own words (the code when it sent none)
    super(message || code);
    this.name = new.target.name;
    this.code = code;
    this.data = { ...data };
    this.status = status;
  }
}

// Each class with the codes it stands for (the first is its default code). Mirrors
// clients/python/live_client/errors.py; a code not listed is a plain LiveError.
const define = (name, base, codes = []) => {
  const cls = { [name]: class extends base {} }[name];
  cls.codes = codes;
  return cls;
};

export const ConnectionLost = define("ConnectionLost", LiveError, ["connection_lost"]);
export const RequestTimeout = define("RequestTimeout", LiveError, ["timeout"]);
export const Closed = define("Closed", LiveError, ["closed"]);
export const Unauthorized = define("Unauthorized", LiveError, ["token_missing", "token_invalid", "cannot_sign"]);
export const TokenExpired = define("TokenExpired", Unauthorized, ["token_expired"]);
export const Forbidden = define("Forbidden", LiveError, ["forbidden"]);
export const WrongRoom = define("WrongRoom", Forbidden, ["wrong_room"]);
export const Banned = define("Banned", Forbidden, ["banned"]);
export const LoginRequired = define("LoginRequired", Forbidden, ["login_required", "sign_in_required"]);
export const ProtectedUser = define("ProtectedUser", Forbidden, ["protected_user"]);
export const NotFound = define("NotFound", LiveError, ["not_found"]);
export const RoomNotFound = define("RoomNotFound", NotFound, ["room_not_found"]);
export const ProductNotFound = define("ProductNotFound", NotFound, ["product_not_found"]);
export const UnknownSale = define("UnknownSale", NotFound, ["unknown_sale"]);
export const HoldNotFound = define("HoldNotFound", NotFound, ["hold_not_found"]);
export const OrderNotFound = define("OrderNotFound", NotFound, ["order_not_found"]);
export const BatchNotFound = define("BatchNotFound", NotFound, ["batch_not_found"]);
export const TeamNotFound = define("TeamNotFound", NotFound, ["team_not_found"]);
export const AuctionNotFound = define("AuctionNotFound", NotFound, ["auction_not_found"]);
export const QuestionNotFound = define("QuestionNotFound", NotFound, ["question_not_found"]);
export const DrawNotFound = define("DrawNotFound", NotFound, ["draw_not_found"]);
export const PollNotFound = define("PollNotFound", NotFound, ["poll_not_found"]);
export const BadRequest = define("BadRequest", LiveError, [
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
]);
export const MissingField = define("MissingField", BadRequest, ["missing_field"]);
export const InvalidField = define("InvalidField", BadRequest, ["invalid_field"]);
/** Not a decision: the same command may be sent again later (by the caller, never by itself). */
export const RetryLater = define("RetryLater", LiveError);
export const RateLimited = define("RateLimited", RetryLater, ["rate_limited"]);
export const Unavailable = define("Unavailable", RetryLater, [
  "unavailable",
  "server_busy",
  "server_full",
  "too_many_connections",
]);
export const Frozen = define("Frozen", RetryLater, ["frozen"]);
export const InternalError = define("InternalError", RetryLater, ["internal"]);
export const ChatRefused = define("ChatRefused", LiveError);
export const CommentTooLong = define("CommentTooLong", ChatRefused, ["comment_too_long"]);
export const BannedWords = define("BannedWords", ChatRefused, ["banned_words"]);
export const Muted = define("Muted", ChatRefused, ["muted"]);
export const SlowMode = define("SlowMode", ChatRefused, ["slow_mode"]);
export const InvalidText = define("InvalidText", ChatRefused, ["invalid_text"]);
export const BuyError = define("BuyError", LiveError);
export const SoldOut = define("SoldOut", BuyError, ["sold_out"]);
export const InsufficientStock = define("InsufficientStock", BuyError, ["insufficient_stock"]);
export const LimitReached = define("LimitReached", BuyError, ["limit_reached"]);
export const InvalidQuantity = define("InvalidQuantity", BuyError, ["invalid_quantity"]);
export const NotStarted = define("NotStarted", BuyError, ["not_started"]);
export const SaleOver = define("SaleOver", BuyError, ["ended", "already_ended"]);
export const Duplicate = define("Duplicate", BuyError, ["duplicate"]);
export const NotYourHold = define("NotYourHold", BuyError, ["not_your_hold"]);
export const HoldExpired = define("HoldExpired", BuyError, ["hold_expired"]);
export const AlreadyConfirmed = define("AlreadyConfirmed", BuyError, ["already_confirmed"]);
export const InTeam = define("InTeam", BuyError, ["in_team"]);
export const PaymentFailed = define("PaymentFailed", BuyError, ["payment_failed"]);
export const AmountChanged = define("AmountChanged", BuyError, ["amount_changed"]);
export const CouponInvalid = define("CouponInvalid", BuyError, ["coupon_invalid"]);
export const CouponsGone = define("CouponsGone", BuyError, ["coupons_gone"]);
export const NotGroupSale = define("NotGroupSale", BuyError, ["not_group_sale"]);
export const TeamClosed = define("TeamClosed", BuyError, ["team_closed"]);
export const AlreadyInTeam = define("AlreadyInTeam", BuyError, ["already_in_team"]);
export const TeamExists = define("TeamExists", BuyError, ["team_exists"]);
export const AuctionError = define("AuctionError", LiveError);
export const AuctionOver = define("AuctionOver", AuctionError, ["auction_ended"]);
export const BidTooLow = define("BidTooLow", AuctionError, ["bid_too_low"]);
export const InvalidAmount = define("InvalidAmount", AuctionError, ["invalid_amount"]);
export const OwnAuction = define("OwnAuction", AuctionError, ["own_auction"]);
export const NotYourOffer = define("NotYourOffer", AuctionError, ["not_your_offer"]);
export const OfferExpired = define("OfferExpired", AuctionError, ["offer_expired"]);
export const QueueFull = define("QueueFull", LiveError, ["queue_full"]);
export const QuestionClosed = define("QuestionClosed", LiveError, ["question_closed"]);
export const OwnQuestion = define("OwnQuestion", LiveError, ["own_question"]);
export const DrawError = define("DrawError", LiveError);
export const DrawOver = define("DrawOver", DrawError, ["draw_closed"]);
export const DrawOpen = define("DrawOpen", DrawError, ["draw_open"]);
export const KeywordRequired = define("KeywordRequired", DrawError, ["keyword_required"]);
export const DrawFull = define("DrawFull", DrawError, ["draw_full"]);
export const NotAWinner = define("NotAWinner", DrawError, ["not_a_winner"]);
export const ClaimExpired = define("ClaimExpired", DrawError, ["claim_expired"]);
export const PollError = define("PollError", LiveError);
export const PollOver = define("PollOver", PollError, ["poll_closed"]);
export const InvalidOption = define("InvalidOption", PollError, ["invalid_option"]);
export const AlreadyVoted = define("AlreadyVoted", PollError, ["already_voted"]);
export const Conflict = define("Conflict", LiveError, ["room_exists", "batch_exists"]);
export const LimitExceeded = define("LimitExceeded", Conflict, ["limit_exceeded"]);

const ERROR_CLASSES = [
  ConnectionLost, RequestTimeout, Closed, Unauthorized, TokenExpired, Forbidden, WrongRoom, Banned,
  LoginRequired, ProtectedUser, NotFound, RoomNotFound, ProductNotFound, UnknownSale, HoldNotFound,
  OrderNotFound, BatchNotFound, TeamNotFound, AuctionNotFound, QuestionNotFound, DrawNotFound,
  PollNotFound, BadRequest, MissingField, InvalidField, RetryLater, RateLimited, Unavailable, Frozen,
  InternalError, ChatRefused, CommentTooLong, BannedWords, Muted, SlowMode, InvalidText, BuyError,
  SoldOut, InsufficientStock, LimitReached, InvalidQuantity, NotStarted, SaleOver, Duplicate,
  NotYourHold, HoldExpired, AlreadyConfirmed, InTeam, PaymentFailed, AmountChanged, CouponInvalid,
  CouponsGone, NotGroupSale, TeamClosed, AlreadyInTeam, TeamExists, AuctionError, AuctionOver,
  BidTooLow, InvalidAmount, OwnAuction, NotYourOffer, OfferExpired, QueueFull, QuestionClosed,
  OwnQuestion, DrawError, DrawOver, DrawOpen, KeywordRequired, DrawFull, NotAWinner, ClaimExpired,
  PollError, PollOver, InvalidOption, AlreadyVoted, Conflict, LimitExceeded,
];

/** Every error code this client knows, with its class. */
export const ERRORS = Object.freeze(
  Object.fromEntries(ERROR_CLASSES.flatMap((cls) => cls.codes.map((code) => [code, cls]))),
);

const NOT_DATA = new Set(["type", "code", "message", "rid"]);

/** The typed error for an error object from the server ({code, message, ...fields}). */
export function errorFrom(obj, status = null) {
  if (obj === null || typeof obj !== "object") {
    return new LiveError(status ? `http_${status}` : "unknown", String(obj).slice(0, 500), {}, status);
  }
  const code = typeof obj.code === "string" && obj.code ? obj.code : status ? `http_${status}` : "unknown";
  const data = Object.fromEntries(Object.entries(obj).filter(([key]) => !NOT_DATA.has(key)));
  const Class = ERRORS[code] || LiveError;
  return new Class(code, typeof obj.message === "string" ? obj.message : "", data, status);
}

// -- MessagePack (the subset the protocol uses: nil, bool, int, float, str, bin, array, map) ------

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Encode a value as MessagePack. Integers beyond 2^53 must be BigInt; undefined map values are left out. */
export function msgpackEncode(value) {
  const out = new Writer();
  encodeValue(out, value, 0);
  return out.bytes();
}

class Writer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.view = new DataView(this.buf.buffer);
    this.len = 0;
  }
  room(n) {
    if (this.len + n <= this.buf.length) return;
    const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    bigger.set(this.buf.subarray(0, this.len));
    this.buf = bigger;
    this.view = new DataView(bigger.buffer);
  }
  u8(b) {
    this.room(1);
    this.buf[this.len++] = b;
  }
  put(kind, size, value) {
    this.room(size);
    this.view[kind](this.len, value);
    this.len += size;
  }
  raw(bytes) {
    this.room(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }
  bytes() {
    return this.buf.slice(0, this.len);
  }
}

function encodeLength(out, n, fix, fixMax, codes) {
  if (fix !== null && n <= fixMax) return out.u8(fix | n);
  if (codes[0] !== null && n < 0x100) return (out.u8(codes[0]), out.u8(n));
  if (n < 0x10000) return (out.u8(codes[1]), out.put("setUint16", 2, n));
  if (n < 0x100000000) return (out.u8(codes[2]), out.put("setUint32", 4, n));
  throw new RangeError("too long for MessagePack");
}

function encodeInt(out, n) {
  // n: a safe integer Number, or a BigInt
  if (typeof n === "bigint") {
    if (n >= 0n) {
      if (n > 0xffffffffffffffffn) throw new RangeError(`${n} is out of MessagePack's range`);
      if (n <= BigInt(Number.MAX_SAFE_INTEGER)) return encodeInt(out, Number(n));
      return (out.u8(0xcf), out.put("setBigUint64", 8, n));
    }
    if (n < -0x8000000000000000n) throw new RangeError(`${n} is out of MessagePack's range`);
    if (n >= BigInt(Number.MIN_SAFE_INTEGER)) return encodeInt(out, Number(n));
    return (out.u8(0xd3), out.put("setBigInt64", 8, n));
  }
  if (n >= 0) {
    if (n < 0x80) return out.u8(n);
    if (n < 0x100) return (out.u8(0xcc), out.u8(n));
    if (n < 0x10000) return (out.u8(0xcd), out.put("setUint16", 2, n));
    if (n < 0x100000000) return (out.u8(0xce), out.put("setUint32", 4, n));
    return (out.u8(0xcf), out.put("setBigUint64", 8, BigInt(n)));
  }
  if (n >= -32) return out.u8(n & 0xff);
  if (n >= -0x80) return (out.u8(0xd0), out.put("setInt8", 1, n));
  if (n >= -0x8000) return (out.u8(0xd1), out.put("setInt16", 2, n));
  if (n >= -0x80000000) return (out.u8(0xd2), out.put("setInt32", 4, n));
  return (out.u8(0xd3), out.put("setBigInt64", 8, BigInt(n)));
}

function encodeValue(out, value, depth) {
  if (depth > 100) throw new RangeError("nested too deeply for MessagePack");
  if (value === null || value === undefined) return out.u8(0xc0);
  if (value === false) return out.u8(0xc2);
  if (value === true) return out.u8(0xc3);
  if (typeof value === "bigint") return encodeInt(out, value);
  if (typeof value === "number") {
    if (Number.isSafeInteger(value) && !Object.is(value, -0)) return encodeInt(out, value);
    return (out.u8(0xcb), out.put("setFloat64", 8, value));
  }
  if (typeof value === "string") {
    const bytes = utf8.encode(value);
    encodeLength(out, bytes.length, 0xa0, 31, [0xd9, 0xda, 0xdb]);
    return out.raw(bytes);
  }
  if (value instanceof Uint8Array || value instanceof ArrayBuffer) {
    const bytes = value instanceof ArrayBuffer ? new Uint8Array(value) : value;
    encodeLength(out, bytes.length, null, 0, [0xc4, 0xc5, 0xc6]);
    return out.raw(bytes);
  }
  if (Array.isArray(value)) {
    encodeLength(out, value.length, 0x90, 15, [null, 0xdc, 0xdd]);
    for (const item of value) encodeValue(out, item, depth + 1);
    return;
  }
  if (typeof value === "object") {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    encodeLength(out, entries.length, 0x80, 15, [null, 0xde, 0xdf]);
    for (const [key, item] of entries) {
      encodeValue(out, key, depth + 1);
      encodeValue(out, item, depth + 1);
    }
    return;
  }
  throw new TypeError(`cannot encode a ${typeof value} as MessagePack`);
}

/** Decode one MessagePack value (the whole input). Integers beyond 2^53 come as BigInt, bin as Uint8Array. */
export function msgpackDecode(input) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  const reader = { bytes, view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), pos: 0 };
  const value = decodeValue(reader, 0);
  if (reader.pos !== bytes.length) throw new SyntaxError("MessagePack: bytes after the value");
  return value;
}

function take(r, n) {
  if (r.pos + n > r.bytes.length) throw new SyntaxError("MessagePack: truncated");
  const at = r.pos;
  r.pos += n;
  return at;
}

function int64(r, signed) {
  const big = signed ? r.view.getBigInt64(take(r, 8)) : r.view.getBigUint64(take(r, 8));
  const safe = big <= BigInt(Number.MAX_SAFE_INTEGER) && big >= BigInt(Number.MIN_SAFE_INTEGER);
  return safe ? Number(big) : big;
}

function decodeValue(r, depth) {
  if (depth > 100) throw new SyntaxError("MessagePack: nested too deeply");
  const b = r.bytes[take(r, 1)];
  if (b < 0x80) return b;
  if (b >= 0xe0) return b - 0x100;
  if ((b & 0xf0) === 0x80) return decodeMap(r, b & 0x0f, depth);
  if ((b & 0xf0) === 0x90) return decodeArray(r, b & 0x0f, depth);
  if ((b & 0xe0) === 0xa0) return decodeStr(r, b & 0x1f);
  switch (b) {
    case 0xc0: return null;
    case 0xc2: return false;
    case 0xc3: return true;
    case 0xc4: return decodeBin(r, r.view.getUint8(take(r, 1)));
    case 0xc5: return decodeBin(r, r.view.getUint16(take(r, 2)));
    case 0xc6: return decodeBin(r, r.view.getUint32(take(r, 4)));
    case 0xca: return r.view.getFloat32(take(r, 4));
    case 0xcb: return r.view.getFloat64(take(r, 8));
    case 0xcc: return r.view.getUint8(take(r, 1));
    case 0xcd: return r.view.getUint16(take(r, 2));
    case 0xce: return r.view.getUint32(take(r, 4));
    case 0xcf: return int64(r, false);
    case 0xd0: return r.view.getInt8(take(r, 1));
    case 0xd1: return r.view.getInt16(take(r, 2));
    case 0xd2: return r.view.getInt32(take(r, 4));
    case 0xd3: return int64(r, true);
    case 0xd9: return decodeStr(r, r.view.getUint8(take(r, 1)));
    case 0xda: return decodeStr(r, r.view.getUint16(take(r, 2)));
    case 0xdb: return decodeStr(r, r.view.getUint32(take(r, 4)));
    case 0xdc: return decodeArray(r, r.view.getUint16(take(r, 2)), depth);
    case 0xdd: return decodeArray(r, r.view.getUint32(take(r, 4)), depth);
    case 0xde: return decodeMap(r, r.view.getUint16(take(r, 2)), depth);
    case 0xdf: return decodeMap(r, r.view.getUint32(take(r, 4)), depth);
    default:
      // ext types and 0xc1: the protocol uses none of them
      throw new SyntaxError(`MessagePack: unsupported type byte 0x${b.toString(16)}`);
  }
}

function decodeStr(r, n) {
  const at = take(r, n);
  return fromUtf8.decode(r.bytes.subarray(at, at + n));
}

function decodeBin(r, n) {
  const at = take(r, n);
  return r.bytes.slice(at, at + n);
}

function decodeArray(r, n, depth) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(decodeValue(r, depth + 1));
  return out;
}

function decodeMap(r, n, depth) {
  const out = {};
  for (let i = 0; i < n; i++) {
    const key = decodeValue(r, depth + 1);
    if (typeof key !== "string" && typeof key !== "number") throw new SyntaxError("MessagePack: a map key that is not a str or int");
    // defineProperty: a "__proto__" key is data, not the object's prototype
    Object.defineProperty(out, String(key), { value: decodeValue(r, depth + 1), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

// -- argument checks ------------------------------------------------------------------------------

const MAX_INT = Number.MAX_SAFE_INTEGER;

function checkInt(name, value, lo, hi = MAX_INT) {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TypeError(`${name} must be an integer, not ${typeof value === "number" ? value : typeof value}`);
  }
  if (value < lo || value > hi) throw new RangeError(`${name} must be ${lo} to ${hi}, not ${value}`);
  return value;
}

function checkText(name, value, maxChars = null) {
  if (typeof value !== "string") throw new TypeError(`${name} must be a string, not ${typeof value}`);
  if (!value.trim()) throw new RangeError(`${name} must not be empty`);
  if (maxChars !== null && [...value.trim()].length > maxChars) throw new RangeError(`${name} must be at most ${maxChars} characters`);
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

// -- connection rules (pure functions, so they can be tested without a server) ---------------------

export const SUBPROTOCOLS = Object.freeze({ json: "live.v1.json", msgpack: "live.v1.msgpack" });
export const AUTH_MODES = Object.freeze(["message", "query"]);
/** Close codes retrying cannot fix: [the default error, the base class a reason's code must be of]. */
const FINAL_CLOSES = new Map([
  [4401, [TokenExpired, Unauthorized]],
  [4403, [Banned, Forbidden]],
  [4404, [RoomNotFound, NotFound]],
]);
/** After a 1008 (flood) close: wait at least this long. */
const FLOOD_BACKOFF_MS = 10000;
/** How many comment ids are remembered, to drop comments seen before a reconnect. */
const SEEN_COMMENTS = 2000;
/** Replies to a command; their seq (a comment's id in an ack) is not a room position. */
const REPLIES = new Set(["ack", "error", "pong"]);

/** The WebSocket URL of a room on a server (http(s):// or ws(s):// base). */
export function roomUrl(base, room) {
  const url = new URL(base);
  const schemes = { "http:": "ws:", "https:": "wss:" };
  if (schemes[url.protocol]) url.protocol = schemes[url.protocol];
  url.pathname = url.pathname.replace(/\/+$/, "") + "/ws/rooms/" + encodeURIComponent(checkId("room", room));
  url.hash = "";
  return url.toString();
}

/**
 * How long to wait before connection attempt `attempt` (1 = the first retry): exponential
 * backoff with jitter (so many clients do not all come back at once), and at least the
 * server's hint (a 1001's retry_ms, or after a flood close) plus jitter.
 */
export function backoffDelay(attempt, hintMs = null, { initialMs = 500, maxMs = 10000, random = Math.random } = {}) {
  const backoff = Math.min(maxMs, initialMs * 2 ** Math.min(attempt - 1, 16));
  let delay = backoff * (0.5 + random() / 2);
  if (hintMs !== null && hintMs !== undefined) delay = Math.max(delay, hintMs * (1 + random() / 2));
  return delay;
}

/**
 * What a close says: `{ error }` when retrying cannot fix it (a 4401, 4403 or 4404, or a
 * first-message refusal whose close was lost), else `{ hintMs }`: the least wait (or null).
 * `refused`: the error frame without a rid that came before the welcome (a refused auth); its
 * code names the error when the close's reason names none, and its message is the error's.
 */
export function readClose(code, reason, refused = null) {
  let fields = {};
  try {
    const parsed = reason ? JSON.parse(reason) : {};
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) fields = parsed;
  } catch {
    fields = {}; // a reason that is not JSON names no code: the close code alone decides
  }
  let message = `the server closed the connection (${code} ${reason || ""})`.replace(" )", ")");
  let final = FINAL_CLOSES.get(code);
  const refusedCode = refused ? String(refused.code) : null;
  const RefusedKind = refusedCode ? ERRORS[refusedCode] : undefined;
  if (!final && RefusedKind) {
    // the close was lost: the frame decides
    final = [...FINAL_CLOSES.values()].find(([, base]) => RefusedKind.prototype instanceof base || RefusedKind === base);
  }
  if (final) {
    const [Default, Base] = final;
    let reasonCode = fields.code;
    if (!reasonCode && RefusedKind && (RefusedKind === Base || RefusedKind.prototype instanceof Base)) reasonCode = refusedCode;
    reasonCode = String(reasonCode || Default.codes[0]);
    let data = { ...fields };
    if (refused) {
      data = Object.fromEntries(Object.entries(refused).filter(([key]) => !NOT_DATA.has(key)));
      Object.assign(data, fields);
      if (typeof refused.message === "string" && refused.message) message = `${refused.message} (${code} ${reason || ""})`;
    }
    const Kind = ERRORS[reasonCode];
    const Class = Kind && (Kind === Base || Kind.prototype instanceof Base) ? Kind : Default;
    return { error: new Class(reasonCode, message, data) };
  }
  if (code === 1008) return { hintMs: FLOOD_BACKOFF_MS };
  const retry = fields.retry_ms;
  if (typeof retry === "number" && retry >= 0) return { hintMs: retry };
  return { hintMs: null };
}

/** The page state for a final error: expired (a token to renew), banned, or refused. */
function finalState(error) {
  if (error instanceof TokenExpired) return "expired";
  if (error instanceof Banned) return "banned";
  return "refused";
}

function randomHex(bytes) {
  const raw = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(raw);
  return Array.from(raw, (b) => b.toString(16).padStart(2, "0")).join("");
}

// -- RoomClient -----------------------------------------------------------------------------------

/**
 * One room over one WebSocket at a time. Events (EventTarget): "message" (detail: a server
 * message that is not the answer to a request: welcome, batch, sale_stock, ...), "state"
 * (detail: connecting | live | reconnecting | offline | banned | expired | refused; for the
 * last three `refusal` is the typed error). Also `for await (const message of room)`.
 */
export class RoomClient extends EventTarget {
  /**
   * @param {string} url the room's ws(s):// URL, or the server's base URL with `room`
   * @param {object} [options] token, room, framing ("msgpack" | "json"), auth ("message" | "query"),
   *   requestTimeoutMs, connectTimeoutMs, backoffInitialMs, backoffMaxMs, WebSocket (a constructor)
   */
  constructor(url, options = {}) {
    super();
    const {
      token = null,
      room = null,
      framing = "msgpack",
      auth = "message",
      requestTimeoutMs = 30000,
      connectTimeoutMs = 30000,
      backoffInitialMs = 500,
      backoffMaxMs = 10000,
      WebSocket: Socket = globalThis.WebSocket,
    } = options;
    if (!(framing in SUBPROTOCOLS)) throw new RangeError(`framing must be "json" or "msgpack", not ${JSON.stringify(framing)}`);
    if (!AUTH_MODES.includes(auth)) throw new RangeError(`auth must be "message" or "query", not ${JSON.stringify(auth)}`);
    if (typeof Socket !== "function") {
      throw new TypeError("no WebSocket: pass options.WebSocket (Node 20 has a global one with --experimental-websocket)");
    }
    if (token !== null && typeof token !== "string") throw new TypeError("token must be a string or null");
    if (room !== null) url = roomUrl(url, room);
    const parsed = new URL(url);
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") throw new RangeError(`not a ws:// or wss:// URL: ${url}`);
    this.url = url;
    this.framing = framing;
    this.auth = auth;
    this.requestTimeoutMs = requestTimeoutMs;
    this.connectTimeoutMs = connectTimeoutMs;
    this.backoffInitialMs = backoffInitialMs;
    this.backoffMaxMs = backoffMaxMs;
    this._Socket = Socket;
    this._token = token;
    /** The latest welcome (null before the first). */
    this.welcome = null;
    /** The highest room seq delivered: sent as last_seq on a reconnect. */
    this.lastSeq = null;
    /** The typed error the client stopped with (a final refusal), else null. */
    this.refusal = null;
    this.state = "offline";
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
    this._offsetMs = 0;
    this._pending = new Map();
    this._queue = []; // send()'s messages while not live: written after the next welcome
    this._seenComments = new Set();
    this._ridPrefix = randomHex(4);
    this._ridNext = 0;
    this._ws = null;
    this._conn = 0;
    this._live = false;
    this._attempt = 0;
    this._started = false;
    this._stopped = false;
    this._timer = null;
    this._first = null;
    this._waiters = [];
    this._inbox = [];
  }

  // -- lifecycle ----------------------------------------------------------------------------------

  /**
   * Start connecting; resolves at the first welcome, rejects with the typed error of a final
   * refusal, or with RequestTimeout after connectTimeoutMs (the client is then closed). The
   * client reconnects by itself after that. Calling it again returns the same promise.
   */
  connect() {
    if (this._first) return this._first.promise;
    let resolve, reject;
    const promise = new Promise((res, rej) => ((resolve = res), (reject = rej)));
    // The outcome is also the "state" event and `refusal`: a caller that only listens to
    // those (the pages) must not get an unhandled rejection. Awaiting it still rejects.
    promise.catch(() => {});
    this._first = { promise, resolve, reject, done: false };
    if (Number.isFinite(this.connectTimeoutMs)) {
      this._first.timer = setTimeout(() => {
        if (this._first.done) return;
        this._stop(new RequestTimeout("timeout", `no welcome from ${this.url} in ${this.connectTimeoutMs} ms`), "offline");
      }, this.connectTimeoutMs);
    }
    this._started = true;
    this._open();
    return promise;
  }

  /** Close the connection and stop reconnecting; pending requests reject with Closed. */
  close() {
    this._stop(null, "offline");
  }

  /** True while a connection is open and welcomed. */
  get connected() {
    return this._live;
  }

  /** The server's clock now (from the welcome and pongs), ms since the epoch. */
  now() {
    return Date.now() + this._offsetMs;
  }

  nowMs() {
    return Math.round(this.now());
  }

  /** The last_seq a reconnect resumes after. */
  resumeFrom() {
    return this.lastSeq ?? 0;
  }

  // -- the connection -----------------------------------------------------------------------------

  _connectUrl() {
    const url = new URL(this.url);
    if (this.auth === "message") {
      url.searchParams.set("auth", "message");
    } else {
      if (this._token !== null) url.searchParams.set("token", this._token);
      if (this.lastSeq !== null) url.searchParams.set("last_seq", String(this.resumeFrom()));
    }
    return url.toString();
  }

  _authMessage() {
    const message = { type: "auth" };
    if (this._token !== null) message.token = this._token;
    if (this.lastSeq !== null) message.last_seq = this.resumeFrom();
    return message;
  }

  _open() {
    if (this._stopped) return;
    this._setState(this._attempt ? "reconnecting" : "connecting");
    const conn = ++this._conn;
    let ws;
    try {
      ws = new this._Socket(this._connectUrl(), SUBPROTOCOLS[this.framing]);
    } catch (error) {
      // a URL the WebSocket refuses to try (a browser's mixed-content rule, say): not retried
      this._stop(new LiveError("bad_url", String(error && error.message)), "refused");
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    let opened = false;
    let welcomed = false;
    let refused = null;
    ws.onopen = () => {
      opened = true;
      if (this.auth === "message") this._rawSend(ws, this._authMessage());
    };
    ws.onmessage = (event) => {
      if (this._ws !== ws) return;
      const message = this._decode(event.data);
      if (message === null) return;
      if (!welcomed && message.type === "error" && (message.rid === undefined || message.rid === null)) {
        refused = message; // a refused first-message auth: its close follows
        return;
      }
      if (message.type === "welcome") {
        welcomed = true;
        this._onWelcome(message, conn, ws);
      } else {
        this._onMessage(message);
      }
    };
    ws.onerror = () => {}; // the close that follows says what happened
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._live = false;
      this._lost(conn);
      if (this._stopped) return;
      if (!opened) this.stats.failedConnects += 1;
      this.stats.lastCloseCode = event.code;
      this.stats.lastCloseReason = event.reason || "";
      const { error, hintMs } = readClose(event.code, event.reason, refused);
      if (error) return this._stop(error, finalState(error));
      if (welcomed) this._attempt = 0;
      this._attempt += 1;
      this._setState("reconnecting");
      const delay = backoffDelay(this._attempt, hintMs, { initialMs: this.backoffInitialMs, maxMs: this.backoffMaxMs });
      clearTimeout(this._timer);
      this._timer = setTimeout(() => this._open(), delay);
    };
  }

  _decode(data) {
    try {
      const message = typeof data === "string" ? JSON.parse(data) : msgpackDecode(data);
      if (message && typeof message === "object" && typeof message.type === "string") return message;
      console.warn("live-client: a frame that is not a message object, dropped", message);
    } catch (error) {
      console.warn("live-client: a frame that does not decode, dropped", error);
    }
    return null;
  }

  _encode(message) {
    return this.framing === "msgpack" ? msgpackEncode(message) : JSON.stringify(message);
  }

  /** Write a message; false when the socket is not open (the message was not written). */
  _rawSend(ws, message) {
    if (!ws || ws.readyState !== 1) return false;
    ws.send(this._encode(message));
    return true;
  }

  _onWelcome(message, conn, ws) {
    const first = this.welcome === null;
    this.welcome = message;
    if (typeof message.server_time_ms === "number") this._offsetMs = message.server_time_ms - Date.now();
    // Resumed: the missed events follow, oldest first, and move lastSeq on. Not resumed: the
    // welcome is a fresh snapshot, and its seq is where we stand.
    if (!message.resumed || this.lastSeq === null) this.lastSeq = message.seq ?? 0;
    for (const comment of message.comments || []) this._seen(comment.id);
    if (!first) this.stats.reconnects += 1;
    this._deliver(message);
    if (this._ws !== ws) return; // a listener closed it
    this._live = true;
    this._setState("live");
    // Requests waiting for a connection: never sent, or sent on one that dropped before their
    // answer (only those safe to send twice are still here), again with the same rid.
    for (const pending of this._pending.values()) {
      if (pending.sentOn === conn) continue;
      if (pending.sentOn !== null) this.stats.resent += 1;
      pending.sentOn = this._rawSend(ws, pending.message) ? conn : null;
    }
    for (const queued of this._queue.splice(0)) this._rawSend(ws, queued);
    if (first && this._first && !this._first.done) {
      this._first.done = true;
      clearTimeout(this._first.timer);
      this._first.resolve(message);
    }
  }

  _seen(id) {
    if (this._seenComments.has(id)) return true;
    this._seenComments.add(id);
    if (this._seenComments.size > SEEN_COMMENTS) this._seenComments.delete(this._seenComments.values().next().value);
    return false;
  }

  _onMessage(message) {
    const kind = message.type;
    if (REPLIES.has(kind)) {
      if (kind === "pong" && typeof message.server_time_ms === "number") this._offsetMs = message.server_time_ms - Date.now();
      const pending = message.rid != null ? this._pending.get(String(message.rid)) : undefined;
      if (pending) {
        this._settle(pending);
        if (kind === "error") pending.reject(errorFrom(message));
        else pending.resolve(message);
        return;
      }
    } else if (kind !== "batch" && kind !== "comment" && typeof message.seq === "number") {
      // Room events carry the room's seq (a resume replays from the last_seq sent).
      if (this.lastSeq !== null && message.seq <= this.lastSeq) {
        this.stats.duplicatesDropped += 1;
        return;
      }
      this.lastSeq = message.seq;
    }
    if (kind === "batch") {
      this.stats.skippedComments += message.skipped || 0;
      const comments = message.comments || [];
      const fresh = comments.filter((c) => !this._seen(c.id));
      if (fresh.length !== comments.length) {
        this.stats.duplicatesDropped += comments.length - fresh.length;
        if (!fresh.length && message.likes == null && message.online == null) return;
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
    const waiter = this._waiters.shift();
    if (waiter) waiter.resolve({ value: message, done: false });
    else if (this._iterating) this._inbox.push(message);
  }

  /** The connection `conn` dropped: what was sent on it and is unsafe to send again rejects. */
  _lost(conn) {
    for (const [rid, pending] of this._pending) {
      if (pending.sentOn !== conn || pending.resend) continue;
      this._settle(pending);
      pending.reject(new ConnectionLost("connection_lost", `the connection dropped before the answer to "${pending.message.type}"`, { rid }));
    }
  }

  _settle(pending) {
    clearTimeout(pending.timer);
    this._pending.delete(pending.message.rid);
  }

  _stop(error, state) {
    if (this._stopped) return;
    this._stopped = true;
    this._live = false;
    clearTimeout(this._timer);
    if (error && state !== "offline") this.refusal = error;
    const end = error || new Closed("closed", "the client is closed");
    for (const pending of [...this._pending.values()]) {
      this._settle(pending);
      pending.reject(end);
    }
    this._queue.length = 0;
    const ws = this._ws;
    this._ws = null;
    if (ws && ws.readyState <= 1) ws.close(1000);
    if (this._first && !this._first.done) {
      this._first.done = true;
      clearTimeout(this._first.timer);
      this._first.reject(end);
    }
    this._end = error;
    for (const waiter of this._waiters.splice(0)) {
      if (error) waiter.reject(error);
      else waiter.resolve({ value: undefined, done: true });
    }
    this._setState(state);
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  // -- events as an async iterator ------------------------------------------------------------------

  /** The messages ("message" events) from now on; ends at close(), throws a final refusal. */
  [Symbol.asyncIterator]() {
    this._iterating = true;
    return {
      next: () => {
        if (this._inbox.length) return Promise.resolve({ value: this._inbox.shift(), done: false });
        if (this._stopped) return this._end ? Promise.reject(this._end) : Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
      },
      return: () => {
        this._iterating = false;
        this._inbox.length = 0;
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  // -- commands -----------------------------------------------------------------------------------

  /** Send a message without a rid (a like, a ping): written now if live, else when live again. */
  send(type, fields = {}) {
    const message = { ...fields, type };
    if (this._stopped) return;
    if (!(this._live && this._rawSend(this._ws, message))) this._queue.push(message);
  }

  /**
   * Send a command with a rid (`options.rid`, or `fields.rid`, or a fresh one); resolves with
   * its ack (or pong), rejects with the typed error. `options.resend`: the server decides it
   * once per rid, so it is sent again (the same rid) when the connection drops before the
   * answer; otherwise such a drop rejects with ConnectionLost.
   */
  request(type, fields = {}, options = {}) {
    const { resend = false, timeoutMs = this.requestTimeoutMs } = typeof options === "number" ? { timeoutMs: options } : options;
    let rid;
    try {
      checkId("type", type);
      rid = checkRid(options.rid ?? fields.rid) || `${this._ridPrefix}.${++this._ridNext}`;
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.refusal) return Promise.reject(this.refusal);
    if (this._stopped || !this._started) return Promise.reject(new Closed("closed", "the client is not connected"));
    if (this._pending.has(rid)) return Promise.reject(new RangeError(`rid ${rid} is in use by a request still waiting for its answer`));
    const message = { ...fields, type, rid };
    return new Promise((resolve, reject) => {
      const pending = { message, resolve, reject, resend, sentOn: null, timer: null };
      pending.timer = setTimeout(() => {
        this._settle(pending);
        reject(new RequestTimeout("timeout", `no answer to "${type}" in ${timeoutMs} ms`, { rid }));
      }, timeoutMs);
      this._pending.set(rid, pending);
      if (this._live && this._rawSend(this._ws, message)) pending.sentOn = this._conn;
    });
  }

  /** Round trip to the server; its clock (server_time_ms). */
  async ping({ rid } = {}) {
    const reply = await this.request("ping", {}, { resend: true, rid });
    return reply.server_time_ms ?? 0;
  }

  /** Post a comment; its id. Not sent twice: a drop before the ack rejects with ConnectionLost. */
  async comment(text, { rid } = {}) {
    const reply = await this.request("comment", { text: checkText("text", text) }, { rid });
    return reply.seq ?? 0;
  }

  /** Add likes (1-1000). Never acked: likes are a gauge, sent when live. */
  like(count = 1) {
    this.send("like", { count: checkInt("count", count, 1, 1000) });
  }

  // buying: each decided once per rid, so sent again after a lost answer. A new attempt after a
  // refusal is a new call (a new rid: the same rid gets the same decision).

  /** Hold units of a sale; the hold, or SoldOut, LimitReached, InsufficientStock, NotStarted, ... */
  reserve(saleId, quantity = 1, { rid } = {}) {
    const fields = { sale_id: checkId("saleId", saleId), quantity: checkInt("quantity", quantity, 1, 1000000) };
    return this.request("reserve", fields, { resend: true, rid });
  }

  /** Pay for a hold; the order. Confirming again returns the same order, never charged twice. */
  async confirm(holdId, couponId = null, { rid } = {}) {
    const fields = { hold_id: checkId("holdId", holdId) };
    if (couponId !== null && couponId !== undefined) fields.coupon_id = checkId("couponId", couponId);
    const reply = await this.request("confirm", fields, { resend: true, rid });
    return reply.order || {};
  }

  /** The same as confirm(): paying is confirming a hold. */
  pay(holdId, couponId = null, options = {}) {
    return this.confirm(holdId, couponId, options);
  }

  /** Give a hold's units back. */
  cancel(holdId, { rid } = {}) {
    return this.request("cancel", { hold_id: checkId("holdId", holdId) }, { resend: true, rid });
  }

  /** Open a group buy (pays the group price); share the team's code. */
  openTeam(saleId, quantity = 1, { rid } = {}) {
    const fields = { sale_id: checkId("saleId", saleId), quantity: checkInt("quantity", quantity, 1, 1000000) };
    return this.request("open_team", fields, { resend: true, rid });
  }

  joinTeam(saleId, code, quantity = 1, { rid } = {}) {
    const fields = {
      sale_id: checkId("saleId", saleId),
      code: checkId("code", code),
      quantity: checkInt("quantity", quantity, 1, 1000000),
    };
    return this.request("join_team", fields, { resend: true, rid });
  }

  /** Claim a coupon of a dropped batch (claiming again returns the same coupon). */
  claimCoupon(saleId, batchId, { rid } = {}) {
    const fields = { sale_id: checkId("saleId", saleId), batch_id: checkId("batchId", batchId) };
    return this.request("claim_coupon", fields, { resend: true, rid });
  }

  /** Bid (integer cents); BidTooLow carries data.min_bid_cents. */
  bid(auctionId, amountCents, { rid } = {}) {
    const fields = { auction_id: checkId("auctionId", auctionId), amount_cents: checkInt("amountCents", amountCents, 1, 1e12) };
    return this.request("bid", fields, { resend: true, rid });
  }

  async payAuction(auctionId, { rid } = {}) {
    const reply = await this.request("pay_auction", { auction_id: checkId("auctionId", auctionId) }, { resend: true, rid });
    return reply.order || {};
  }

  async enterDraw(drawId, { rid } = {}) {
    const reply = await this.request("enter_draw", { draw_id: checkId("drawId", drawId) }, { resend: true, rid });
    return reply.entered ?? true;
  }

  claimPrize(drawId, { rid } = {}) {
    return this.request("claim_prize", { draw_id: checkId("drawId", drawId) }, { resend: true, rid });
  }

  vote(pollId, option, { rid } = {}) {
    const fields = { poll_id: checkId("pollId", pollId), option: checkInt("option", option, 0, 1000) };
    return this.request("vote", fields, { resend: true, rid });
  }

  async ask(text, { rid } = {}) {
    const reply = await this.request("ask", { text: checkText("text", text) }, { resend: true, rid });
    return reply.question || {};
  }

  async upvote(questionId, { rid } = {}) {
    const reply = await this.request("upvote", { question_id: checkId("questionId", questionId) }, { resend: true, rid });
    return reply.upvotes ?? 0;
  }

  // hosts and moderators (acked; not sent twice)

  hostMessage(text) {
    return this.request("host_message", { text: checkText("text", text) });
  }

  pinProduct(productId) {
    return this.request("pin_product", { product_id: checkId("productId", productId) });
  }

  unpinProduct() {
    return this.request("unpin_product");
  }

  /** Refuse a user's comments for `durationS` (1 s to 30 days). */
  mute(userId, durationS) {
    const fields = { user_id: checkId("userId", userId), duration_s: checkInt("durationS", durationS, 1, 30 * 86400) };
    return this.request("mute", fields);
  }

  unmute(userId) {
    return this.request("unmute", { user_id: checkId("userId", userId) });
  }

  /** Ban a user from the room: their sockets close (4403), their joins are refused. */
  ban(userId) {
    return this.request("ban", { user_id: checkId("userId", userId) });
  }

  unban(userId) {
    return this.request("unban", { user_id: checkId("userId", userId) });
  }

  /** Delete a comment (its id: the seq its ack and its batch gave it). */
  deleteComment(commentId) {
    return this.request("delete_comment", { comment_id: checkInt("commentId", commentId, 1) });
  }

  /** At most one comment per user per `intervalS` (0-3600; 0 turns it off). */
  slowMode(intervalS) {
    return this.request("slow_mode", { interval_s: checkInt("intervalS", intervalS, 0, 3600) });
  }

  clearChat() {
    return this.request("clear_chat");
  }

  /** Mark a question answered (it leaves the queue, unpinned); the question now. */
  answerQuestion(questionId) {
    return this._staffQuestion("answer_question", questionId);
  }

  /** Pin a question for everyone (the one pinned before is unpinned); the question now. */
  pinQuestion(questionId) {
    return this._staffQuestion("pin_question", questionId);
  }

  unpinQuestion(questionId) {
    return this._staffQuestion("unpin_question", questionId);
  }

  /** Take a question out of the queue without answering it; the question now. */
  dismissQuestion(questionId) {
    return this._staffQuestion("dismiss_question", questionId);
  }

  async _staffQuestion(type, questionId) {
    // not sent twice: a second answer would be question_closed, hiding the first's success
    const reply = await this.request(type, { question_id: checkId("questionId", questionId) });
    return reply.question || {};
  }
}

// -- HostClient -----------------------------------------------------------------------------------

const q = (part) => encodeURIComponent(checkId("id", part));
const dropUndefined = (fields) => Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined && v !== null));

/**
 * The host HTTP API (docs/http-api.md) with fetch: `new HostClient("http://127.0.0.1:8080", token)`.
 * Bodies and answers are the API's objects (snake_case fields); refusals reject with the typed
 * error of the body's code, with `status`.
 */
export class HostClient {
  constructor(baseUrl, token, { timeoutMs = 30000, fetch: fetchImpl = globalThis.fetch } = {}) {
    if (!/^https?:\/\//.test(baseUrl)) throw new RangeError(`not an http:// or https:// URL: ${baseUrl}`);
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.timeoutMs = timeoutMs;
    this._token = token;
    this._fetch = fetchImpl;
  }

  /** Any route: the JSON answer, or the typed error of a refusal. */
  async call(method, path, body = undefined, query = undefined) {
    let url = this.baseUrl + path;
    const params = new URLSearchParams(dropUndefined(query || {}));
    if ([...params].length) url += "?" + params;
    const headers = { Accept: "application/json" };
    if (this._token) headers.Authorization = `Bearer ${this._token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await this._fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      throw new Unavailable("unavailable", `${method} ${url}: ${error && error.message}`);
    }
    const text = await response.text();
    let obj = null;
    try {
      obj = text ? JSON.parse(text) : {};
    } catch {
      obj = null; // not JSON: reported below with the text
    }
    if (!response.ok) {
      const error = obj && typeof obj === "object" ? obj.error : null;
      if (error && typeof error === "object") throw errorFrom(error, response.status);
      throw errorFrom({ code: `http_${response.status}`, message: text.slice(0, 500) }, response.status);
    }
    if (!obj || typeof obj !== "object" || Array.isArray(obj)) throw new LiveError("bad_answer", `${method} ${url}: not a JSON object`);
    return obj;
  }

  // rooms and products
  createRoom(title, { id, allow_anonymous = false } = {}) {
    return this.call("POST", "/api/rooms", dropUndefined({ title, id, allow_anonymous }));
  }
  async listRooms({ after, limit } = {}) {
    return (await this.call("GET", "/api/rooms", undefined, { after, limit })).rooms || [];
  }
  getRoom(room) {
    return this.call("GET", `/api/rooms/${q(room)}`);
  }
  createProduct(room, title, priceCents, { image_url } = {}) {
    return this.call("POST", `/api/rooms/${q(room)}/products`, dropUndefined({ title, price_cents: priceCents, image_url }));
  }
  async listProducts(room) {
    return (await this.call("GET", `/api/rooms/${q(room)}/products`)).products || [];
  }

  // flash sales, coupons, teams, orders
  /** fields: price_cents, per_user_limit, starts_in_s, starts_at_ms, duration_s, hold_s, group */
  createSale(room, productId, stock, fields = {}) {
    return this.call("POST", `/api/rooms/${q(room)}/sales`, dropUndefined({ product_id: productId, stock, ...fields }));
  }
  async listSales(room) {
    return (await this.call("GET", `/api/rooms/${q(room)}/sales`)).sales || [];
  }
  getSale(sale) {
    return this.call("GET", `/api/sales/${q(sale)}`);
  }
  stopSale(sale) {
    return this.call("POST", `/api/sales/${q(sale)}/stop`);
  }
  addStock(sale, units) {
    return this.call("POST", `/api/sales/${q(sale)}/stock`, { units });
  }
  dropCoupons(sale, count, discountCents) {
    return this.call("POST", `/api/sales/${q(sale)}/coupons`, { count, discount_cents: discountCents });
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
  /** One page of a sale's orders; ask again with after: page.cursor for the next. */
  saleOrders(sale, { after, limit } = {}) {
    return this.call("GET", `/api/sales/${q(sale)}/orders`, undefined, { after, limit });
  }

  // the room's tools: auctions, Q&A, lucky draws, polls (bodies as in docs/http-api.md)
  openAuction(room, fields) {
    return this.call("POST", `/api/rooms/${q(room)}/auctions`, fields);
  }
  async listAuctions(room) {
    return (await this.call("GET", `/api/rooms/${q(room)}/auctions`)).auctions || [];
  }
  getAuction(room, auction) {
    return this.call("GET", `/api/rooms/${q(room)}/auctions/${q(auction)}`);
  }
  auctionBids(room, auction) {
    return this.call("GET", `/api/rooms/${q(room)}/auctions/${q(auction)}/bids`);
  }
  listQuestions(room, { limit } = {}) {
    return this.call("GET", `/api/rooms/${q(room)}/questions`, undefined, { limit });
  }
  /** action: answer, pin, unpin or dismiss */
  questionAction(room, question, action) {
    if (!["answer", "pin", "unpin", "dismiss"].includes(action)) throw new RangeError(`unknown question action ${action}`);
    return this.call("POST", `/api/rooms/${q(room)}/questions/${q(question)}/${action}`);
  }
  openDraw(room, fields) {
    return this.call("POST", `/api/rooms/${q(room)}/draws`, fields);
  }
  async listDraws(room) {
    return (await this.call("GET", `/api/rooms/${q(room)}/draws`)).draws || [];
  }
  getDraw(room, draw) {
    return this.call("GET", `/api/rooms/${q(room)}/draws/${q(draw)}`);
  }
  drawVerification(room, draw) {
    return this.call("GET", `/api/rooms/${q(room)}/draws/${q(draw)}/verification`);
  }
  closeDraw(room, draw) {
    return this.call("POST", `/api/rooms/${q(room)}/draws/${q(draw)}/close`);
  }
  openPoll(room, fields) {
    return this.call("POST", `/api/rooms/${q(room)}/polls`, fields);
  }
  async listPolls(room) {
    return (await this.call("GET", `/api/rooms/${q(room)}/polls`)).polls || [];
  }
  getPoll(room, poll) {
    return this.call("GET", `/api/rooms/${q(room)}/polls/${q(poll)}`);
  }
  closePoll(room, poll) {
    return this.call("POST", `/api/rooms/${q(room)}/polls/${q(poll)}/close`);
  }
}
