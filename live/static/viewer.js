// The viewer page, /r/{room}: watch a live room, chat, like, and buy in its flash sales.
//
// Speaks the public WebSocket protocol (docs/protocol.md) through the client package's
// RoomClient (clients/js; common.js's openRoom), which reconnects and resumes by itself. Everything a stranger wrote (comments, titles, host
// messages) goes into the page as text through el(), never as HTML.

import { api, clock, describeError, el, extend, language, money, openRoom, setLanguage, t } from "/static/common.js";
import { RoomTools } from "/static/tools.js";

extend({
  en: {
    loading: "Loading…",
    // The connection badge: short words (the notice says more).
    badge_connecting: "Connecting…",
    badge_live: "Live",
    badge_reconnecting: "Reconnecting…",
    badge_offline: "Offline",
    badge_banned: "Banned",
    badge_expired: "Signed out",
    badge_refused: "Can't join",
    skip_to_chat: "Skip to the comment box",
    online: "online",
    host_is: "Host: {host}",
    host_messages: "Messages from the host",
    shop: "Shop",
    chat: "Chat",
    empty_chat: "No comments yet. Say hello!",
    say_something: "Say something…",
    send: "Send",
    like: "Like",
    likes_count: "{n} likes",
    sign_in: "Sign in",
    sign_out: "Sign out",
    token_label: "Paste your token",
    token_help: "Your host or shop gives you a link or a token. It stays in this tab only.",
    signed_in_as: "Signed in as {user}",
    guest: "Watching as a guest",
    lang_switch: "Language: switch to Chinese",
    role_host: "Host",
    role_moderator: "Moderator",
    now_showing: "Now showing",
    go_to_sale: "Go to the flash sale",
    flash_sale: "Flash sale",
    phase_not_started: "Upcoming",
    phase_live: "On now",
    phase_sold_out: "Sold out",
    phase_ended: "Ended",
    phase_frozen: "Paused",
    starts_in: "Starts in {time}",
    starting: "Starting…",
    ends_in: "Ends in {time}",
    stock_left: "Left",
    stock_of: "of {total}",
    stock_label: "Stock left",
    buy: "Buy now",
    buy_soon: "Opens soon",
    buying: "Reserving…",
    btn_sold_out: "Sold out",
    btn_ended: "Sale ended",
    btn_paused: "Paused",
    btn_limit: "Limit reached",
    btn_pay_first: "Finish paying first",
    quantity: "Quantity",
    fewer: "One fewer",
    more: "One more",
    limit_note: "Limit {n} per person",
    bought_note: "You bought {n}",
    sold_out_note: "Sold out. Units may come back when holds expire.",
    hold_title: "Reserved for you",
    hold_left: "Pay within {time}",
    hold_up: "Time is up…",
    hold_units: "{n} × {price}",
    pay: "Pay {amount}",
    paying: "Paying…",
    cancel: "Cancel",
    cancelling: "Cancelling…",
    simulated: "Simulated payment: no real money moves.",
    status_confirmed: "Order confirmed: paid {amount}",
    status_confirmed_plain: "Order confirmed: paid",
    status_checking: "Checking your order…",
    status_expired: "Expired: the hold ran out before payment",
    status_cancelled: "Cancelled: the units went back",
    status_team_failed: "Group buy failed: {amount} refunded",
    status_team_failed_plain: "Group buy failed: you will be refunded",
    order_number: "Order {id}",
    group_offer: "Group of {size}: {price} each",
    start_team: "Start a group buy",
    starting_team: "Starting…",
    team_open: "Group buy {code}: {members} of {size} joined",
    team_left: "{time} left to fill it",
    team_up: "Time is up…",
    team_paid: "You paid {amount} on joining; refunded if the group does not fill.",
    team_complete: "Group complete!",
    team_share: "Share this link with friends",
    copy: "Copy",
    copied: "Link copied",
    copy_failed: "Select the link and copy it",
    join_team: "Join {code}",
    joining: "Joining…",
    join_offer: "You are invited to group buy {code}",
    sale_not_here: "That group buy's sale is not on in this room now.",
    coupon_offer: "{amount} off · {count} coupons",
    coupon_off: "{amount} off",
    claim_coupon: "Claim coupon",
    claiming: "Claiming…",
    coupon_claimed: "Claimed: taken off when you pay",
    coupon_in_sum: "coupon",
    coupon_used: "Coupon used",
    chat_cleared: "The chat was cleared",
    lagged_note: "Your connection fell behind: some chat was skipped.",
    slow_mode_note: "Slow mode: one comment every {n} s",
    muted_note: "You are muted until {time}",
    join_failed_guest: "Could not join as a guest. This room may need you to sign in.",
    sign_in_to_buy: "Sign in to buy.",
    // Error codes common.js has no words for.
    unknown_sale: "That sale is not in this room.",
    not_your_hold: "That hold belongs to someone else.",
    already_confirmed: "That order is paid already.",
    in_team: "A group buy's order completes or fails with the group.",
    amount_changed: "The price changed while paying; the payment was refunded. Try again.",
    batch_not_found: "No such coupon batch.",
    not_group_sale: "This sale has no group price.",
    duplicate: "That request was already sent with other details.",
    invalid_field: "The server refused a value.",
    missing_field: "A required value is missing.",
    internal: "Something went wrong on the server.",
    too_many_connections: "Too many connections from your address.",
    server_full: "The server is full; try again soon.",
  },
  zh: {
    loading: "加载中…",
    badge_connecting: "连接中…",
    badge_live: "直播中",
    badge_reconnecting: "重连中…",
    badge_offline: "已断开",
    badge_banned: "已封禁",
    badge_expired: "需重新登录",
    badge_refused: "无法进入",
    skip_to_chat: "跳到评论框",
    online: "在线",
    host_is: "主播：{host}",
    host_messages: "主播消息",
    shop: "商品",
    chat: "聊天",
    empty_chat: "还没有评论，来打个招呼吧！",
    say_something: "说点什么…",
    send: "发送",
    like: "点赞",
    likes_count: "{n} 个赞",
    sign_in: "登录",
    sign_out: "退出登录",
    token_label: "粘贴你的令牌",
    token_help: "主播或商家会给你一个链接或令牌，它只保存在当前标签页。",
    signed_in_as: "已登录：{user}",
    guest: "游客观看中",
    lang_switch: "语言：切换到英文",
    role_host: "主播",
    role_moderator: "房管",
    now_showing: "正在讲解",
    go_to_sale: "去抢购",
    flash_sale: "限时秒杀",
    phase_not_started: "预告",
    phase_live: "抢购中",
    phase_sold_out: "已抢光",
    phase_ended: "已结束",
    phase_frozen: "暂停中",
    starts_in: "距开抢 {time}",
    starting: "即将开抢…",
    ends_in: "{time} 后结束",
    stock_left: "剩余",
    stock_of: "共 {total} 件",
    stock_label: "剩余库存",
    buy: "立即抢购",
    buy_soon: "即将开抢",
    buying: "抢购中…",
    btn_sold_out: "已抢光",
    btn_ended: "已结束",
    btn_paused: "暂停中",
    btn_limit: "已达限购",
    btn_pay_first: "请先完成支付",
    quantity: "数量",
    fewer: "减少一件",
    more: "增加一件",
    limit_note: "每人限购 {n} 件",
    bought_note: "你已购买 {n} 件",
    sold_out_note: "已售罄，锁定的库存过期后可能会释放。",
    hold_title: "已为你锁定库存",
    hold_left: "请在 {time} 内支付",
    hold_up: "时间到了…",
    hold_units: "{n} × {price}",
    pay: "支付 {amount}",
    paying: "支付中…",
    cancel: "取消",
    cancelling: "取消中…",
    simulated: "模拟支付：不会产生真实扣款。",
    status_confirmed: "下单成功：已支付 {amount}",
    status_confirmed_plain: "下单成功：已支付",
    status_checking: "正在查询订单…",
    status_expired: "已过期：未在时限内支付",
    status_cancelled: "已取消：库存已释放",
    status_team_failed: "拼团失败：已退款 {amount}",
    status_team_failed_plain: "拼团失败：款项将退回",
    order_number: "订单 {id}",
    group_offer: "{size} 人团 每件 {price}",
    start_team: "发起拼团",
    starting_team: "发起中…",
    team_open: "拼团 {code}：已有 {members}/{size} 人",
    team_left: "还剩 {time} 成团",
    team_up: "时间到了…",
    team_paid: "参团时已支付 {amount}，未成团将全额退款。",
    team_complete: "拼团成功！",
    team_share: "把链接分享给好友",
    copy: "复制",
    copied: "链接已复制",
    copy_failed: "请选中链接后复制",
    join_team: "加入拼团 {code}",
    joining: "加入中…",
    join_offer: "好友邀请你参加拼团 {code}",
    sale_not_here: "该拼团对应的秒杀现在不在此直播间进行。",
    coupon_offer: "立减 {amount} · 共 {count} 张",
    coupon_off: "立减 {amount}",
    claim_coupon: "领取优惠券",
    claiming: "领取中…",
    coupon_claimed: "已领取，支付时自动抵扣",
    coupon_in_sum: "优惠券",
    coupon_used: "优惠券已使用",
    chat_cleared: "聊天已被清空",
    lagged_note: "网络跟不上，部分评论已跳过。",
    slow_mode_note: "慢速模式：每 {n} 秒可发一条",
    muted_note: "你已被禁言至 {time}",
    join_failed_guest: "无法以游客身份进入，此直播间可能需要登录。",
    sign_in_to_buy: "请先登录再购买。",
    unknown_sale: "该秒杀不在此直播间。",
    not_your_hold: "该锁定属于其他用户。",
    already_confirmed: "该订单已支付。",
    in_team: "拼团订单随拼团一起成功或失败。",
    amount_changed: "支付时价格发生变化，款项已退回，请重试。",
    batch_not_found: "找不到这批优惠券。",
    not_group_sale: "该秒杀没有拼团价。",
    duplicate: "该请求已用其他内容发送过。",
    invalid_field: "服务器拒绝了某个值。",
    missing_field: "缺少必填的值。",
    internal: "服务器出错了。",
    too_many_connections: "你的网络地址连接数过多。",
    server_full: "服务器已满，请稍后再试。",
  },
});

