// Shared by the host console and the viewer page: the HTTP API, the room's WebSocket (the
// client package's RoomClient, see openRoom), building DOM safely, money, time and words in
// two languages.
//
// Everything from the server is put into the page with textContent (el() below), never as
// HTML: comments and product titles are written by strangers.

import { RoomClient } from "/static/live-client.js";

// -- words ------------------------------------------------------------------------------------

const WORDS = {
  en: {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    offline: "Offline",
    banned: "You are banned from this room",
    expired: "Your sign-in expired: sign in again",
    refused: "Could not join the room",
    // Errors, by the server's code (docs/protocol.md, docs/http-api.md).
    sold_out: "Sold out. Units may come back when holds expire.",
    insufficient_stock: "Not enough units left.",
    limit_reached: "You have reached the limit per person for this sale.",
    invalid_quantity: "That quantity is not allowed.",
    not_started: "The sale has not started yet.",
    ended: "The sale has ended.",
    frozen: "The sale is paused for a moment; try again shortly.",
    rate_limited: "Too fast: wait a moment and try again.",
    login_required: "Sign in to buy.",
    hold_expired: "Your hold expired; the units went back.",
    hold_not_found: "That hold no longer exists.",
    payment_failed: "The payment did not go through. Nothing was charged.",
    coupon_invalid: "That coupon cannot be used.",
    coupons_gone: "All coupons are taken.",
    team_not_found: "No group buy with that code.",
    team_closed: "That group buy is closed.",
    already_in_team: "You are already in this group buy.",
    muted: "You are muted for now.",
    slow_mode: "Slow mode is on: wait before commenting again.",
    comment_too_long: "That comment is too long.",
    banned_words: "That comment contains a word that is not allowed.",
    forbidden: "You are not allowed to do that.",
    token_missing: "Sign in first.",
    token_invalid: "That token is not valid.",
    token_expired: "That token has expired.",
    wrong_room: "That token is for another room.",
    room_not_found: "No such room.",
    unavailable: "The server is busy; try again.",
    network: "No connection to the server.",
    closed: "No connection to the server.",
    connection_lost: "The connection dropped before the server answered; check before trying again.",
    timeout: "The server did not answer in time.",
    unknown_sale: "No such sale in this room.",
    not_your_hold: "That hold belongs to someone else.",
    already_confirmed: "Already paid.",
    in_team: "This hold belongs to a group buy: it completes or fails with the group.",
    amount_changed: "The price changed while paying; you were refunded.",
    batch_not_found: "No such coupon drop.",
    not_group_sale: "This sale has no group price.",
    duplicate: "That request was already sent with other details.",
    invalid_field: "Something in the form is not right.",
    missing_field: "Something in the form is missing.",
    internal: "Something went wrong on the server.",
    too_many_connections: "Too many connections from your network.",
    server_full: "The room is full right now; try again soon.",
    // The room's tools: auctions, lucky draws, polls, Q&A.
    auction_not_found: "That auction is not in this room.",
    auction_ended: "The auction is over: no more bids.",
    bid_too_low: "Bid too low: the minimum bid now is {min}.",
    bid_too_low_plain: "Bid too low: someone bid more meanwhile.",
    invalid_amount: "That amount cannot be bid.",
    own_auction: "The host does not bid on their own auction.",
    not_your_offer: "This auction is not offered to you.",
    offer_expired: "Your offer lapsed: it was not paid in time. Nothing was charged.",
    draw_not_found: "That lucky draw is not in this room.",
    draw_closed: "That lucky draw has closed.",
    draw_open: "That lucky draw is still open: its seed is revealed at the draw.",
    keyword_required: "Enter this draw by commenting its keyword.",
    draw_full: "The lucky draw is full.",
    sign_in_required: "Sign in to take part.",
    not_a_winner: "You did not win this draw.",
    claim_expired: "The time to claim this prize is over.",
    poll_not_found: "That poll is not in this room.",
    poll_closed: "The poll has closed.",
    invalid_option: "That is not one of the poll's options.",
    already_voted: "You have voted already; this poll does not allow changing a vote.",
    invalid_text: "The question is empty or too long.",
    question_not_found: "That question is no longer there.",
    own_question: "You cannot upvote your own question.",
    question_closed: "That question was answered or dismissed.",
    limit_exceeded: "The room has as many open tools as it may have.",
  },
  zh: {
    connecting: "连接中…",
    live: "直播中",
    reconnecting: "重新连接中…",
    offline: "已断开",
    banned: "你已被禁止进入此直播间",
    expired: "登录已过期，请重新登录",
    refused: "无法进入直播间",
    sold_out: "已售罄，锁定的库存过期后可能会释放。",
    insufficient_stock: "剩余库存不足。",
    limit_reached: "已达到本次秒杀的每人限购数量。",
    invalid_quantity: "购买数量不正确。",
    not_started: "秒杀尚未开始。",
    ended: "秒杀已结束。",
    frozen: "秒杀暂停片刻，请稍后再试。",
    rate_limited: "操作太快了，请稍等再试。",
    login_required: "请先登录再购买。",
    hold_expired: "锁定已过期，库存已释放。",
    hold_not_found: "该锁定已不存在。",
    payment_failed: "支付未成功，未扣款。",
    coupon_invalid: "该优惠券不可用。",
    coupons_gone: "优惠券已被抢完。",
    team_not_found: "找不到该拼团。",
    team_closed: "该拼团已关闭。",
    already_in_team: "你已在该拼团中。",
    muted: "你已被禁言。",
    slow_mode: "慢速模式已开启，请稍后再发言。",
    comment_too_long: "评论太长了。",
    banned_words: "评论包含不允许的词语。",
    forbidden: "你没有权限这样做。",
    token_missing: "请先登录。",
    token_invalid: "令牌无效。",
    token_expired: "令牌已过期。",
    wrong_room: "该令牌属于其他直播间。",
    room_not_found: "直播间不存在。",
    unavailable: "服务器繁忙，请重试。",
    network: "无法连接服务器。",
    closed: "无法连接服务器。",
    connection_lost: "服务器回复前连接断开了，请先确认再重试。",
    timeout: "服务器未及时响应。",
    unknown_sale: "此直播间没有该秒杀。",
    not_your_hold: "该锁定属于其他人。",
    already_confirmed: "已支付。",
    in_team: "该锁定属于拼团，将随拼团成功或失败。",
    amount_changed: "支付时价格发生变化，已退款。",
    batch_not_found: "没有这批优惠券。",
    not_group_sale: "该秒杀没有拼团价。",
    duplicate: "该请求已用其他内容发送过。",
    invalid_field: "表单内容有误。",
    missing_field: "表单内容不完整。",
    internal: "服务器出错了。",
    too_many_connections: "你所在网络的连接过多。",
    server_full: "直播间人数已满，请稍后再试。",
    auction_not_found: "此直播间没有该拍卖。",
    auction_ended: "拍卖已结束，不能再出价。",
    bid_too_low: "出价太低：当前最低出价为 {min}。",
    bid_too_low_plain: "出价太低：已有人出了更高的价。",
    invalid_amount: "该金额不能出价。",
    own_auction: "主播不能对自己的拍卖出价。",
    not_your_offer: "该拍品没有轮到你付款。",
    offer_expired: "付款时限已过，未扣款。",
    draw_not_found: "此直播间没有该福袋。",
    draw_closed: "该福袋已开奖。",
    draw_open: "该福袋还没开奖：种子在开奖时公布。",
    keyword_required: "发送口令评论即可参与该福袋。",
    draw_full: "福袋参与人数已满。",
    sign_in_required: "请先登录再参与。",
    not_a_winner: "你没有中奖。",
    claim_expired: "领奖时间已过。",
    poll_not_found: "此直播间没有该投票。",
    poll_closed: "投票已结束。",
    invalid_option: "没有这个选项。",
    already_voted: "你已经投过票了，本次投票不能改票。",
    invalid_text: "问题为空或太长。",
    question_not_found: "该问题已不存在。",
    own_question: "不能给自己的问题点赞。",
    question_closed: "该问题已回答或已被移除。",
    limit_exceeded: "直播间同时进行的互动已达上限。",
  },
};

