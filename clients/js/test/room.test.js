// RoomClient and HostClient against a real `live serve` the tests spawn: framings, welcome,
// chat, buying, typed errors, reconnect and resume, 1001 retry_ms, first-message refusals,
// a lost reply retried with its rid.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  Banned,
  HostClient,
  LimitReached,
  RoomClient,
  RoomNotFound,
  SoldOut,
  TokenExpired,
  Unauthorized,
  UnknownSale,
} from "../src/live-client.js";
import { Server, mint, newId, until } from "./server.js";

const server = new Server();
const host = () => new HostClient(server.url, mint("host1", "host"));

before(() => server.start());
after(() => server.stop());

async function roomWithSale({ stock = 5, perUserLimit = 1, allowAnonymous = false } = {}) {
  const hosts = host();
  const room = (await hosts.createRoom("测试", { id: newId("r"), allow_anonymous: allowAnonymous })).id;
  const product = await hosts.createProduct(room, "绿茶", 1999);
  const sale = await hosts.createSale(room, product.id, stock, { per_user_limit: perUserLimit });
  return { room, product, sale };
}

function client(room, token, options = {}) {
  return new RoomClient(server.wsUrl, { room, token, requestTimeoutMs: 20000, connectTimeoutMs: 20000, ...options });
}

/** The next message matching `match` (from a listener attached before the action). */
function waitFor(room, match, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no such message in time")), timeoutMs);
    room.addEventListener("message", function listen(event) {
      if (!match(event.detail)) return;
      clearTimeout(timer);
      room.removeEventListener("message", listen);
      resolve(event.detail);
    });
  });
}

for (const framing of ["json", "msgpack"]) {
  test(`welcome, ping, reserve, hold, pay in ${framing}`, async () => {
    const { room: roomId, sale } = await roomWithSale({ stock: 5, perUserLimit: 3 });
    const user = newId("u");
    const room = client(roomId, mint(user), { framing });
    try {
      const welcome = await room.connect();
      assert.equal(welcome, room.welcome);
      assert.equal(welcome.user.id, user);
      assert.equal(welcome.room.id, roomId);
      assert.deepEqual(welcome.room.sales.map((s) => s.id), [sale.id]);
      assert.equal(welcome.room.sales[0].product.title, "绿茶");
      assert.equal(room.lastSeq, welcome.seq);
      assert.equal(room.state, "live");
      assert.ok((await room.ping()) > 0);
      assert.ok(Math.abs(room.now() - Date.now()) < 60000);
      const hold = await room.reserve(sale.id, 2);
      assert.equal(hold.sale_id, sale.id);
      assert.equal(hold.quantity, 2);
      assert.ok(hold.expires_at_ms > Date.now() - 60000);
      const order = await room.pay(hold.hold_id);
      assert.equal(order.quantity, 2);
      assert.equal(order.amount_cents, 2 * 1999);
      const again = await room.confirm(hold.hold_id); // confirming again: the same order
      assert.equal(again.order_id, order.order_id);
      await assert.rejects(room.reserve(sale.id, 2), LimitReached);
      await assert.rejects(room.reserve("no-such-sale", 1), UnknownSale);
    } finally {
      room.close();
    }
  });
}

test("a comment is acked and reaches another client", async () => {
  const { room: roomId } = await roomWithSale();
  const ann = client(roomId, mint(newId("u")));
  const bob = client(roomId, mint(newId("u")), { framing: "json" });
  try {
    await Promise.all([ann.connect(), bob.connect()]);
    const heard = waitFor(bob, (m) => m.type === "batch" && m.comments.some((c) => c.text === "你好"));
    const id = await ann.comment("你好");
    assert.ok(Number.isInteger(id) && id > 0);
    const batch = await heard;
    assert.equal(batch.comments.find((c) => c.text === "你好").id, id);
  } finally {
    ann.close();
    bob.close();
  }
});

test("sold out is a SoldOut with the server's code and message", async () => {
  const { room: roomId, sale } = await roomWithSale({ stock: 1 });
  const ann = client(roomId, mint(newId("u")));
  const bob = client(roomId, mint(newId("u")));
  try {
    await Promise.all([ann.connect(), bob.connect()]);
    await ann.reserve(sale.id, 1);
    const error = await bob.reserve(sale.id, 1).then(() => null, (e) => e);
    assert.ok(error instanceof SoldOut, String(error));
    assert.equal(error.code, "sold_out");
    assert.ok(error.message.length > 0);
  } finally {
    ann.close();
    bob.close();
  }
});

/** A WebSocket that closes itself right after writing its first reserve: its answer is lost. */
function losingFirstReserve(log) {
  return class extends WebSocket {
    send(data) {
      super.send(data);
      if (!log.cut && typeof data === "string" && JSON.parse(data).type === "reserve") {
        log.cut = JSON.parse(data);
        this.close(4000, "test: the answer is lost");
      }
    }
  };
}