const $id = (id) => document.getElementById(id);
const CHAT_CAP = 100;
const HOST_MESSAGES_CAP = 8;
// "checking": a remembered purchase whose fate the page is asking the ledger about.
const ACTIVE = new Set(["held", "paying", "checking", "team_open", "team_complete"]);
const UNPAID = new Set(["held", "paying", "checking"]);
const STATUS_ICONS = { confirmed: "✓", cancelled: "×", expired: "!", team_failed: "!", checking: "…" };
const MEMORY_MS = 24 * 3600 * 1000; // remembered purchases older than a day are forgotten
const MEMORY_CAP = 50; // the newest purchases kept per room and user
const YOU_ORDERS = 20; // the most orders a welcome's `you` lists (docs/protocol.md)

const ROOM = decodeURIComponent(location.pathname.split("/")[2] || "");
const TOKEN_KEY = `live.token.${ROOM}`;
const invite = (() => {
  const query = new URLSearchParams(location.search);
  const code = (query.get("team") || "").trim().toUpperCase();
  const sale = (query.get("sale") || "").trim();
  return code && sale ? { code, sale, used: false } : null;
})();

const S = {
  token: null,
  socket: null,
  me: null,
  room: null,
  everLive: false,
  diagnosed: false,
  banned: false, // banned, or refused: the page only watches (or shows why it cannot)
  online: 0,
  likes: 0,
  pendingLikes: 0,
  likeTimer: null,
  snapshot: null, // after a resumed welcome: its seq and the sales it showed
  stuckTimer: null,
  pinned: null,
  slowModeS: 0,
  mutedUntil: 0,
  sales: new Map(), // sale id -> sale (the server's fields, plus our view state)
  holds: new Map(), // hold id -> purchase
  memoryUser: null, // whose remembered purchases were restored (and are kept) in this tab
  comments: new Map(), // comment id -> <li>
  commentBusy: false,
};

// -- storage (sessionStorage can throw in locked-down browsers) --------------------------------

function loadToken() {
  let token = null;
  const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
  const fromUrl = hash.get("token");
  if (fromUrl) {
    // Out of the address bar (and its history) at once: it must not be shared by accident.
    history.replaceState(history.state, "", location.pathname + location.search);
    token = fromUrl.trim();
    storeToken(token);
    return token;
  }
  try {
    token = sessionStorage.getItem(TOKEN_KEY);
  } catch (error) {
    token = null;
  }
  return token || null;
}

function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (error) {
    /* the token then lives only in this page */
  }
}

// The welcome's `you` is the buyer's holds, orders, coupons and teams in the room, on whichever
// device they were made (applyYou): a phone opening the room sees the hold the laptop made,
// with its Pay button. The tab also remembers its purchases, per room and user, for what the
// welcome does not carry: how a purchase ended (cancelled, expired, a failed team and its
// refund) and a payment a reload cut short. Never the token: hold ids, orders and coupons only,
// under the user id.

const HOLD_FIELDS = ["hold_id", "sale_id", "kind", "status", "quantity", "expires_at_ms", "price_cents", "order", "at_ms"];
const TEAM_FIELDS = ["code", "size", "members", "deadline_ms", "paid_cents", "refunded_cents"];
const REMEMBERED = [...HOLD_FIELDS, ...TEAM_FIELDS];
const REMEMBERED_STATUS = new Set(["held", "paying", "confirmed", "cancelled", "expired", "team_open", "team_complete", "team_failed"]);

function memoryKey(userId) {
  return `live.purchases.${ROOM}.${userId}`;
}

function readMemory(userId) {
  try {
    const memory = JSON.parse(sessionStorage.getItem(memoryKey(userId)) || "null");
    return memory && memory.v === 1 ? memory : null;
  } catch (error) {
    return null; // locked or unreadable: nothing remembered
  }
}

function writeMemory(userId, memory) {
  try {
    if (memory) sessionStorage.setItem(memoryKey(userId), JSON.stringify(memory));
    else sessionStorage.removeItem(memoryKey(userId));
  } catch (error) {
    /* full or locked: the purchases then live only in this page */
  }
}

/** Write down this user's purchases and unused coupons; called after every change to them. */
function remember() {
  // Not before the restore: that would write over what the tab remembers.
  if (!S.me || S.memoryUser !== S.me.id) return;
  const fresh = Date.now() - MEMORY_MS;
  const purchases = [...S.holds.values()]
    .filter((p) => S.sales.has(p.sale_id) && p.at_ms > fresh)
    .sort((a, b) => a.at_ms - b.at_ms)
    .slice(-MEMORY_CAP)
    .map((p) => {
      const entry = Object.fromEntries(REMEMBERED.filter((name) => p[name] !== undefined).map((name) => [name, p[name]]));
      if (p.status === "checking") entry.status = p.was; // still unknown on the next load
      return entry;
    });
  const coupons = [];
  for (const sale of S.sales.values()) {
    const c = sale.coupon;
    // A claimed coupon is what Pay takes off the hold: it must survive the reload with it.
    if (c && c.coupon_id && !c.used && c.at_ms > fresh) {
      coupons.push({ sale_id: sale.id, batch_id: c.batch_id, coupon_id: c.coupon_id, discount_cents: c.discount_cents, count: c.count, at_ms: c.at_ms });
    }
  }
  writeMemory(S.me.id, purchases.length || coupons.length ? { v: 1, purchases, coupons } : null);
}

/** Once per user and page, after the welcome and its sales: bring back what this tab remembers
 * for the sales still in the room, and ask the ledger about what may have moved on unheard. */
function restorePurchases(roomSales) {
  if (!S.me || S.me.id.startsWith("anon_") || S.memoryUser === S.me.id) return;
  S.memoryUser = S.me.id;
  const memory = readMemory(S.me.id) || {};
  const fresh = Date.now() - MEMORY_MS;
  const keep = (entry) => entry && roomSales.has(entry.sale_id) && entry.at_ms > fresh;
  for (const c of (Array.isArray(memory.coupons) ? memory.coupons : []).filter(keep)) restoreCoupon(c);
  const touched = new Set();
  for (const entry of (Array.isArray(memory.purchases) ? memory.purchases : []).filter(keep)) {
    if (typeof entry.hold_id !== "string" || !REMEMBERED_STATUS.has(entry.status) || S.holds.has(entry.hold_id)) continue;
    const p = Object.fromEntries(REMEMBERED.map((name) => [name, entry[name]]));
    S.holds.set(p.hold_id, p);
    touched.add(p.sale_id);
    if (unsure(p)) checkPurchase(p);
  }
  showPurchases(touched);
  remember(); // without what was dropped
}

/** Show on each of these sales' cards the purchase in progress, else the newest. */
function showPurchases(saleIds) {
  for (const id of saleIds) {
    const sale = S.sales.get(id);
    const shown = sale.current && S.holds.get(sale.current);
    if (!shown || !ACTIVE.has(shown.status)) sale.current = latestPurchase(id);
    usedCoupon(sale);
    renderSale(sale);
  }
}

function restoreCoupon(c) {
  const sale = S.sales.get(c.sale_id);
  if (typeof c.coupon_id !== "string" || (sale.coupon && sale.coupon.coupon_id)) return;
  sale.coupon = { batch_id: c.batch_id, count: c.count, discount_cents: c.discount_cents, coupon_id: c.coupon_id, used: false, at_ms: c.at_ms };
}

/** Every welcome of a signed-in user (after a reconnect too: pushes are not replayed): take
 * its `you` as the word on the purchases in the room's sales. Listed holds and orders are shown
 * as they are; a hold or team place this page thinks open and the welcome does not list is
 * over (cancelled or expired elsewhere, or its team failed), unless the orders list was cut
 * short, when the ledger is asked. Payments in flight here are left to their answer. */
