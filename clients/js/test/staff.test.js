// A host's commands through RoomClient's staff methods, against a real `live serve`:
// moderation (mute, ban, delete, slow mode, clear) and the Q&A queue, and what a viewer's
// client sees of each.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Banned, Forbidden, HostClient, Muted, QuestionClosed, RoomClient, SlowMode } from "../src/live-client.js";
import { Server, mint, newId } from "./server.js";

const server = new Server();
before(() => server.start());
after(() => server.stop());

async function newRoom() {
  return (await new HostClient(server.url, mint("host1", "host")).createRoom("staff", { id: newId("r") })).id;
}

function client(room, token) {
  return new RoomClient(server.wsUrl, { room, token, requestTimeoutMs: 20000, connectTimeoutMs: 20000 });
}

/** Every message the client gets from now on, and a wait for the first that matches. */
function watch(room) {
  const seen = [];
  room.addEventListener("message", (event) => seen.push(event.detail));
  return async (match, timeoutMs = 20000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = seen.find(match);
      if (found) return found;
      if (Date.now() > deadline) throw new Error("no such message in time");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
}

test("moderation commands reach the viewer", async () => {
  const roomId = await newRoom();
  const viewerId = newId("u");
  const host = client(roomId, mint("host1", "host"));
  const viewer = client(roomId, mint(viewerId));
  const seen = watch(viewer);
  try {
    await host.connect();
    await viewer.connect();
    const commentId = await viewer.comment("first");
    await host.deleteComment(commentId);
    assert.equal((await seen((m) => m.type === "comment_deleted")).comment_id, commentId);

    await host.mute(viewerId, 60);
    await seen((m) => m.type === "user_muted" && m.user_id === viewerId);
    await assert.rejects(viewer.comment("muted now"), Muted);
    await host.unmute(viewerId);
    await viewer.comment("back");

    await host.slowMode(30);
    assert.equal((await seen((m) => m.type === "slow_mode")).interval_s, 30);
    await viewer.comment("one per 30 s");
    await assert.rejects(viewer.comment("too soon"), SlowMode);
    await host.slowMode(0);

    await host.clearChat();
    await seen((m) => m.type === "chat_cleared");

    await host.ban(viewerId);
    await new Promise((resolve) => {
      if (viewer.state === "banned") resolve();
      viewer.addEventListener("state", (e) => e.detail === "banned" && resolve());
    });
    assert.ok(viewer.refusal instanceof Banned);
    await host.unban(viewerId);
    const again = client(roomId, mint(viewerId));
    assert.equal((await again.connect()).user.id, viewerId);
    again.close();
  } finally {
    host.close();
    viewer.close();
  }
});

test("staff methods check their arguments before sending", async () => {
  const host = client(await newRoom(), mint("host1", "host"));
  try {
    await host.connect();
    assert.throws(() => host.deleteComment("7"), TypeError);
    assert.throws(() => host.mute(newId("u"), 0), RangeError);
    assert.throws(() => host.slowMode(3601), RangeError);
    assert.throws(() => host.ban(""), RangeError);
  } finally {
    host.close();
  }
});

test("the question queue through the staff methods", async () => {
  const roomId = await newRoom();
  const host = client(roomId, mint("host1", "host"));
  const viewer = client(roomId, mint(newId("u")));
  const seen = watch(viewer);
  try {
    await host.connect();
    await viewer.connect();
    const first = await viewer.ask("发货要多久?");
    const second = await viewer.ask("有优惠券吗?");
    const pinned = await host.pinQuestion(first.id);
    assert.equal(pinned.id, first.id);
    assert.equal(pinned.pinned, true);
    assert.equal((await seen((m) => m.type === "question_pinned")).question.id, first.id);
    assert.equal((await host.unpinQuestion(first.id)).pinned, false);
    assert.equal((await host.answerQuestion(first.id)).state, "answered");
    assert.equal((await seen((m) => m.type === "question_answered")).question.id, first.id);
    assert.equal((await host.dismissQuestion(second.id)).state, "dismissed");
    await assert.rejects(host.pinQuestion(second.id), QuestionClosed);
    await assert.rejects(viewer.answerQuestion(second.id), Forbidden); // a viewer is not staff
  } finally {
    host.close();
    viewer.close();
  }
});
