// Unit tests: the MessagePack codec, backoff, close rules, typed errors, and the connection's
// seq, resume and resend rules with a fake WebSocket (no server, no timing).

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  Banned,
  BidTooLow,
  ConnectionLost,
  ERRORS,
  InsufficientStock,
  LiveError,
  NotFound,
  RoomClient,
  RoomNotFound,
  SoldOut,
  TokenExpired,
  Unauthorized,
  backoffDelay,
  errorFrom,
  msgpackDecode,
  msgpackEncode,
  readClose,
  roomUrl,
} from "../src/live-client.js";
import { until } from "./server.js";

const hex = (bytes) => Buffer.from(bytes).toString("hex");

test("msgpack: each value type round-trips, in the smallest format", () => {
  const cases = [
    [null, "c0"],
    [false, "c2"],
    [true, "c3"],
    [0, "00"],
    [127, "7f"],
    [128, "cc80"],
    [65535, "cdffff"],
    [65536, "ce00010000"],
    [2 ** 32, "cf0000000100000000"],
    [-1, "ff"],
    [-32, "e0"],
    [-33, "d0df"],
    [-129, "d1ff7f"],
    [-32769, "d2ffff7fff"],
    [-(2 ** 31) - 1, "d3ffffffff7fffffff"],
    [Number.MAX_SAFE_INTEGER, "cf001fffffffffffff"],
    [1.5, "cb3ff8000000000000"],
    ["", "a0"],
    ["绿茶", "a6e7bbbfe88cb6"],
    ["x".repeat(32), "d920" + "78".repeat(32)],
    [[], "90"],
    [[1, "a"], "9201a161"],
    [{}, "80"],
    [{ a: 1 }, "81a16101"],
  ];
  for (const [value, expected] of cases) {
    assert.equal(hex(msgpackEncode(value)), expected, JSON.stringify(value));
    assert.deepEqual(msgpackDecode(Buffer.from(expected, "hex")), value, expected);
  }
});

test("msgpack: 64-bit integers beyond 2^53 are BigInt both ways, bin is Uint8Array", () => {
  for (const big of [2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n - 1n, 2n ** 53n + 1n]) {
    assert.equal(msgpackDecode(msgpackEncode(big)), big);
  }
  assert.equal(msgpackDecode(msgpackEncode(42n)), 42); // safe: a Number
  assert.throws(() => msgpackEncode(2n ** 64n), RangeError);
  const bin = new Uint8Array([0, 1, 255]);
  assert.equal(hex(msgpackEncode(bin)), "c403" + "0001ff");
  assert.deepEqual(msgpackDecode(msgpackEncode(bin)), bin);
  assert.equal(msgpackDecode(Buffer.from("ca3fc00000", "hex")), 1.5); // float32
});

test("msgpack: long strings, arrays and maps use the 16/32-bit formats", () => {
  const long = "é".repeat(40000); // 80000 bytes: str32
  assert.equal(msgpackDecode(msgpackEncode(long)), long);
  const list = Array.from({ length: 70000 }, (_, i) => i);
  assert.equal(hex(msgpackEncode(list).subarray(0, 1)), "dd");
  assert.deepEqual(msgpackDecode(msgpackEncode(list)), list);
  const map = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, { n: i, ok: i % 2 === 0 }]));
  assert.equal(hex(msgpackEncode(map).subarray(0, 1)), "de");
  assert.deepEqual(msgpackDecode(msgpackEncode(map)), map);
  assert.deepEqual(msgpackDecode(msgpackEncode({ a: 1, b: undefined })), { a: 1 });
});

test("msgpack: bad input is refused, not guessed at", () => {
  assert.throws(() => msgpackDecode(Buffer.from("c1", "hex")), SyntaxError);
  assert.throws(() => msgpackDecode(Buffer.from("a3616263ff", "hex")), SyntaxError); // trailing
  assert.throws(() => msgpackDecode(Buffer.from("a361", "hex")), SyntaxError); // truncated
  assert.throws(() => msgpackDecode(Buffer.from("a2c328", "hex")), TypeError); // not UTF-8
  assert.throws(() => msgpackDecode(Buffer.from("d40100", "hex")), SyntaxError); // ext
  assert.throws(() => msgpackEncode(() => 1), TypeError);
  const proto = msgpackDecode(msgpackEncode(JSON.parse('{"__proto__": {"x": 1}}')));
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  assert.deepEqual(Object.keys(proto), ["__proto__"]);
});