function applyYou(you, roomSales) {
  if (!you || !S.me) return;
  const touched = new Set();
  const listed = new Set();
  const teams = new Map((you.teams || []).map((team) => [team.code, team]));
  for (const h of you.holds || []) {
    if (!roomSales.has(h.sale_id)) continue;
    listed.add(h.hold_id);
    const team = h.status === "team" ? teams.get(h.team_code) : null;
    const p = S.holds.get(h.hold_id) || { hold_id: h.hold_id, sale_id: h.sale_id, at_ms: Date.now() };
    Object.assign(p, { quantity: h.quantity, expires_at_ms: h.expires_at_ms, price_cents: h.price_cents });
    if (h.status === "team") {
      Object.assign(p, { kind: "team", code: h.team_code, deadline_ms: h.expires_at_ms, paid_cents: h.price_cents * h.quantity });
      if (team) Object.assign(p, { members: team.members, size: team.size });
      if (!ACTIVE.has(p.status) || p.status === "held") p.status = "team_open";
    } else {
      p.kind = p.kind || "hold";
      if (p.status !== "paying" && p.status !== "checking") p.status = "held";
    }
    S.holds.set(p.hold_id, p);
    touched.add(p.sale_id);
  }
  for (const order of you.orders || []) {
    if (!roomSales.has(order.sale_id)) continue;
    listed.add(order.order_id);
    let p = S.holds.get(order.order_id);
    if (!p) {
      p = { hold_id: order.order_id, sale_id: order.sale_id, quantity: order.quantity, kind: order.team_code ? "team" : "hold", at_ms: order.confirmed_at_ms };
      if (order.team_code) p.code = order.team_code;
      S.holds.set(p.hold_id, p);
    }
    if (p.status !== "confirmed" || !p.order) {
      p.status = "confirmed";
      p.order = order;
    }
    touched.add(p.sale_id);
  }
  for (const c of you.coupons || []) {
    const sale = S.sales.get(c.sale_id);
    if (!sale) continue;
    if (!sale.coupon || (sale.coupon.coupon_id && sale.coupon.coupon_id !== c.coupon_id)) {
      sale.coupon = { batch_id: c.batch_id, count: null, discount_cents: c.discount_cents, at_ms: Date.now() };
    }
    Object.assign(sale.coupon, { coupon_id: c.coupon_id, used: c.used, busy: false, gone: false });
    touched.add(c.sale_id);
  }
  const complete = (you.orders || []).length < YOU_ORDERS;
  for (const p of S.holds.values()) {
    if (listed.has(p.hold_id) || !roomSales.has(p.sale_id) || !["held", "team_open"].includes(p.status)) continue;
    touched.add(p.sale_id);
    if (!complete) checkPurchase(p);
    else if (p.status === "team_open") p.status = "team_failed";
    else p.status = p.expires_at_ms > now() ? "cancelled" : "expired";
  }
  showPurchases(touched);
  remember();
}

/** The coupon of a sale is used once an order of ours carries it. */
function usedCoupon(sale) {
  const c = sale.coupon;
  if (!c || !c.coupon_id) return;
  for (const p of S.holds.values()) if (p.sale_id === sale.id && p.order && p.order.coupon_id === c.coupon_id) c.used = true;
}

/** The purchase a card shows: one in progress first, else the newest. */
function latestPurchase(saleId) {
  let best = null;
  const rank = (p) => [ACTIVE.has(p.status) ? 1 : 0, p.at_ms || 0];
  for (const p of S.holds.values()) {
    if (p.sale_id !== saleId) continue;
    const [mine, theirs] = [rank(p), best && rank(best)];
    if (!best || mine[0] > theirs[0] || (mine[0] === theirs[0] && mine[1] >= theirs[1])) best = p;
  }
  return best ? best.hold_id : null;
}

/** Whether a remembered purchase may have moved on while the page was away (pushes are not
 * replayed). A hold before its expiry is shown as it was: a Pay on a hold that another tab paid
 * meanwhile returns the order without charging again, and at its expiry it is checked anyway. */
function unsure(p) {
  if (p.status === "paying") return true; // the reload cut a payment short: did it go through?
  if (p.status === "held") return p.expires_at_ms <= now();
  if (p.status === "team_open") return p.deadline_ms <= now();
  return p.status === "team_complete"; // its order was on its way
}

// -- notices --------------------------------------------------------------------------------

let noticeTimer = null;

/** An error from the server or the network, in words, in the role="alert" notice. */
function showError(error) {
  const notice = $id("notice");
  const text = describeError(error);
  notice.className = "notice error toast";
  notice.dataset.code = (error && error.code) || "";
  // Emptied first so that a repeated message is announced again.
  notice.textContent = "";
  setTimeout(() => {
    notice.textContent = text;
  }, 30);
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(clearNotice, 10000);
  if (error && error.code === "login_required") openSignIn();
}

function clearNotice() {
  const notice = $id("notice");
  notice.textContent = "";
  delete notice.dataset.code;
}

// -- identity and connection ------------------------------------------------------------------

function connect() {
  const socket = openRoom(ROOM, S.token);
  S.socket = socket;
  S.everLive = false;
  window.liveSocket = socket; // for tests and the curious: the page's RoomClient
  socket.addEventListener("state", (event) => {
    if (socket === S.socket) onState(event.detail);
  });
  socket.addEventListener("message", (event) => {
    if (socket !== S.socket) return;
    try {
      onMessage(event.detail);
    } catch (error) {
      console.error("could not show a message", event.detail, error);
    }
  });
  socket.connect();
}

function restart(token) {
  S.token = token;
  storeToken(token);
  // Another person: nothing of the last one's purchases stays on the screen.
  S.holds.clear();
  S.memoryUser = null; // the next welcome restores the new person's
  S.me = null;
  S.banned = false;
  S.mutedUntil = 0;
  for (const sale of S.sales.values()) {
    sale.current = null;
    // The coupons dropped are the room's; a claim was the last person's.
    if (sale.coupon) Object.assign(sale.coupon, { coupon_id: null, used: false, busy: false, gone: false });
  }
  if (invite) invite.used = false;
  tools.reset();
  const old = S.socket;
  S.socket = null;
  if (old) old.close();
  clearNotice();
  renderIdentity();
  renderAllSales();
  connect();
}

function onState(state) {
  const badge = $id("state");
  badge.dataset.state = state;
  badge.dataset.i18n = `badge_${state}`;
  badge.textContent = t(`badge_${state}`);
  badge.className = `badge state state-${state}`;
  document.body.dataset.connection = state;
  clearTimeout(S.stuckTimer);
  if (state === "connecting" || state === "reconnecting") {
    // Still not in after a while: say so (the badge alone is easy to miss).
    S.stuckTimer = setTimeout(() => {
      if (!$id("notice").textContent) showError({ code: "network" });
    }, 8000);
  }
  if (state === "live") {
    S.everLive = true;
    if ($id("notice").dataset.code === "network") clearNotice();
  } else if (state === "refused") {
    // Refused for good: the server said why (first-message auth answers with an error frame
    // before the close), and the client stopped. A guest in a sign-in room: say what helps.
    const refusal = S.socket.refusal || { code: "refused" };
    if (!S.token && refusal.code === "token_missing") showError({ code: "join_failed_guest", message: t("join_failed_guest") });
    else showError(refusal);
    if (refusal.code !== "room_not_found") openSignIn();
    if (!S.room) {
      $id("room-title").dataset.i18n = "refused";
      $id("room-title").textContent = t("refused");
    }
    S.banned = true; // nothing to take part in: the composer and buttons rest
    renderComposer();
  } else if (state === "banned") {
    S.banned = true;
    showError({ code: "banned" });
    tools.renderAll();
    renderAllSales();
    renderComposer();
  } else if (state === "expired") {
    storeToken(null);
    showError({ code: "token_expired", message: t("expired") });
    openSignIn();
  }
}

function renderIdentity() {
  const text = $id("identity-text");
  const signedIn = Boolean(S.token);
  if (S.me && !S.me.id.startsWith("anon_") && signedIn) text.textContent = t("signed_in_as", { user: S.me.id });
  else if (S.me) text.textContent = t("guest");
  else text.textContent = "";
  $id("sign-out").hidden = !signedIn;
  $id("sign-in-toggle").hidden = signedIn && Boolean(S.me);
}

function openSignIn() {
  const form = $id("sign-in");
  form.hidden = false;
  $id("sign-in-toggle").setAttribute("aria-expanded", "true");
  $id("sign-in-toggle").hidden = false;
  form.scrollIntoView({ block: "nearest" });
}

function toggleSignIn() {
  const form = $id("sign-in");
  form.hidden = !form.hidden;
  $id("sign-in-toggle").setAttribute("aria-expanded", String(!form.hidden));
  if (!form.hidden) $id("token-input").focus();
}

// -- messages from the server -----------------------------------------------------------------

