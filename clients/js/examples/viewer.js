// The example viewer page's script: everything it shows comes from the RoomClient's welcome and
// its "message" events; every text from the server goes into the page with textContent.

import { RoomClient } from "../src/live-client.js";

const params = new URLSearchParams(location.search);
const server = params.get("server") || location.origin;
const roomId = params.get("room") || "spring";
const token = new URLSearchParams(location.hash.slice(1)).get("token");
history.replaceState(null, "", location.pathname + location.search); // the token leaves the address bar

const $ = (id) => document.getElementById(id);
const money = (cents) => `¥${(cents / 100).toFixed(2)}`;

function showPinned(product) {
  $("pinned").hidden = !product;
  $("pinned").textContent = product ? `${product.title} ${money(product.price_cents)}` : "";
}

const shown = new Set(); // comment ids: a resumed welcome repeats the recent ones

function addComments(comments) {
  for (const c of comments) {
    if (shown.has(c.id)) continue;
    shown.add(c.id);
    const line = document.createElement("li");
    line.dataset.testid = "chat-line";
    line.textContent = `${c.user_id}: ${c.text}`;
    $("chat").append(line);
  }
}

const room = new RoomClient(server, { room: roomId, token, framing: "json", connectTimeoutMs: Infinity });
window.liveRoom = room; // for the example's test and the curious

room.addEventListener("state", (event) => {
  $("state").dataset.state = event.detail;
  $("state").textContent = event.detail;
  if (room.refusal) $("notice").textContent = room.refusal.message;
});

room.addEventListener("message", (event) => {
  const message = event.detail;
  if (message.type === "welcome") {
    $("title").textContent = message.room.title;
    showPinned(message.pinned);
    if (!message.resumed) {
      $("chat").replaceChildren();
      shown.clear();
    }
    addComments(message.comments);
  } else if (message.type === "batch") {
    addComments(message.comments || []);
  } else if (message.type === "product_pinned") {
    showPinned(message.product);
  } else if (message.type === "product_unpinned") {
    showPinned(null);
  }
});

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("comment").value.trim();
  if (!text) return;
  try {
    await room.comment(text);
    $("comment").value = "";
    $("notice").textContent = "";
  } catch (error) {
    $("notice").textContent = error.message; // the server's words: slow mode, muted, ...
  }
});

room.connect();