test("backoff doubles up to the cap with jitter, and honours a hint", () => {
  const lo = () => 0;
  const hi = () => 1;
  assert.equal(backoffDelay(1, null, { random: hi }), 500);
  assert.equal(backoffDelay(1, null, { random: lo }), 250);
  assert.equal(backoffDelay(3, null, { random: hi }), 2000);
  assert.equal(backoffDelay(30, null, { random: hi }), 10000);
  assert.equal(backoffDelay(1, 1000, { random: lo }), 1000); // at least the retry_ms
  assert.equal(backoffDelay(1, 1000, { random: hi }), 1500); // plus up to half as jitter
  assert.equal(backoffDelay(20, 0, { random: hi }), 10000);
});

test("closes: 4401/4403/4404 are final with the reason's code, 1001 gives retry_ms, 1008 waits", () => {
  let { error } = readClose(4401, '{"code": "token_expired"}');
  assert.ok(error instanceof TokenExpired && error.code === "token_expired");
  ({ error } = readClose(4403, '{"code": "banned"}'));
  assert.ok(error instanceof Banned);
  ({ error } = readClose(4403, '{"code": "sold_out"}')); // not a Forbidden code: the default
  assert.ok(error instanceof Banned && error.code === "sold_out");
  ({ error } = readClose(4404, ""));
  assert.ok(error instanceof RoomNotFound && error.code === "room_not_found");
  // a first-message refusal: the frame's words and code, also when the close was lost
  ({ error } = readClose(4401, '{"code":"token_invalid"}', { type: "error", code: "token_invalid", message: "bad" }));
  assert.ok(error instanceof Unauthorized && !(error instanceof TokenExpired));
  assert.match(error.message, /^bad \(4401/);
  ({ error } = readClose(1006, "", { type: "error", code: "room_not_found", message: "no" }));
  assert.ok(error instanceof NotFound && error.code === "room_not_found");
  assert.deepEqual(readClose(1001, '{"code":"shutdown","retry_ms":1000}'), { hintMs: 1000 });
  assert.deepEqual(readClose(1008, ""), { hintMs: 10000 });
  assert.deepEqual(readClose(1006, ""), { hintMs: null });
  assert.deepEqual(readClose(1001, "not json"), { hintMs: null });
  // an unavailable refusal is not final: retried after its retry_ms
  assert.deepEqual(readClose(1001, '{"code":"unavailable","retry_ms":50}', { type: "error", code: "unavailable" }), { hintMs: 50 });
});

test("errors are typed by code and carry code, message, data and status", () => {
  const sold = errorFrom({ type: "error", rid: "r1", code: "sold_out", message: "all gone" });
  assert.ok(sold instanceof SoldOut && sold instanceof LiveError && sold instanceof Error);
  assert.equal(sold.name, "SoldOut");
  assert.deepEqual([sold.code, sold.message, sold.data, sold.status], ["sold_out", "all gone", {}, null]);
  const low = errorFrom({ code: "bid_too_low", message: "m", min_bid_cents: 500 });
  assert.ok(low instanceof BidTooLow && low.data.min_bid_cents === 500);
  assert.ok(errorFrom({ code: "insufficient_stock", available: 2 }) instanceof InsufficientStock);
  const unknown = errorFrom({ code: "brand_new", message: "later" }, 418);
  assert.equal(unknown.constructor, LiveError);
  assert.deepEqual([unknown.code, unknown.status], ["brand_new", 418]);
  assert.equal(errorFrom("oops", 500).code, "http_500");
  assert.equal(ERRORS.room_not_found, RoomNotFound);
  assert.ok(Object.keys(ERRORS).length > 80);
});

test("roomUrl turns a server's base URL into the room's WebSocket URL", () => {
  assert.equal(roomUrl("http://127.0.0.1:8080", "a b"), "ws://127.0.0.1:8080/ws/rooms/a%20b");
  assert.equal(roomUrl("https://x.test/live/", "r1"), "wss://x.test/live/ws/rooms/r1");
  assert.throws(() => new RoomClient("http://x.test/ws/rooms/r1", { WebSocket: FakeSocket }), RangeError);
  assert.throws(() => new RoomClient("ws://x.test/ws/rooms/r1", { framing: "xml", WebSocket: FakeSocket }), RangeError);
  assert.throws(() => new RoomClient("ws://x.test/ws/rooms/r1", { auth: "header", WebSocket: FakeSocket }), RangeError);
});

// -- the connection's rules, with a fake WebSocket ---------------------------------------------------

class FakeSocket {
  static made = [];
  constructor(url, protocol) {
    this.url = new URL(url);
    this.protocol = protocol;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.made.push(this);
  }
  send(data) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(typeof data === "string" ? JSON.parse(data) : msgpackDecode(data));
  }
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose({ code, reason }));
  }
  // the server's side
  open() {
    this.readyState = 1;
    this.onopen();
  }
  receive(message) {
    this.onmessage({ data: JSON.stringify(message) });
  }
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose({ code, reason });
  }
}

