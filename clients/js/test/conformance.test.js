// The shared protocol vectors (protocol/vectors/*.json, format in protocol/vectors/README.md)
// through the JavaScript client against a spawned `live serve`: each server frame a vector
// expects must come out of the client as its documented result. An ack is the method's return
// (its fields as the vector says), an error is the class ERRORS maps its code to (with .code,
// .message and the extra fields in .data), a close is the client's typed stop (4401
// Unauthorized, 4403 Forbidden, 4404 NotFound) with the reason's code.
// The model: clients/python/tests/test_conformance.py.
//
// How the client authenticates: `auth: "message"` cases with its first-message auth (its own
// first message), `query` cases with `?token=`, and `header` cases with first-message auth (a
// browser cannot set the header; the welcome and replies are the same). Skipped, case by case
// with the reason: `server_only` vectors, and `handshake` vectors (a refused HTTP handshake is
// only a close 1006 to the WebSocket API, in browsers and Node alike: the status and body
// cannot be read; the first-message auth vectors cover the same refusals in band).

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { ERRORS, Forbidden, HostClient, LiveError, NotFound, RoomClient, Unauthorized, roomUrl } from "../src/live-client.js";
import { REPO, Server, mint, newId, until } from "./server.js";

const VECTORS = join(REPO, "protocol", "vectors");
const REPLIES = new Set(["ack", "error", "pong"]);
const CLOSES = { 4401: Unauthorized, 4403: Forbidden, 4404: NotFound };

// -- the vectors' language (as in the Python runners) ------------------------------------------------

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const TYPES = {
  $int: (v) => Number.isInteger(v) || typeof v === "bigint",
  $str: (v) => typeof v === "string",
  $bool: (v) => typeof v === "boolean",
  $list: (v) => Array.isArray(v),
  $object: isObject,
  $any: () => true,
};

function substText(text, names) {
  return text.replace(/\$([a-z_]+)/g, (all, name) => (name in names ? String(names[name]) : all));
}

function subst(value, names) {
  if (typeof value === "string" && value.startsWith("$") && value.slice(1) in names) return names[value.slice(1)];
  if (typeof value === "string") return substText(value, names);
  if (Array.isArray(value)) return value.map((v) => subst(v, names));
  if (isObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, subst(v, names)]));
  return value;
}

const show = (v) => JSON.stringify(v, (_, x) => (typeof x === "bigint" ? String(x) : x));

/** Why `actual` does not match `pattern` (null: it matches). */
function mismatch(pattern, actual, names, path = "") {
  if (typeof pattern === "string" && pattern.startsWith("$")) {
    if (pattern in TYPES) return TYPES[pattern](actual) ? null : `${path}: ${show(actual)} is not ${pattern}`;
    if (pattern.startsWith("$contains:")) {
      return typeof actual === "string" && actual.includes(pattern.slice(10)) ? null : `${path}: ${show(actual)} lacks ${pattern.slice(10)}`;
    }
    if (pattern.slice(1) in names) {
      const expected = names[pattern.slice(1)];
      return actual === expected ? null : `${path}: ${show(actual)} != ${show(expected)} (${pattern})`;
    }
    return `${path}: unknown placeholder ${pattern}`;
  }
  if (isObject(pattern)) {
    if (!isObject(actual)) return `${path}: ${show(actual)} is not an object`;
    for (const [key, sub] of Object.entries(pattern)) {
      if (sub === "$absent") {
        if (key in actual) return `${path}.${key}: present (${show(actual[key])}), expected absent`;
        continue;
      }
      if (!(key in actual)) return `${path}.${key}: missing`;
      const why = mismatch(sub, actual[key], names, `${path}.${key}`);
      if (why) return why;
    }
    return null;
  }
  if (Array.isArray(pattern)) {
    if (!Array.isArray(actual) || actual.length !== pattern.length) return `${path}: ${show(actual)} is not a list of ${pattern.length}`;
    for (let i = 0; i < pattern.length; i++) {
      const why = mismatch(pattern[i], actual[i], names, `${path}[${i}]`);
      if (why) return why;
    }
    return null;
  }
  return typeof pattern === typeof actual && pattern === actual ? null : `${path}: ${show(actual)} != ${show(pattern)}`;
}

function save(spec, obj, names) {
  for (const [name, dotted] of Object.entries(spec)) {
    let value = obj;
    for (const part of dotted.split(".")) value = value[part];
    names[name] = value;
  }
}

// -- frames to client calls ---------------------------------------------------------------------------