function onMessage(m) {
  if (tools.handle(m)) return undefined; // auctions, lucky draws, polls, Q&A
  switch (m.type) {
    case "welcome":
      return onWelcome(m);
    case "batch":
      return onBatch(m);
    case "host_message":
      return addHostMessage(m);
    case "product_pinned":
      S.pinned = m.product;
      return renderPinned();
    case "product_unpinned":
      S.pinned = null;
      return renderPinned();
    case "comment_deleted":
      return removeComment(m.comment_id);
    case "chat_cleared":
      return clearChat(m.seq);
    case "user_muted":
      if (S.me && m.user_id === S.me.id) {
        S.mutedUntil = m.until_ms;
        renderComposer();
      }
      return undefined;
    case "user_banned":
      return undefined; // our own socket is closed with 4403: the state says so
    case "slow_mode":
      S.slowModeS = m.interval_s;
      return renderComposer();
    case "sale_opened":
      return replayed(m, m.sale.id) ? undefined : upsertSale(m.sale, true);
    case "sale_countdown":
      return replayed(m, m.sale_id) ? undefined : onCountdown(m);
    case "sale_started":
      if (replayed(m, m.sale_id)) return patchSale(m.sale_id, { phase: "live", ends_at_ms: m.ends_at_ms });
      return patchSale(m.sale_id, { phase: "live", available: m.available, total: m.total, ends_at_ms: m.ends_at_ms });
    case "sale_stock":
      return onStock(m);
    case "sale_sold_out":
      if (replayed(m, m.sale_id)) return patchSale(m.sale_id, { phase: "sold_out" });
      return patchSale(m.sale_id, { phase: "sold_out", available: 0, sold: m.sold, total: m.total });
    case "sale_ended":
      return patchSale(m.sale_id, { phase: "ended", sold: m.sold, total: m.total });
    case "coupons_dropped":
      return onCoupons(m);
    case "order_status":
      return onOrderStatus(m);
    case "lagged":
      return addSystemLine(t("lagged_note"));
    case "error":
      // An error for a command sent without a request id (a like, say): still words.
      return showError(m);
    default:
      return undefined; // unknown types are ignored (forward compatibility)
  }
}

/** A sale event replayed after a resumed welcome, older than the welcome's snapshot of that
 * sale: its phase still counts (the replay ends at the latest), its counters do not. */
function replayed(m, saleId) {
  return S.snapshot !== null && typeof m.seq === "number" && m.seq <= S.snapshot.seq && S.snapshot.sales.has(saleId);
}

function onWelcome(w) {
  S.snapshot = w.resumed ? { seq: w.seq, sales: new Set(((w.room && w.room.sales) || []).map((sale) => sale.id)) } : null;
  S.me = w.user;
  S.room = w.room;
  S.online = w.online;
  S.likes = w.likes;
  S.pinned = w.pinned;
  S.slowModeS = w.slow_mode_s || 0;
  S.banned = false;
  const title = w.room.title || w.room.id;
  document.title = `${title} · Live`;
  $id("room-title").textContent = title;
  delete $id("room-title").dataset.i18n;
  $id("avatar").textContent = Array.from(title)[0] || "L";
  $id("host-line").textContent = t("host_is", { host: w.room.host_id });
  if (["join_failed_guest", "network"].includes($id("notice").dataset.code)) clearNotice(); // in after all
  renderCounts();
  renderIdentity();
  renderPinned();
  renderComposer();
  // Not resumed: a fresh snapshot, the chat shown may be stale (cleared, deleted meanwhile).
  if (!w.resumed) {
    for (const item of S.comments.values()) item.remove();
    S.comments.clear();
  }
  for (const comment of w.comments || []) addComment(comment);
  updateChatEmpty();
  // The sales that are not over; a sale we show that is not among them is over.
  const current = new Set();
  for (const sale of (w.room && w.room.sales) || []) {
    current.add(sale.id);
    upsertSale(sale, false);
  }
  for (const sale of S.sales.values()) {
    if (!current.has(sale.id) && sale.phase !== "ended") patchSale(sale.id, { phase: "ended" });
  }
  restorePurchases(current);
  applyYou(w.you, current); // after what the tab remembers: the server's word is the newer
  renderJoinOffer();
  tools.welcome(w);
}

function onBatch(b) {
  for (const comment of b.comments || []) addComment(comment);
  updateChatEmpty();
  if (typeof b.likes === "number") S.likes = b.likes;
  if (typeof b.online === "number") S.online = b.online;
  renderCounts();
}

function renderCounts() {
  $id("online").textContent = compact(S.online);
  $id("likes").textContent = compact(S.likes + S.pendingLikes);
  $id("like").setAttribute("aria-label", `${t("like")} (${t("likes_count", { n: S.likes + S.pendingLikes })})`);
}

function compact(n) {
  if (n < 10000) return String(n);
  return language() === "zh" ? `${(n / 10000).toFixed(1)}万` : `${(n / 1000).toFixed(1)}k`;
}

// -- host messages ----------------------------------------------------------------------------

function hhmm(ms) {
  return new Date(ms || Date.now()).toLocaleTimeString(language() === "zh" ? "zh-CN" : "en", {
    hour: "2-digit",
    minute: "2-digit",
  });
}

function roleLabel(role) {
  const key = role === "moderator" ? "role_moderator" : "role_host";
  return el("span", { class: `role role-${role === "moderator" ? "moderator" : "host"}`, "data-i18n": key }, t(key));
}

function addHostMessage(m) {
  const list = $id("host-messages");
  const item = el(
    "li",
    { class: "host-message fresh", "data-testid": "host-message", dataset: { seq: m.seq ?? "" } },
    el("div", { class: "hm-head" }, roleLabel(m.role), el("time", { class: "hm-time" }, hhmm(m.ts_ms))),
    el("p", { class: "hm-text" }, m.text),
  );
  list.prepend(item);
  setTimeout(() => item.classList.remove("fresh"), 1600);
  while (list.children.length > HOST_MESSAGES_CAP) list.lastElementChild.remove();
}

// -- chat -------------------------------------------------------------------------------------

function addComment(c) {
  if (c.id !== undefined && S.comments.has(c.id)) return;
  const chat = $id("chat");
  const nearBottom = chat.scrollHeight - chat.scrollTop - chat.clientHeight < 48;
  const mine = S.me && c.user_id === S.me.id;
  const staff = c.role === "host" || c.role === "moderator";
  const item = el(
    "li",
    {
      class: `chat-comment${mine ? " mine" : ""}${staff ? " staff" : ""}`,
      "data-testid": "chat-comment",
      dataset: { commentId: c.id ?? "" },
    },
    staff ? roleLabel(c.role) : null,
    el("span", { class: "who" }, c.user_id.startsWith("anon_") ? c.user_id.slice(0, 9) : c.user_id),
    el("span", { class: "text" }, c.text),
  );
  // Newest at the bottom, by id (a resumed welcome may bring a few we have not seen).
  let before = null;
  if (c.id !== undefined) {
    for (const [id, node] of S.comments) {
      if (id > c.id && (!before || Number(before.dataset.commentId) > id)) before = node;
    }
  }
  chat.insertBefore(item, before);
  if (c.id !== undefined) S.comments.set(c.id, item);
  while (S.comments.size > CHAT_CAP) {
    const oldest = Math.min(...S.comments.keys());
    S.comments.get(oldest).remove();
    S.comments.delete(oldest);
  }
  for (const extra of chat.querySelectorAll(".system-line")) {
    if (chat.children.length > CHAT_CAP + 5) extra.remove();
  }
  if (nearBottom || mine) chat.scrollTop = chat.scrollHeight;
}

function removeComment(id) {
  const item = S.comments.get(id);
  if (item) {
    item.remove();
    S.comments.delete(id);
  }
  updateChatEmpty();
}

function clearChat(seq) {
  // Only what came before the clear: a resumed welcome's newer comments stay.
  for (const [id, item] of S.comments) {
    if (seq === undefined || id < seq) {
      item.remove();
      S.comments.delete(id);
    }
  }
  for (const line of $id("chat").querySelectorAll(".system-line")) line.remove();
  addSystemLine(t("chat_cleared"));
}

function addSystemLine(text) {
  const chat = $id("chat");
  chat.append(el("li", { class: "system-line" }, text));
  chat.scrollTop = chat.scrollHeight;
  updateChatEmpty();
}

function updateChatEmpty() {
  $id("chat-empty").hidden = $id("chat").children.length > 0;
}

// -- comment and like -------------------------------------------------------------------------

async function sendComment(event) {
  event.preventDefault();
  const input = $id("composer-input");
  const text = input.value.trim();
  if (!text || S.commentBusy || !S.socket) return;
  if (text.length > 200) return showError({ code: "comment_too_long" });
  S.commentBusy = true;
  $id("send-comment").disabled = true;
  try {
    await postComment(text);
    if (input.value.trim() === text) input.value = "";
  } catch (error) {
    showError(error);
  } finally {
    S.commentBusy = false;
    $id("send-comment").disabled = S.banned;
    input.focus();
  }
}