function fakeClient(options = {}) {
  FakeSocket.made = [];
  const room = new RoomClient("ws://x.test/ws/rooms/r1", {
    token: "tok",
    framing: "json",
    WebSocket: FakeSocket,
    backoffInitialMs: 1,
    backoffMaxMs: 1,
    ...options,
  });
  const seen = [];
  const states = [];
  room.addEventListener("message", (e) => seen.push(e.detail));
  room.addEventListener("state", (e) => states.push(e.detail));
  return { room, seen, states };
}

const welcome = (fields) => ({ type: "welcome", server_time_ms: Date.now(), seq: 0, resumed: false, comments: [], ...fields });

test("first-message auth: the token is in the first message, never in the URL; resumes with last_seq", async () => {
  const { room, seen } = fakeClient();
  const connected = room.connect();
  const first = FakeSocket.made[0];
  assert.equal(first.url.search, "?auth=message");
  assert.equal(first.protocol, "live.v1.json");
  first.open();
  assert.deepEqual(first.sent, [{ type: "auth", token: "tok" }]);
  first.receive(welcome({ seq: 5, comments: [{ id: 3, text: "hi" }] }));
  assert.equal((await connected).seq, 5);
  assert.equal(room.state, "live");
  first.receive({ type: "host_message", seq: 6, text: "a" });
  first.receive({ type: "ack", rid: "x", seq: 99 }); // a comment's id, not a room position
  first.receive({ type: "comment", seq: 98 });
  first.receive({ type: "host_message", seq: 7, text: "b" });
  assert.equal(room.lastSeq, 7);
  first.drop();
  assert.equal(room.state, "reconnecting");
  const second = await until(() => FakeSocket.made[1], { what: "a reconnect" });
  assert.equal(second.url.search, "?auth=message");
  second.open();
  assert.deepEqual(second.sent, [{ type: "auth", token: "tok", last_seq: 7 }]);
  second.receive(welcome({ seq: 9, resumed: true, comments: [{ id: 3, text: "hi" }] }));
  second.receive({ type: "host_message", seq: 7, text: "b" }); // replayed: seen already
  second.receive({ type: "host_message", seq: 8, text: "c" });
  second.receive({ type: "batch", comments: [{ id: 3, text: "hi" }, { id: 10, text: "new" }] });
  second.receive({ type: "batch", comments: [{ id: 10, text: "new" }] }); // nothing new: dropped
  assert.equal(room.lastSeq, 8);
  const texts = seen.filter((m) => m.type === "host_message").map((m) => m.text);
  assert.deepEqual(texts, ["a", "b", "c"]);
  const batches = seen.filter((m) => m.type === "batch");
  assert.deepEqual(batches.map((b) => b.comments.map((c) => c.id)), [[10]]);
  assert.equal(room.stats.reconnects, 1);
  assert.equal(room.stats.duplicatesDropped, 3);
  room.close();
  assert.equal(room.state, "offline");
});

test("a fresh welcome (not resumed) resets lastSeq to its seq", async () => {
  const { room } = fakeClient();
  room.connect();
  FakeSocket.made[0].open();
  FakeSocket.made[0].receive(welcome({ seq: 50 }));
  FakeSocket.made[0].drop();
  const second = await until(() => FakeSocket.made[1]);
  second.open();
  second.receive(welcome({ seq: 10, resumed: false }));
  assert.equal(room.lastSeq, 10);
  room.close();
});

test("query auth puts the token and last_seq in the URL and sends no first message", async () => {
  const { room } = fakeClient({ auth: "query" });
  room.connect();
  const first = FakeSocket.made[0];
  assert.equal(first.url.searchParams.get("token"), "tok");
  first.open();
  assert.deepEqual(first.sent, []);
  first.receive(welcome({ seq: 4 }));
  first.drop();
  const second = await until(() => FakeSocket.made[1]);
  assert.equal(second.url.searchParams.get("last_seq"), "4");
  room.close();
});