test("a lost reply is retried with the same rid and gives the same hold, once", async () => {
  const { room: roomId, sale } = await roomWithSale({ stock: 10, perUserLimit: 3 });
  const log = {};
  const room = client(roomId, mint(newId("u")), { framing: "json", WebSocket: losingFirstReserve(log), backoffInitialMs: 50 });
  try {
    await room.connect();
    const hold = await room.reserve(sale.id, 2);
    assert.ok(log.cut, "the first answer was not cut off");
    assert.equal(room.stats.reconnects, 1);
    assert.equal(room.stats.resent, 1);
    // the same decision: asking again with that rid (a new call with it) answers the same hold
    assert.equal((await room.reserve(sale.id, 2, { rid: log.cut.rid })).hold_id, hold.hold_id);
    const current = await host().getSale(sale.id);
    assert.deepEqual([current.held, current.available], [2, 8]); // one hold of 2, not two
  } finally {
    room.close();
  }
});

test("a server restart: 1001 with retry_ms, reconnect, resume without duplicates", async () => {
  const own = new Server();
  await own.start();
  try {
    const hosts = new HostClient(own.url, mint("host1", "host"));
    const roomId = (await hosts.createRoom("restart", { id: newId("r") })).id;
    const viewer = new RoomClient(own.wsUrl, { room: roomId, token: mint(newId("u")), framing: "json", connectTimeoutMs: 20000 });
    // Ask for everything again on the reconnect: what was delivered must be dropped.
    viewer.resumeFrom = () => 0;
    const seen = [];
    const states = [];
    viewer.addEventListener("message", (e) => seen.push(e.detail));
    viewer.addEventListener("state", (e) => states.push(e.detail));
    await viewer.connect();
    const say = async (text) => {
      const staff = new RoomClient(own.wsUrl, { room: roomId, token: mint("host1", "host"), connectTimeoutMs: 20000 });
      await staff.connect();
      await staff.hostMessage(text);
      staff.close();
    };
    await say("one");
    await until(() => seen.some((m) => m.type === "host_message" && m.text === "one"), { what: "one" });
    const firstSeq = viewer.lastSeq;
    await own.restart(); // SIGTERM: every socket is closed with 1001 and retry_ms
    await until(() => viewer.state === "live", { timeoutMs: 60000, what: "the reconnect" });
    await say("two");
    await until(() => seen.some((m) => m.type === "host_message" && m.text === "two"), { what: "two" });
    assert.deepEqual(seen.filter((m) => m.type === "host_message").map((m) => m.text), ["one", "two"]);
    assert.equal(viewer.stats.lastCloseCode, 1001);
    assert.match(viewer.stats.lastCloseReason, /"retry_ms"/);
    assert.equal(viewer.stats.reconnects, 1);
    assert.ok(viewer.stats.duplicatesDropped >= 1);
    assert.ok(viewer.lastSeq > firstSeq);
    assert.deepEqual(states.slice(0, 2), ["connecting", "live"]);
    assert.ok(states.includes("reconnecting"));
    const welcomes = seen.filter((m) => m.type === "welcome");
    assert.equal(welcomes.length, 2);
    assert.equal(welcomes[1].resumed, true);
    viewer.close();
  } finally {
    await own.stop();
  }
});

test("first-message refusals stop the client for good with their typed error", async () => {
  const { room: roomId } = await roomWithSale();
  const banned = newId("u");
  const staff = client(roomId, mint("host1", "host"));
  await staff.connect();
  await staff.request("ban", { user_id: banned });
  staff.close();
  const cases = [
    [{ token: "forged.token.value" }, Unauthorized, "token_invalid", "refused"],
    [{ token: null }, Unauthorized, "token_missing", "refused"], // a guest in a sign-in room
    [{ token: mint(newId("u"), "viewer", { ttlS: -60 }) }, TokenExpired, "token_expired", "expired"],
    [{ token: mint(banned) }, Banned, "banned", "banned"],
    [{ token: mint(newId("u")), room: newId("missing") }, RoomNotFound, "room_not_found", "refused"],
  ];
  for (const [options, Class, code, state] of cases) {
    const room = client(options.room || roomId, options.token, { backoffInitialMs: 10 });
    const error = await room.connect().then(() => null, (e) => e);
    assert.ok(error instanceof Class, `${code}: ${error}`);
    assert.equal(error.code, code);
    assert.equal(room.state, state);
    assert.equal(room.refusal, error);
    assert.equal(room.stats.failedConnects, 0);
    assert.equal(room.stats.reconnects, 0);
    assert.ok([4401, 4403, 4404].includes(room.stats.lastCloseCode));
  }
});

test("a guest joins an anonymous room with first-message auth; query auth works too", async () => {
  const { room: roomId } = await roomWithSale({ allowAnonymous: true });
  const guest = client(roomId, null);
  const old = client(roomId, mint("qq"), { auth: "query" });
  try {
    assert.match((await guest.connect()).user.id, /^anon_/);
    assert.equal((await old.connect()).user.id, "qq");
  } finally {
    guest.close();
    old.close();
  }
});

test("HostClient rejects with typed errors and their HTTP status", async () => {
  const error = await host().getRoom(newId("missing")).then(() => null, (e) => e);
  assert.ok(error instanceof RoomNotFound, String(error));
  assert.equal(error.status, 404);
  const unauthorized = await new HostClient(server.url, "forged.token.value").listRooms().then(() => null, (e) => e);
  assert.ok(unauthorized instanceof Unauthorized && unauthorized.status === 401, String(unauthorized));
  const { room: roomId, sale } = await roomWithSale({ stock: 3 });
  assert.ok((await host().listSales(roomId)).some((s) => s.id === sale.id));
  assert.equal((await host().saleOrders(sale.id)).orders.length, 0);
});