/** Post a comment; ours is shown at once (the batch that carries it later is recognised by its
 * id), and a lucky draw whose keyword it has counts us in. */
async function postComment(text) {
  const ack = await S.socket.request("comment", { text });
  if (S.me) addComment({ id: ack.seq, user_id: S.me.id, role: S.me.role, text, ts_ms: Date.now() });
  updateChatEmpty();
  tools.commented(text);
  return ack;
}

function like() {
  if (!S.socket || S.banned) return;
  S.pendingLikes += 1;
  renderCounts();
  floatHeart();
  // Taps are coalesced: one like message with a count, a few times a second at most.
  if (!S.likeTimer) S.likeTimer = setTimeout(flushLikes, 350);
}

function flushLikes() {
  S.likeTimer = null;
  const count = Math.min(S.pendingLikes, 1000);
  if (!count || !S.socket) return;
  S.socket.send("like", { count });
  S.pendingLikes -= count;
  S.likes += count; // the next batch brings the room's total
  renderCounts();
  if (S.pendingLikes) S.likeTimer = setTimeout(flushLikes, 350);
}

let heartCount = 0;
function floatHeart() {
  const box = $id("hearts");
  if (box.children.length > 12 || matchMedia("(prefers-reduced-motion: reduce)").matches) return;
  heartCount += 1;
  const heart = el("span", { class: `float-heart lane-${heartCount % 4} hue-${heartCount % 3}` });
  heart.addEventListener("animationend", () => heart.remove());
  box.append(heart);
}

function renderComposer() {
  const note = $id("composer-note");
  const muted = S.mutedUntil > now();
  const input = $id("composer-input");
  input.disabled = S.banned;
  $id("send-comment").disabled = S.banned || S.commentBusy;
  $id("like").disabled = S.banned;
  if (muted) note.textContent = t("muted_note", { time: hhmm(S.mutedUntil) });
  else if (S.slowModeS) note.textContent = t("slow_mode_note", { n: S.slowModeS });
  else note.textContent = "";
  note.hidden = !note.textContent;
}

// -- pinned product ---------------------------------------------------------------------------