/** The client's method for each command type (the result as the fields of its ack); the rest go through request(). */
const METHODS = {
  ping: async (r, f, rid) => ({ server_time_ms: await r.ping({ rid }) }),
  comment: async (r, f, rid) => ({ seq: await r.comment(f.text, { rid }) }),
  reserve: (r, f, rid) => r.reserve(f.sale_id, f.quantity, { rid }),
  confirm: async (r, f, rid) => ({ order: await r.confirm(f.hold_id, f.coupon_id, { rid }) }),
  cancel: (r, f, rid) => r.cancel(f.hold_id, { rid }),
  open_team: (r, f, rid) => r.openTeam(f.sale_id, f.quantity ?? 1, { rid }),
  join_team: (r, f, rid) => r.joinTeam(f.sale_id, f.code, f.quantity ?? 1, { rid }),
  claim_coupon: (r, f, rid) => r.claimCoupon(f.sale_id, f.batch_id, { rid }),
  bid: (r, f, rid) => r.bid(f.auction_id, f.amount_cents, { rid }),
  pay_auction: async (r, f, rid) => ({ order: await r.payAuction(f.auction_id, { rid }) }),
  enter_draw: async (r, f, rid) => ({ entered: await r.enterDraw(f.draw_id, { rid }) }),
  claim_prize: (r, f, rid) => r.claimPrize(f.draw_id, { rid }),
  vote: (r, f, rid) => r.vote(f.poll_id, f.option, { rid }),
  ask: async (r, f, rid) => ({ question: await r.ask(f.text, { rid }) }),
  upvote: async (r, f, rid) => ({ upvotes: await r.upvote(f.question_id, { rid }) }),
};

const refusedArguments = (error) => error instanceof TypeError || error instanceof RangeError;

/**
 * The frame through the client's method for its type: its result (null for a like). A frame
 * the method refuses before sending (the client checks its arguments: quantity 0, an empty
 * text) goes through request() as raw fields, so the server's answer to it is checked too.
 */
async function call(room, frame) {
  const { type, rid, ...fields } = frame;
  if (type === "like") {
    try {
      room.like(fields.count ?? 1);
      return null;
    } catch (error) {
      if (!refusedArguments(error)) throw error;
    }
  } else if (type in METHODS) {
    try {
      return await METHODS[type](room, fields, rid);
    } catch (error) {
      if (!refusedArguments(error)) throw error;
    }
  }
  return room.request(type, fields, { rid, timeoutMs: 15000 });
}

// -- the runner ------------------------------------------------------------------------------------

class Case {
  constructor(server, vector, framing) {
    this.server = server;
    this.vector = vector;
    this.framing = framing;
    this.connect = vector.connect || {};
    const hostId = newId("h");
    const user = String(this.connect.user ?? "$user").replace("$host_id", hostId);
    this.names = {
      room_id: newId("cc"),
      host_id: hostId,
      user_id: user === "$user" ? newId("u") : user,
      missing_room_id: newId("no"),
    };
    this.names.token = this.token(this.connect.token ?? "valid");
    this.hostToken = mint(hostId, "host");
    this.hosts = new HostClient(server.url, this.hostToken);
    this.host = null;
    this.inbox = [];
  }

  token(kind) {
    const role = this.connect.role ?? "viewer";
    if (kind === "none") return null;
    if (kind === "invalid") return "forged.token.value";
    const ttlS = { valid: 600, wrong_room: 600, expired: -60 }[kind];
    return mint(this.names.user_id, role, { room: kind === "wrong_room" ? "some_other_room" : "*", ttlS });
  }

  async hostSend(frame) {
    if (!this.host) {
      this.host = new RoomClient(this.server.wsUrl, { room: this.names.room_id, token: this.hostToken, framing: "json" });
      await this.host.connect();
    }
    const { type, rid, ...fields } = subst(frame, this.names);
    return this.host.request(type, fields, { timeoutMs: 15000 });
  }

  async setup() {
    const options = this.vector.room || {};
    await this.hosts.createRoom("conformance", { id: this.names.room_id, allow_anonymous: Boolean(options.allow_anonymous) });
    for (const item of this.vector.setup || []) {
      const answer = "post" in item
        ? await this.hosts.call("POST", subst(item.post, this.names), subst(item.body, this.names))
        : await this.hostSend(item.host);
      save(item.save || {}, answer, this.names);
    }
  }

  url() {
    const url = new URL(roomUrl(this.server.wsUrl, subst(this.connect.room ?? "$room_id", this.names)));
    for (const [key, value] of Object.entries(this.connect.query || {})) url.searchParams.set(key, value);
    return url.toString();
  }

  async run() {
    await this.setup();
    assert.ok(!("first" in this.connect), "a first message of its own is server_only");
    const room = new RoomClient(this.url(), {
      token: this.names.token,
      framing: this.framing,
      auth: this.connect.auth === "query" ? "query" : "message",
      requestTimeoutMs: 15000,
      connectTimeoutMs: 15000,
    });
    room.addEventListener("message", (event) => this.inbox.push(event.detail));
    try {
      if (this.vector.welcome === false) return await this.refused(room);
      await room.connect();
      const welcome = this.vector.welcome ?? { type: "welcome" };
      const why = mismatch(welcome, room.welcome, this.names);
      assert.equal(why, null, `welcome ${show(room.welcome)}: ${why}`);
      for (const step of this.vector.steps || []) await this.step(room, step);
      if ("close" in this.vector) await this.closed(room);
    } finally {
      room.close();
      if (this.host) this.host.close();
    }
  }