test("a lost reply: buying is sent again with the same rid, a comment rejects with ConnectionLost", async () => {
  const { room } = fakeClient();
  room.connect();
  const first = FakeSocket.made[0];
  first.open();
  first.receive(welcome({ seq: 1 }));
  const hold = room.reserve("s1", 2);
  const comment = room.comment("hello");
  const [reserveSent, commentSent] = first.sent.slice(1);
  assert.equal(reserveSent.type, "reserve");
  assert.equal(commentSent.type, "comment");
  first.drop();
  await assert.rejects(comment, ConnectionLost);
  const second = await until(() => FakeSocket.made[1]);
  second.open();
  second.receive(welcome({ seq: 1, resumed: true }));
  const resent = second.sent.filter((m) => m.type === "reserve");
  assert.deepEqual(resent, [reserveSent]); // the same rid, the same fields
  assert.equal(room.stats.resent, 1);
  second.receive({ type: "ack", rid: reserveSent.rid, hold_id: "h1", quantity: 2 });
  assert.equal((await hold).hold_id, "h1");
  // a refusal is the caller's: never sent again
  const refused = room.reserve("s1", 1);
  const rid = second.sent.at(-1).rid;
  second.receive({ type: "error", rid, code: "sold_out", message: "gone" });
  await assert.rejects(refused, SoldOut);
  assert.equal(second.sent.filter((m) => m.rid === rid).length, 1);
  room.close();
});

test("arguments are checked before sending", async () => {
  const { room } = fakeClient();
  room.connect();
  FakeSocket.made[0].open();
  FakeSocket.made[0].receive(welcome({}));
  assert.throws(() => room.reserve("s1", 1.5), TypeError);
  assert.throws(() => room.reserve("s1", "2"), TypeError);
  assert.throws(() => room.reserve("s1", 0), RangeError);
  assert.throws(() => room.reserve("", 1), RangeError);
  assert.throws(() => room.like(5000), RangeError);
  assert.throws(() => room.bid("a1", 10.5), TypeError);
  assert.throws(() => room.vote("p1", -1), RangeError);
  await assert.rejects(room.comment("   "), RangeError);
  await assert.rejects(room.request("x", {}, { rid: "r".repeat(65) }), RangeError);
  assert.deepEqual(FakeSocket.made[0].sent.map((m) => m.type), ["auth"]);
  room.close();
});

test("a refused first-message auth stops the client with its typed error: no retry loop", async () => {
  const { room, states } = fakeClient();
  const connected = room.connect();
  const socket = FakeSocket.made[0];
  socket.open();
  socket.receive({ type: "error", code: "banned", message: "you are banned" });
  socket.drop(4403, '{"code":"banned"}');
  const error = await connected.then(() => null, (e) => e);
  assert.ok(error instanceof Banned && error.code === "banned");
  assert.equal(room.refusal, error);
  assert.deepEqual(states, ["connecting", "banned"]);
  await assert.rejects(room.request("ping"), Banned);
  await new Promise((r) => setTimeout(r, 20)); // longer than the backoff: nothing reconnects
  assert.equal(FakeSocket.made.length, 1);
});

test("states: expired for an expired token, refused for the rest", async () => {
  for (const [code, reason, state] of [
    [4401, '{"code":"token_expired"}', "expired"],
    [4401, '{"code":"token_invalid"}', "refused"],
    [4404, '{"code":"room_not_found"}', "refused"],
  ]) {
    const { room } = fakeClient();
    room.connect().catch(() => {});
    FakeSocket.made[0].open();
    FakeSocket.made[0].drop(code, reason);
    assert.equal(room.state, state, reason);
    assert.equal(room.refusal.code, JSON.parse(reason).code);
  }
});

test("the async iterator yields the messages and ends at close()", async () => {
  const { room } = fakeClient();
  room.connect();
  const iterator = room[Symbol.asyncIterator]();
  FakeSocket.made[0].open();
  FakeSocket.made[0].receive(welcome({ seq: 2 }));
  FakeSocket.made[0].receive({ type: "sale_stock", seq: 3, available: 4 });
  assert.equal((await iterator.next()).value.type, "welcome");
  assert.equal((await iterator.next()).value.available, 4);
  const later = iterator.next();
  room.close();
  assert.deepEqual(await later, { value: undefined, done: true });
});