function productImage(product, className) {
  const title = (product && product.title) || "";
  const url = product && product.image_url;
  const placeholder = () => el("div", { class: `${className} placeholder`, "aria-hidden": "true" }, Array.from(title)[0] || "?");
  if (!url || !/^https?:\/\//i.test(url)) return placeholder();
  const img = el("img", { class: className, src: url, alt: title, loading: "lazy", decoding: "async", referrerpolicy: "no-referrer" });
  img.addEventListener("error", () => img.replaceWith(placeholder()), { once: true });
  return img;
}

function renderPinned() {
  const box = $id("pinned");
  const p = S.pinned;
  const sale = p && [...S.sales.values()].find((s) => s.product_id === p.id && s.phase !== "ended");
  const key = p ? JSON.stringify([p.id, p.title, p.price_cents, p.image_url, sale && sale.id, language()]) : "";
  if (box.dataset.key === key) return; // unchanged: keep the picture and the focus
  box.dataset.key = key;
  box.replaceChildren();
  box.hidden = !p;
  if (!p) return;
  box.append(
    el(
      "article",
      { class: "pinned-card", "aria-label": t("now_showing") },
      productImage(p, "pinned-img"),
      el(
        "div",
        { class: "pinned-body" },
        el("span", { class: "tag tag-pinned", "data-i18n": "now_showing" }, t("now_showing")),
        el("h3", { class: "pinned-title" }, p.title),
        el("p", { class: "price" }, money(p.price_cents)),
        sale
          ? el(
              "button",
              {
                type: "button",
                class: "primary go-sale",
                onclick: () => {
                  sale.dom.card.scrollIntoView({ behavior: "smooth", block: "center" });
                  sale.dom.buy.focus({ preventScroll: true });
                },
              },
              t("go_to_sale"),
            )
          : null,
      ),
    ),
  );
}

// -- flash sales ------------------------------------------------------------------------------

function now() {
  return S.socket ? S.socket.now() : Date.now();
}

function upsertSale(data, announced) {
  let sale = S.sales.get(data.id);
  if (!sale) {
    sale = { ...data, skewMs: 0, qty: 1, busy: null, current: null, coupon: null, dom: null };
    S.sales.set(data.id, sale);
    buildCard(sale);
    if (announced) sale.dom.card.classList.add("fresh");
  } else {
    Object.assign(sale, data);
  }
  renderSale(sale);
  renderPinned();
  if (announced) renderJoinOffer(); // a welcome renders it once, after all its sales
}

function patchSale(id, fields) {
  const sale = S.sales.get(id);
  if (!sale) return;
  Object.assign(sale, fields);
  renderSale(sale);
  if (fields.phase) renderPinned();
}

function onCountdown(m) {
  const sale = S.sales.get(m.sale_id);
  if (!sale) return;
  sale.starts_at_ms = m.starts_at_ms;
  // Keep the local countdown in step with the server's seconds (a clock that drifted, a
  // welcome that came late): trust the server's count when we are more than a second off.
  const local = sale.starts_at_ms - now();
  const server = m.seconds_left * 1000;
  sale.skewMs = Math.abs(local - server) > 1000 ? server - local : 0;
  renderSale(sale);
}

function onStock(m) {
  const sale = S.sales.get(m.sale_id);
  if (!sale) return;
  // Numbered (a priority event): a sold-out sale has units again. A gauge only counts.
  if (typeof m.seq === "number" && m.available > 0 && sale.phase === "sold_out") sale.phase = "live";
  if (!replayed(m, sale.id)) {
    sale.available = m.available;
    sale.total = m.total;
    if (typeof m.sold === "number") sale.sold = m.sold;
  }
  renderSale(sale);
}

function onCoupons(m) {
  const sale = S.sales.get(m.sale_id);
  if (!sale) return;
  if (sale.coupon && sale.coupon.coupon_id && !sale.coupon.used) return; // keep the one claimed
  sale.coupon = { batch_id: m.batch_id, count: m.count, discount_cents: m.discount_cents, coupon_id: null, used: false };
  renderCoupon(sale);
}

function startsIn(sale) {
  return sale.starts_at_ms - now() + (sale.skewMs || 0);
}

/** Units of this sale this user holds or bought (as far as this page knows). */
function myUnits(sale) {
  let units = 0;
  for (const p of S.holds.values()) {
    if (p.sale_id === sale.id && (ACTIVE.has(p.status) || p.status === "confirmed")) units += p.quantity;
  }
  return units;
}

function boughtUnits(sale) {
  let units = 0;
  for (const p of S.holds.values()) if (p.sale_id === sale.id && p.status === "confirmed") units += p.quantity;
  return units;
}

function buildCard(sale) {
  const dom = {};
  dom.media = el("div", { class: "sale-media" });
  dom.title = el("h3", { class: "sale-title" });
  dom.phase = el("span", { class: "tag tag-phase" });
  dom.price = el("span", { class: "price big" });
  dom.was = el("s", { class: "was" });
  dom.stockLeft = el("b", { class: "num", "data-testid": "stock-left" });
  dom.stockOf = el("span", { class: "stock-of" });
  dom.meter = el("progress", { class: "stock-meter", max: "1", value: "1" });
  dom.timer = el("p", { class: "sale-timer num", "aria-live": "off" });
  dom.qtyValue = el("output", { class: "qty-value num", "aria-live": "polite" });
  dom.minus = el("button", { type: "button", class: "qty-btn", onclick: () => stepQty(sale, -1) }, "−");
  dom.plus = el("button", { type: "button", class: "qty-btn", onclick: () => stepQty(sale, 1) }, "+");
  dom.qtyLabel = el("span", { class: "visually-hidden" });
  dom.qty = el("div", { class: "qty", role: "group" }, dom.qtyLabel, dom.minus, dom.qtyValue, dom.plus);
  dom.buy = el("button", { type: "button", class: "primary buy", "data-testid": "buy", onclick: () => buy(sale) });
  dom.note = el("p", { class: "sale-note", role: "status" });
  dom.group = el("div", { class: "group-box" });
  dom.coupon = el("div", { class: "coupon-box" });
  dom.purchase = el("div", { class: "purchase", "aria-live": "polite" });
  dom.card = el(
    "article",
    { class: "sale-card", "data-testid": "sale-card", dataset: { saleId: sale.id } },
    el(
      "div",
      { class: "sale-top" },
      dom.media,
      el(
        "div",
        { class: "sale-info" },
        el("div", { class: "sale-tags" }, el("span", { class: "tag tag-flash", "data-i18n": "flash_sale" }, t("flash_sale")), dom.phase),
        dom.title,
        el("p", { class: "sale-price" }, dom.price, " ", dom.was),
        el("p", { class: "sale-stock" }, el("span", { class: "stock-label" }), " ", dom.stockLeft, " ", dom.stockOf),
        dom.meter,
      ),
    ),
    dom.timer,
    el("div", { class: "sale-actions" }, dom.qty, dom.buy),
    dom.note,
    dom.coupon,
    dom.group,
    dom.purchase,
  );
  dom.stockLabel = dom.card.querySelector(".stock-label");
  dom.titleId = `sale-title-${sale.id}`;
  dom.title.id = dom.titleId;
  dom.card.setAttribute("aria-labelledby", dom.titleId);
  sale.dom = dom;
  // On now first, then what comes next, soonest first (a card never moves later: it would
  // take the keyboard focus with it).
  const rank = (s) => [{ live: 0, not_started: 1 }[s.phase] ?? 2, s.starts_at_ms];
  const mine = rank(sale);
  const list = $id("sales");
  const before = [...list.children].find((node) => {
    const theirs = rank(S.sales.get(node.dataset.saleId));
    return theirs[0] > mine[0] || (theirs[0] === mine[0] && theirs[1] > mine[1]);
  });
  list.insertBefore(dom.card, before || null);
}

function renderAllSales() {
  for (const sale of S.sales.values()) renderSale(sale);
  renderJoinOffer();
}

function renderSale(sale) {
  const dom = sale.dom;
  const product = sale.product || { title: sale.product_id, price_cents: sale.price_cents, image_url: null };
  dom.card.dataset.phase = sale.phase;
  if (dom.media.dataset.url !== String(product.image_url) || !dom.media.firstChild) {
    dom.media.dataset.url = String(product.image_url);
    dom.media.replaceChildren(productImage(product, "sale-img"));
  }
  dom.title.textContent = product.title;
  dom.phase.textContent = t(`phase_${sale.phase}`);
  dom.phase.className = `tag tag-phase phase-${sale.phase}`;
  dom.price.textContent = money(sale.price_cents);
  dom.was.textContent = product.price_cents > sale.price_cents ? money(product.price_cents) : "";
  dom.stockLabel.textContent = t("stock_left");
  dom.stockLeft.textContent = String(Math.max(0, sale.available));
  dom.stockOf.textContent = t("stock_of", { total: sale.total });
  dom.meter.max = Math.max(1, sale.total);
  dom.meter.value = Math.max(0, sale.available);
  dom.meter.setAttribute("aria-label", t("stock_label"));
  const limit = sale.per_user_limit || 1;
  const room = Math.max(0, limit - myUnits(sale));
  sale.qty = Math.max(1, Math.min(sale.qty, room || 1, limit));
  const current = sale.current && S.holds.get(sale.current);
  const unpaid = current && UNPAID.has(current.status);
  dom.qty.hidden = limit <= 1 || room === 0 || unpaid || sale.phase === "ended" || sale.phase === "sold_out";
  dom.qtyLabel.textContent = t("quantity");
  dom.qty.setAttribute("aria-label", t("quantity"));
  dom.minus.setAttribute("aria-label", t("fewer"));
  dom.plus.setAttribute("aria-label", t("more"));
  dom.qtyValue.textContent = String(sale.qty);
  dom.minus.disabled = sale.qty <= 1;
  dom.plus.disabled = sale.qty >= Math.min(room, limit);
  const notes = [];
  if (sale.phase === "sold_out") notes.push(t("sold_out_note"));
  if (limit > 1 || room === 0) notes.push(t("limit_note", { n: limit }));
  const bought = boughtUnits(sale);
  if (bought) notes.push(t("bought_note", { n: bought }));
  const note = notes.join(" · ");
  if (dom.note.textContent !== note) dom.note.textContent = note;
  renderGroup(sale);
  renderCoupon(sale);
  renderPurchase(sale);
  tickSale(sale);
}

/** The parts that change with the clock: countdowns and what the Buy button says. */
function tickSale(sale) {
  const dom = sale.dom;
  const left = startsIn(sale);
  const upcoming = sale.phase === "not_started";
  let timer = "";
  if (upcoming) timer = left > 0 ? t("starts_in", { time: clock(left) }) : t("starting");
  else if (sale.phase === "live" && sale.ends_at_ms) timer = t("ends_in", { time: clock(sale.ends_at_ms - now()) });
  if (dom.timer.textContent !== timer) dom.timer.textContent = timer;
  dom.timer.classList.toggle("countdown", upcoming);
  dom.timer.hidden = !dom.timer.textContent;
  const room = (sale.per_user_limit || 1) - myUnits(sale);
  const current = sale.current && S.holds.get(sale.current);
  const unpaid = current && UNPAID.has(current.status);
  let label;
  let enabled = false;
  if (sale.busy === "reserve") label = t("buying");
  else if (sale.phase === "sold_out") label = t("btn_sold_out");
  else if (sale.phase === "ended") label = t("btn_ended");
  else if (sale.phase === "frozen") label = t("btn_paused");
  else if (room <= 0) label = t("btn_limit");
  else if (unpaid) label = t("btn_pay_first"); // one hold at a time on a card
  else if (upcoming && left > 0) label = t("buy_soon");
  else {
    // Live, or the start time came and the server's word is on its way: let them try.
    label = `${t("buy")} ${money(sale.price_cents * sale.qty)}`;
    enabled = true;
  }
  if (dom.buy.textContent !== label) dom.buy.textContent = label;
  dom.buy.disabled = !enabled || S.banned || Boolean(sale.busy);
  dom.buy.classList.toggle("waiting", upcoming && left > 0);
  // The purchase in progress.
  const p = sale.current && S.holds.get(sale.current);
  if (p && (p.status === "held" || p.status === "paying") && dom.holdText) {
    const holdLeft = p.expires_at_ms - now();
    const text = holdLeft > 0 ? t("hold_left", { time: clock(holdLeft) }) : t("hold_up");
    if (dom.holdText.textContent !== text) dom.holdText.textContent = text;
    dom.holdText.classList.toggle("urgent", holdLeft < 30000);
    if (dom.pay) dom.pay.disabled = holdLeft <= 0 || p.status === "paying" || S.banned;
    // The expiry push is not replayed after a reconnect: past its time the hold is gone,
    // unless another tab paid it (that push was not replayed either), so ask the ledger.
    if (holdLeft < -3000 && p.status === "held") checkPurchase(p);
  }
  if (p && p.status === "team_open" && dom.teamLeft) {
    const teamLeft = p.deadline_ms - now();
    dom.teamLeft.textContent = teamLeft > 0 ? t("team_left", { time: clock(teamLeft) }) : t("team_up");
    // The same for a team's outcome (again every 10 s while the ledger cannot be reached).
    if (teamLeft < -3000 && !(p.checked_ms > Date.now() - 10000)) checkPurchase(p);
  }
}

function stepQty(sale, delta) {
  sale.qty += delta;
  renderSale(sale);
}

/** Send a buying command. The rid is its idempotency key: the client sends it again by
 * itself when the connection drops before the answer (resend), and on a timeout we ask once
 * more with it, so the server answers with the first result. */
async function buyRequest(type, fields) {
  const rid = `${type[0]}${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  try {
    return await S.socket.request(type, { ...fields, rid }, { resend: true });
  } catch (error) {
    if (error.code !== "timeout") throw error;
    return S.socket.request(type, { ...fields, rid }, { resend: true });
  }
}

function afterRefusal(sale, error) {
  if (error.code === "sold_out") patchSale(sale.id, { phase: "sold_out", available: 0 });
  else if (error.code === "ended") patchSale(sale.id, { phase: "ended" });
  else if (error.code === "frozen") patchSale(sale.id, { phase: "frozen" });
  showError(error);
}

async function buy(sale) {
  if (sale.busy || !S.socket) return;
  sale.busy = "reserve";
  renderSale(sale);
  const quantity = sale.qty;
  try {
    const ack = await buyRequest("reserve", { sale_id: sale.id, quantity });
    S.holds.set(ack.hold_id, {
      hold_id: ack.hold_id,
      sale_id: sale.id,
      quantity: ack.quantity,
      expires_at_ms: ack.expires_at_ms,
      price_cents: sale.price_cents,
      status: "held",
      kind: "hold",
      at_ms: Date.now(),
    });
    sale.current = ack.hold_id;
    sale.busy = null;
    remember();
    renderSale(sale);
    if (sale.dom.pay) sale.dom.pay.focus({ preventScroll: false });
  } catch (error) {
    sale.busy = null;
    renderSale(sale);
    afterRefusal(sale, error);
  }
}

/** The hold's unit price: as it was when reserved (remembered across a reload). */
function unitPrice(sale, p) {
  return typeof p.price_cents === "number" ? p.price_cents : sale.price_cents;
}

function holdAmount(sale, p) {
  const gross = unitPrice(sale, p) * p.quantity;
  const coupon = sale.coupon && sale.coupon.coupon_id && !sale.coupon.used ? sale.coupon : null;
  return { gross, coupon, net: Math.max(0, gross - (coupon ? coupon.discount_cents : 0)) };
}

async function pay(sale, p) {
  if (p.status !== "held") return;
  p.status = "paying";
  remember(); // a reload now must ask whether the payment went through
  renderSale(sale);
  const { coupon } = holdAmount(sale, p);
  const fields = { hold_id: p.hold_id };
  if (coupon) fields.coupon_id = coupon.coupon_id;
  try {
    const ack = await buyRequest("confirm", fields);
    confirmed(p, ack.order);
  } catch (error) {
    if (error.code === "already_confirmed") return paidElsewhere(p);
    if (p.status === "paying") p.status = "held";
    if (error.code === "hold_expired" || error.code === "hold_not_found") p.status = "expired";
    remember();
    renderSale(sale);
    showError(error);
  }
  return undefined;
}

function confirmed(p, order) {
  p.status = "confirmed";
  p.order = order;
  const sale = S.sales.get(p.sale_id);
  if (sale && order && order.coupon_id && sale.coupon && sale.coupon.coupon_id === order.coupon_id) sale.coupon.used = true;
  remember();
  if (!sale) return;
  if (!sale.current || !ACTIVE.has(S.holds.get(sale.current)?.status) || sale.current === p.hold_id) {
    sale.current = p.hold_id;
  }
  renderSale(sale);
}

async function cancelHold(sale, p) {
  if (p.status !== "held") return;
  const button = sale.dom.cancel;
  if (button) {
    button.disabled = true;
    button.textContent = t("cancelling");
  }
  try {
    await buyRequest("cancel", { hold_id: p.hold_id });
    if (p.status === "held") p.status = "cancelled";
  } catch (error) {
    if (error.code === "hold_expired" || error.code === "hold_not_found") p.status = "expired";
    showError(error);
    if (error.code === "already_confirmed") return paidElsewhere(p); // in another tab
  }
  remember();
  renderSale(sale);
  return undefined;
}

function fetchOrder(holdId) {
  return api(`/api/orders/${encodeURIComponent(holdId)}`, { token: S.token });
}

/** The server says the hold is an order already (paid in another tab): so it shows, with the
 * order from the ledger (its sum) when the ledger answers. */
async function paidElsewhere(p) {
  confirmed(p, p.order || null);
  let order = null;
  try {
    order = await fetchOrder(p.hold_id);
  } catch (error) {
    return; // confirmed all the same, without the sum
  }
  if (S.holds.get(p.hold_id) === p) confirmed(p, order);
}

/** Ask the ledger whether a purchase whose outcome the page may have missed became an order
 * (the buyer may read their own; order_not_found means it did not). Until it answers the card
 * says it is checking, never a guess. */
async function checkPurchase(p) {
  const was = p.status;
  Object.assign(p, { status: "checking", was, checked_ms: Date.now() });
  const sale = S.sales.get(p.sale_id);
  if (sale) renderSale(sale);
  let order = null;
  let known = true;
  try {
    order = await fetchOrder(p.hold_id);
  } catch (error) {
    known = error.code === "order_not_found";
  }
  // A push (or another person signing in) got here first: theirs is the newer word.
  if (S.holds.get(p.hold_id) !== p || p.status !== "checking") return;
  if (order) return confirmed(p, order);
  p.status = notAnOrder(p, was, known);
  remember();
  if (sale) renderSale(sale);
}

/** What a purchase is when the ledger has no order for it (known) or could not say. */
function notAnOrder(p, was, known) {
  if (was === "held" || was === "paying") return p.expires_at_ms > now() ? "held" : "expired";
  if (was === "team_open" && known) return p.deadline_ms > now() ? "team_open" : "team_failed";
  return was;
}

function onOrderStatus(m) {
  const saleId = (m.order && m.order.sale_id) || String(m.hold_id).split(".")[0];
  let p = S.holds.get(m.hold_id);
  if (!p) {
    // A purchase from another tab or phone of ours.
    p = {
      hold_id: m.hold_id,
      sale_id: saleId,
      quantity: (m.order && m.order.quantity) || m.quantity || 1,
      status: "held",
      kind: m.code ? "team" : "hold",
      at_ms: Date.now(),
    };
    S.holds.set(m.hold_id, p);
  }
  if (p.status === "confirmed" && m.status !== "confirmed") return; // final
  const sale = S.sales.get(saleId);
  if (m.status === "confirmed") return confirmed(p, m.order);
  p.status = m.status;
  if (m.status === "team_failed") p.refunded_cents = m.refunded_cents;
  remember();
  if (!sale) return undefined;
  const current = sale.current && S.holds.get(sale.current);
  if (!current || !ACTIVE.has(current.status) || sale.current === p.hold_id) sale.current = p.hold_id;
  renderSale(sale);
  return undefined;
}

function renderPurchase(sale) {
  const dom = sale.dom;
  const p = sale.current && S.holds.get(sale.current);
  const key = p ? `${p.hold_id}:${p.status}:${p.order?.amount_cents}:${language()}:${S.banned}:${sale.coupon?.coupon_id}:${sale.coupon?.used}` : "";
  if (dom.purchase.dataset.key === key) return;
  const hadFocus = dom.purchase.contains(document.activeElement);
  dom.purchase.dataset.key = key;
  dom.holdText = dom.pay = dom.cancel = dom.teamLeft = null;
  dom.purchase.replaceChildren();
  if (!p) return;
  let focus = null;
  if (p.status === "held" || p.status === "paying") {
    const { gross, coupon, net } = holdAmount(sale, p);
    // aria-live off: the purchase area is announced, its ticking clock is not
    dom.holdText = el("p", { class: "hold-left num", "data-testid": "hold", "aria-live": "off", dataset: { expiresAt: p.expires_at_ms } });
    dom.pay = el(
      "button",
      { type: "button", class: "primary pay", "data-testid": "pay", onclick: () => pay(sale, p) },
      p.status === "paying" ? t("paying") : t("pay", { amount: money(net) }),
    );
    dom.cancel = el(
      "button",
      { type: "button", class: "secondary", "data-testid": "cancel-hold", onclick: () => cancelHold(sale, p), disabled: p.status === "paying" },
      t("cancel"),
    );
    dom.purchase.append(
      el(
        "div",
        { class: "hold-box" },
        el("p", { class: "hold-title" }, t("hold_title")),
        dom.holdText,
        el(
          "p",
          { class: "hold-sum num" },
          t("hold_units", { n: p.quantity, price: money(unitPrice(sale, p)) }),
          coupon ? el("span", { class: "coupon-applied" }, ` − ${money(coupon.discount_cents)} ${t("coupon_in_sum")}`) : null,
          gross !== net || p.quantity > 1 ? ` = ${money(net)}` : null,
        ),
        el("div", { class: "hold-actions" }, dom.pay, dom.cancel),
        el("p", { class: "muted small" }, t("simulated")),
      ),
    );
    focus = dom.pay;
  } else if (p.status === "team_open" || p.status === "team_complete") {
    const link = teamLink(sale, p.code);
    const copied = el("span", { class: "copied", role: "status" });
    dom.teamLeft = el("p", { class: "team-left num", "aria-live": "off" });
    const anchor = el("a", { href: link, class: "team-link", "data-testid": "team-link" }, link);
    dom.purchase.append(
      el(
        "div",
        { class: "team-box", dataset: { code: p.code } },
        el("p", { class: "team-title" }, t("team_open", { code: p.code, members: p.members, size: p.size })),
        p.status === "team_open" ? dom.teamLeft : el("p", { class: "team-left" }, t("team_complete")),
        el("p", { class: "small" }, t("team_paid", { amount: money(p.paid_cents || 0) })),
        el("p", { class: "small team-share-label" }, t("team_share")),
        el(
          "div",
          { class: "share-row" },
          anchor,
          el("button", { type: "button", class: "secondary copy", onclick: () => copyLink(link, anchor, copied) }, t("copy")),
        ),
        copied,
      ),
    );
  } else {
    let text;
    if (p.status === "confirmed") {
      text = p.order ? t("status_confirmed", { amount: money(p.order.amount_cents) }) : t("status_confirmed_plain");
      if (p.order && p.order.team_code) text = `${t("team_complete")} ${text}`;
    } else if (p.status === "team_failed") {
      text = typeof p.refunded_cents === "number" ? t("status_team_failed", { amount: money(p.refunded_cents) }) : t("status_team_failed_plain");
    } else {
      text = t(`status_${p.status}`);
    }
    // tabindex -1: the keyboard focus can move here from the Pay button that just went away
    focus = el(
      "div",
      { class: `order-status status-${p.status}`, "data-testid": "order-status", tabindex: "-1", dataset: { status: p.status, holdId: p.hold_id } },
      el("span", { class: "status-icon", "aria-hidden": "true" }, STATUS_ICONS[p.status] || "!"),
      el("span", { class: "status-text" }, text),
      p.status === "confirmed" && p.order ? el("small", { class: "order-id" }, t("order_number", { id: p.order.order_id })) : null,
    );
    dom.purchase.append(focus);
  }
  if (hadFocus) (focus || sale.dom.buy).focus({ preventScroll: true });
}

// -- coupons ----------------------------------------------------------------------------------

function renderCoupon(sale) {
  const box = sale.dom.coupon;
  const c = sale.coupon;
  const key = c ? `${c.batch_id}:${c.coupon_id}:${c.used}:${c.busy}:${c.gone}:${language()}` : "";
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  box.replaceChildren();
  if (!c) return;
  const amount = money(c.discount_cents);
  let action;
  if (c.used) action = el("span", { class: "coupon-state" }, t("coupon_used"));
  else if (c.coupon_id) action = el("span", { class: "coupon-state" }, t("coupon_claimed"));
  else {
    action = el(
      "button",
      { type: "button", class: "coupon-claim", "data-testid": "claim-coupon", disabled: Boolean(c.busy || c.gone), onclick: () => claimCoupon(sale) },
      c.busy ? t("claiming") : t("claim_coupon"),
    );
  }
  box.append(
    el(
      "div",
      { class: `coupon${c.coupon_id ? " claimed" : ""}` },
      el("span", { class: "coupon-amount" }, amount),
      // (a coupon the welcome brought back has no batch size with it)
      el("span", { class: "coupon-text" }, c.count == null ? t("coupon_off", { amount }) : t("coupon_offer", { amount, count: c.count })),
      action,
    ),
  );
}

async function claimCoupon(sale) {
  const c = sale.coupon;
  if (!c || c.busy) return;
  c.busy = true;
  renderCoupon(sale);
  try {
    const ack = await buyRequest("claim_coupon", { sale_id: sale.id, batch_id: c.batch_id });
    c.coupon_id = ack.coupon_id;
    c.discount_cents = ack.discount_cents;
    c.at_ms = Date.now();
    remember();
  } catch (error) {
    if (error.code === "coupons_gone") c.gone = true;
    showError(error);
  } finally {
    c.busy = false;
  }
  renderSale(sale);
}

// -- group buying -----------------------------------------------------------------------------

function teamLink(sale, code) {
  const query = new URLSearchParams({ team: code, sale: sale.id });
  return `${location.origin}/r/${encodeURIComponent(ROOM)}?${query}`;
}

function renderGroup(sale) {
  const box = sale.dom.group;
  const g = sale.group;
  const p = sale.current && S.holds.get(sale.current);
  const inTeam = p && p.kind === "team" && ACTIVE.has(p.status);
  const key = g ? `${language()}:${sale.phase}:${inTeam}:${sale.busy}:${S.banned}:${myUnits(sale)}` : "";
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  box.replaceChildren();
  if (!g) return;
  const atLimit = myUnits(sale) >= (sale.per_user_limit || 1);
  const canStart = sale.phase === "live" && !inTeam && !sale.busy && !S.banned && !atLimit;
  box.append(
    el(
      "div",
      { class: "group-offer" },
      el("span", { class: "group-icon", "aria-hidden": "true" }, String(g.size)),
      el("span", { class: "group-text" }, t("group_offer", { size: g.size, price: money(g.price_cents) })),
      inTeam
        ? null
        : el(
            "button",
            { type: "button", class: "team-btn", "data-testid": "start-team", disabled: !canStart, onclick: () => startTeam(sale) },
            sale.busy === "team" ? t("starting_team") : t("start_team"),
          ),
    ),
  );
}

function teamPurchase(sale, ack, paidCents) {
  const existing = S.holds.get(ack.hold_id);
  const p = existing || { hold_id: ack.hold_id, sale_id: sale.id, quantity: 1, kind: "team", status: "team_open", at_ms: Date.now() };
  Object.assign(p, { kind: "team", code: ack.code, members: ack.members, size: ack.size, deadline_ms: ack.deadline_ms, paid_cents: paidCents });
  // The team's confirmed push can overtake this ack: a confirmed order stays confirmed.
  if (p.status !== "confirmed") p.status = ack.completed ? "team_complete" : "team_open";
  S.holds.set(p.hold_id, p);
  sale.current = p.hold_id;
  remember();
  return p;
}

async function startTeam(sale) {
  if (sale.busy) return;
  sale.busy = "team";
  renderSale(sale);
  try {
    const ack = await buyRequest("open_team", { sale_id: sale.id, quantity: 1 });
    teamPurchase(sale, ack, sale.group.price_cents);
  } catch (error) {
    afterRefusal(sale, error);
  } finally {
    sale.busy = null;
  }
  renderSale(sale);
}

function renderJoinOffer() {
  const box = $id("join-offer");
  box.replaceChildren();
  if (!invite || invite.used || !S.me) return;
  const sale = S.sales.get(invite.sale);
  if (!sale || sale.phase === "ended" || !sale.group) {
    if (!invite.warned && S.everLive) {
      invite.warned = true;
      showError({ code: "sale_not_here", message: t("sale_not_here") });
    }
    return;
  }
  const mine = [...S.holds.values()].some((p) => p.code === invite.code && p.sale_id === sale.id);
  if (mine) return;
  const button = el(
    "button",
    { type: "button", class: "primary join", "data-testid": "join-team", disabled: Boolean(invite.busy) || S.banned, onclick: () => joinTeam(sale) },
    invite.busy ? t("joining") : t("join_team", { code: invite.code }),
  );
  box.append(
    el(
      "div",
      { class: "join-card", role: "region", "aria-label": t("join_offer", { code: invite.code }) },
      el("p", { class: "join-title" }, t("join_offer", { code: invite.code })),
      el("p", { class: "join-sub" }, (sale.product && sale.product.title) || "", " · ", t("group_offer", { size: sale.group.size, price: money(sale.group.price_cents) })),
      button,
    ),
  );
}

async function joinTeam(sale) {
  if (invite.busy) return;
  invite.busy = true;
  renderJoinOffer();
  try {
    const ack = await buyRequest("join_team", { sale_id: sale.id, code: invite.code, quantity: 1 });
    invite.used = true;
    teamPurchase(sale, ack, sale.group.price_cents);
    renderSale(sale);
    sale.dom.card.scrollIntoView({ block: "nearest" });
  } catch (error) {
    if (["team_closed", "team_not_found", "already_in_team"].includes(error.code)) invite.used = true;
    afterRefusal(sale, error);
  } finally {
    invite.busy = false;
  }
  renderJoinOffer();
}

async function copyLink(link, anchor, status) {
  try {
    await navigator.clipboard.writeText(link);
    status.textContent = t("copied");
  } catch (error) {
    // No clipboard (an http page, a browser that asks): select the link for a manual copy.
    const range = document.createRange();
    range.selectNodeContents(anchor);
    const selection = getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    status.textContent = t("copy_failed");
  }
  setTimeout(() => {
    status.textContent = "";
  }, 4000);
}

// -- language ---------------------------------------------------------------------------------

function applyLanguage() {
  const zh = language() === "zh";
  document.documentElement.lang = zh ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const node of document.querySelectorAll("[data-i18n-aria-label]")) node.setAttribute("aria-label", t(node.dataset.i18nAriaLabel));
  const toggle = $id("lang-toggle");
  toggle.textContent = zh ? "EN" : "中文";
  toggle.lang = zh ? "en" : "zh-CN";
  toggle.setAttribute("aria-label", zh ? "Language: switch to English" : "语言：切换到中文 (Chinese)");
  if (S.room) $id("host-line").textContent = t("host_is", { host: S.room.host_id });
  renderIdentity();
  renderCounts();
  renderPinned();
  renderComposer();
  renderAllSales();
  tools.renderAll();
}

// -- start ------------------------------------------------------------------------------------

const tools = new RoomTools({
  room: ROOM,
  socket: () => S.socket,
  me: () => S.me,
  banned: () => S.banned,
  token: () => S.token,
  showError,
  comment: postComment,
});

function start() {
  applyLanguage();
  $id("lang-toggle").addEventListener("click", () => {
    setLanguage(language() === "zh" ? "en" : "zh");
    applyLanguage();
  });
  $id("sign-in-toggle").addEventListener("click", toggleSignIn);
  $id("sign-out").addEventListener("click", () => {
    // Signing out on purpose (a shared phone): the tab forgets this person's purchases too.
    if (S.memoryUser) writeMemory(S.memoryUser, null);
    restart(null);
  });
  $id("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $id("token-input").value.trim();
    if (!token) return;
    $id("token-input").value = "";
    $id("sign-in").hidden = true;
    $id("sign-in-toggle").setAttribute("aria-expanded", "false");
    restart(token);
  });
  $id("composer").addEventListener("submit", sendComment);
  $id("like").addEventListener("click", like);
  $id("notice").addEventListener("click", clearNotice);
  setInterval(() => {
    for (const sale of S.sales.values()) tickSale(sale);
    tools.tick();
    if (S.mutedUntil && S.mutedUntil <= now()) {
      S.mutedUntil = 0;
      renderComposer();
    }
  }, 250);
  // A ping now and then keeps the server clock estimate (the countdowns) fresh.
  setInterval(() => {
    if (S.socket && S.socket.state === "live") S.socket.send("ping");
  }, 30000);
  if (!ROOM) {
    showError({ code: "room_not_found" });
    return;
  }
  S.token = loadToken();
  renderIdentity();
  updateChatEmpty();
  connect();
}

start();