let lang = (localStorage.getItem("live.lang") || navigator.language || "en").toLowerCase().startsWith("zh")
  ? "zh"
  : "en";

/** Page strings: extend() adds a page's own words to both languages. */
export function extend(words) {
  for (const code of Object.keys(WORDS)) Object.assign(WORDS[code], words[code] || {});
}

export function t(key, vars = {}) {
  const text = WORDS[lang][key] ?? WORDS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";

export function language() {
  return lang;
}

export function setLanguage(code) {
  lang = code === "zh" ? "zh" : "en";
  localStorage.setItem("live.lang", lang);
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
}

/** Words for an error from the server or the network: ours if we know the code, else theirs. */
export function describeError(error) {
  const code = error && error.code;
  // The fields an error frame carries (min_bid_cents of bid_too_low, say) fill in its words.
  const details = (error && error.data) || error || {};
  if (code === "bid_too_low") {
    return typeof details.min_bid_cents === "number" ? t(code, { min: money(details.min_bid_cents) }) : t("bid_too_low_plain");
  }
  if (code && (WORDS[lang][code] || WORDS.en[code])) return t(code);
  return (error && error.message) || String(error);
}

// -- DOM --------------------------------------------------------------------------------------

/** el("button", {class: "buy", onclick: f}, "Buy"): children are nodes or text (never HTML). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

// -- money and time ---------------------------------------------------------------------------

/** Integer cents as money: 1999 -> "¥19.99". */
export function money(cents) {
  const sign = cents < 0 ? "-" : "";
  const abs = Math.abs(Math.trunc(cents));
  return `${sign}¥${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}

/** Parse "19.99" (or "19") into integer cents, or null. */
export function parseMoney(text) {
  const match = /^\s*[¥￥$]?\s*(\d{1,10})(?:[.,](\d{1,2}))?\s*$/.exec(text);
  if (!match) return null;
  return Number(match[1]) * 100 + Number((match[2] || "0").padEnd(2, "0"));
}

/** Milliseconds as "m:ss" (or "h:mm:ss"). */
export function clock(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

// -- HTTP API ---------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Call the HTTP API; resolves with the JSON answer, rejects with an ApiError. */
export async function api(path, { method = "GET", body, token } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new ApiError(0, "network", t("network"));
  }
  let data = null;
  try {
    data = await response.json();
  } catch (error) {
    data = null;
  }
  if (!response.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(response.status, err.code || `http_${response.status}`, err.message || response.statusText);
  }
  return data;
}

// -- the room's WebSocket ---------------------------------------------------------------------

/**
 * The pages' room connection: the client package's RoomClient (clients/js, served as
 * /static/live-client.js) on this server, in JSON (readable in the browser's tools), with
 * first-message auth (the token is in no URL), retrying until it is in or refused for good.
 * Events "message" and "state" (connecting | live | reconnecting | offline | banned |
 * expired | refused, with `refusal` the typed error); request() resolves with the ack or
 * rejects with the LiveError of its code.
 */
export function openRoom(room, token) {
  return new RoomClient(location.origin, { room, token, framing: "json", connectTimeoutMs: Infinity, requestTimeoutMs: 15000 });
}