  async step(room, step) {
    const expect = step.expect || [];
    const replies = expect.filter((p) => REPLIES.has(p.type));
    const events = expect.filter((p) => !REPLIES.has(p.type));
    assert.ok(replies.length <= 1, "one reply per step");
    let result = null;
    if ("host" in step) {
      result = await this.hostSend(step.host);
    } else if (!replies.length) {
      assert.equal(await call(room, subst(step.send, this.names)), null);
    } else if (replies[0].type === "error") {
      const pattern = replies[0];
      const error = await call(room, subst(step.send, this.names)).then(
        (answer) => assert.fail(`expected ${pattern.code}, got ${show(answer)}`),
        (e) => e,
      );
      assert.ok(error instanceof LiveError, String(error));
      assert.equal(error.constructor, ERRORS[pattern.code], `${pattern.code} raised as ${error.name}: ${error}`);
      assert.equal(error.code, pattern.code);
      const extra = Object.fromEntries(Object.entries(pattern).filter(([k]) => !["type", "code", "message", "rid"].includes(k)));
      const why = mismatch(extra, error.data, this.names) || mismatch(pattern.message ?? "$str", error.message, this.names);
      assert.equal(why, null, `${error} ${show(error.data)}: ${why}`);
    } else {
      result = await call(room, subst(step.send, this.names));
      assert.ok(result !== null && typeof result === "object");
      const pattern = Object.fromEntries(Object.entries(replies[0]).filter(([k]) => k in result));
      const why = mismatch(pattern, result, this.names);
      assert.equal(why, null, `result ${show(result)}: ${why}`);
    }
    for (const pattern of events) await this.event(pattern);
    if ("save" in step) {
      assert.ok(result, "nothing to save from");
      save(step.save, result, this.names);
    }
  }

  /** The next delivered message matching `pattern` (the ones before it are consumed). */
  async event(pattern) {
    await until(
      () => {
        while (this.inbox.length) {
          const message = this.inbox.shift();
          if (message.type === pattern.type && mismatch(pattern, message, this.names) === null) return true;
        }
        return false;
      },
      { what: `a ${pattern.type} event` },
    );
  }

  /** A refused first-message auth: no welcome; connect() rejects with the error frame's class, not retried. */
  async refused(room) {
    const steps = this.vector.steps || [];
    assert.ok(steps.every((s) => !("send" in s) && !("host" in s)));
    const expected = steps.flatMap((s) => s.expect || []);
    assert.equal(expected.length, 1);
    const [pattern] = expected; // the error frame, before the close
    assert.equal(pattern.type, "error");
    const error = await room.connect().then(() => assert.fail("welcomed"), (e) => e);
    assert.equal(error.constructor, ERRORS[pattern.code], `${pattern.code} raised as ${error}`);
    assert.equal(error.status, null);
    assert.equal(room.stats.reconnects, 0);
    assert.equal(room.stats.failedConnects, 0);
    const why = mismatch(pattern.message ?? "$str", error.message, this.names);
    assert.equal(why, null, `${error}: ${why}`);
    this.checkClose(room, error);
  }

  async closed(room) {
    await until(() => room.refusal, { what: "the close" });
    this.checkClose(room, room.refusal);
  }

  checkClose(room, error) {
    const expected = this.vector.close;
    assert.ok(error instanceof CLOSES[expected.code], String(error));
    assert.equal(room.stats.lastCloseCode, expected.code);
    const reason = expected.reason || {};
    const why = mismatch(reason, JSON.parse(room.stats.lastCloseReason || "{}"), this.names);
    assert.equal(why, null, `close reason ${room.stats.lastCloseReason}: ${why}`);
    if ("code" in reason) assert.equal(error.code, reason.code);
    assert.ok(["refused", "banned", "expired"].includes(room.state), room.state);
  }
}

const server = new Server();
before(() => server.start());
after(() => server.stop());

const files = readdirSync(VECTORS).filter((name) => name.endsWith(".json")).sort();
assert.ok(files.length > 0, `no vectors in ${VECTORS}`);
for (const file of files) {
  describe(file.replace(/\.json$/, ""), () => {
    for (const vector of JSON.parse(readFileSync(join(VECTORS, file), "utf8"))) {
      const framing = vector.connect?.framing ?? "both";
      for (const f of framing === "both" ? ["json", "msgpack"] : [framing]) {
        let skip = false;
        if (vector.server_only) skip = `server_only: ${vector.server_only}`;
        else if ("handshake" in vector) skip = "handshake: the WebSocket API shows a refused handshake only as a close 1006";
        test(`${vector.name}[${f}]`, { skip, timeout: 60000 }, () => new Case(server, vector, f).run());
      }
    }
  });
}
