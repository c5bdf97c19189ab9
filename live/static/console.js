// The host console (/console): sign in with a host token, pick or create a room, add products,
// run flash sales, talk to the room and moderate its chat, and watch the show's numbers live.
//
// It speaks only the public HTTP API (docs/http-api.md) and the room WebSocket
// (docs/protocol.md). Everything the server sends is put into the page as text (el() and
// textContent), never as HTML: comments, user ids and product titles are written by strangers.

import {
  $,
  api,
  clock,
  describeError,
  el,
  extend,
  language,
  money,
  openRoom,
  parseMoney,
  setLanguage,
  t,
} from "/static/common.js";
import { ConsoleTools } from "/static/console-tools.js";

// -- words ------------------------------------------------------------------------------------

extend({
  en: {
    app_title: "Live console",
    sign_out: "Sign out",
    dismiss: "Dismiss",
    signin_title: "Sign in to run your show",
    signin_help: "Paste the host token you were given (from `live token` or your identity service). It is kept in this tab only and forgotten when you sign out or close it.",
    token_label: "Host token",
    sign_in: "Sign in",
    signed_in_as: "{user} · {role}",
    role_host: "host",
    role_moderator: "moderator",
    role_viewer: "viewer",
    setup: "Setup",
    room: "Room",
    choose_room: "Current room",
    choose_room_option: "— choose a room —",
    room_option: "{title} ({id})",
    viewer_link: "Viewer link (share it)",
    copy: "Copy",
    copied: "Viewer link copied.",
    copy_failed: "Could not copy: select the link and copy it by hand.",
    new_room: "New room",
    room_title: "Title",
    room_id: "Room id",
    optional: "(optional)",
    room_id_ph: "made up when empty",
    allow_anon: "Allow viewers without a token",
    create_room: "Create room",
    room_created: "Room “{title}” ({id}) created.",
    products: "Products",
    no_products: "No products yet: add the first one below.",
    no_products_option: "— add a product first —",
    add_product_title: "Add a product",
    product_title: "Product name",
    price: "Price (¥)",
    image_url: "Image URL",
    add_product: "Add product",
    product_added: "Added “{title}”.",
    pin: "Pin",
    unpin: "Unpin",
    pinned: "Pinned",
    pin_aria: "Pin {title} for viewers",
    unpin_aria: "Unpin {title}",
    pinned_ok: "Pinned “{title}”.",
    unpinned_ok: "Unpinned.",
    new_sale: "New flash sale",
    product: "Product",
    stock: "Stock",
    per_user_limit: "Limit per person",
    sale_price: "Sale price (¥)",
    sale_price_ph: "product price",
    starts_in: "Starts in (s, 0 = now)",
    duration: "Duration (s)",
    hold: "Hold to pay (s)",
    group_buy: "Group buy",
    group_size: "Team size",
    group_price: "Group price (¥)",
    team_deadline: "Team deadline (s)",
    open_sale: "Open flash sale",
    sale_opened_ok: "Flash sale opened: “{title}”.",
    show: "Show",
    no_room: "Choose a room or create one to start.",
    step_room: "Create a room on the left, or choose one of yours.",
    step_products: "Add the products you will sell.",
    step_sale: "Open a flash sale: now, or with a countdown.",
    step_share: "Share the viewer link, then talk to the room and watch the numbers here.",
    live_now: "Live now",
    charts_span: "charts: last 2 minutes",
    viewers: "Viewers",
    spark_viewers: "Viewers over the last 2 minutes",
    comments_s: "Comments / s",
    spark_comments: "Comments per second over the last 2 minutes",
    orders: "Orders",
    spark_orders: "Orders per second over the last 2 minutes",
    gmv: "GMV",
    this_sale: "this sale",
    peak: "Peak viewers",
    likes_s: "Likes / s",
    reservations: "Held, unpaid",
    conversion: "Conversion",
    conversion_help: "buyers ÷ peak viewers",
    flash_sale: "Flash sale",
    no_sale: "No sale selected. Open one, or pick one from the list below.",
    stock_left: "Left",
    held: "Held",
    sold: "Sold",
    total: "Total",
    add_units: "Add units",
    add_stock: "Add stock",
    stock_added: "Added {units} units.",
    coupon_count: "Coupons",
    coupon_discount: "Discount (¥)",
    drop_coupons: "Drop coupons",
    coupons_ok: "Dropped {count} coupons of {discount} off.",
    coupon_line: "{count} × {discount} off · batch {batch}",
    stop_sale: "Stop sale",
    confirm_stop: "Really stop?",
    sale_stopped: "Sale stopped: no new holds.",
    room_sales: "Sales in this room",
    no_sales: "None yet.",
    sale_line: "{sold} / {total} sold",
    sale_meta: "{price} · up to {limit} per person · holds {hold}",
    sale_meta_group: "group of {size} at {price}",
    starts_label: "Starts in",
    ends_label: "Ends in",
    ended_label: "Ended",
    phase_not_started: "Not started",
    phase_live: "On sale",
    phase_sold_out: "Sold out",
    phase_ended: "Ended",
    phase_frozen: "Paused (repair)",
    phase_missing_in_redis: "Needs repair",
    stockbar: "{left} left, {held} held, {sold} sold of {total}",
    latest_orders: "Latest orders",
    orders_help: "paid, from the ledger",
    col_time: "Time",
    col_user: "Buyer",
    col_qty: "Qty",
    col_amount: "Amount",
    no_orders: "No orders yet.",
    talk: "Talk to the room",
    host_message: "Host message",
    host_message_label: "Message to every viewer",
    host_message_ph: "Message to every viewer (Enter sends, Shift+Enter: new line)",
    send: "Send",
    sending: "sending…",
    delivered: "delivered",
    failed: "not sent",
    host_sent: "Sent to every viewer.",
    chat: "Chat",
    mute_for: "Mute for",
    m1: "1 minute",
    m5: "5 minutes",
    m10: "10 minutes",
    h1: "1 hour",
    d1: "1 day",
    slow_mode_label: "Slow mode (s, 0 = off)",
    slow_badge: "Slow mode {s} s",
    set: "Set",
    slow_ok: "Slow mode: one comment per {s} s per viewer.",
    slow_off_ok: "Slow mode is off.",
    clear_chat: "Clear chat",
    confirm_clear: "Really clear?",
    cleared_ok: "Chat cleared for everyone.",
    new_below: "New comments ↓",
    delete: "Delete",
    mute: "Mute",
    ban: "Ban",
    confirm_ban: "Confirm ban",
    delete_aria: "Delete this comment by {user}",
    mute_aria: "Mute {user}",
    ban_aria: "Ban {user} from the room",
    deleted_ok: "Comment deleted.",
    muted_ok: "{user} is muted for {duration}.",
    banned_ok: "{user} is banned from the room.",
    lift_label: "Lift a mute or ban (user id)",
    unmute: "Unmute",
    unban: "Unban",
    unmuted_ok: "{user} may comment again.",
    unbanned_ok: "{user} may join the room again.",
    need_user: "Type the user's id first.",
    protected_user: "The room's host cannot be muted or banned.",
    muted_until: "muted until {time}",
    badge_host: "Host",
    badge_moderator: "Mod",
    sys_deleted: "{by} deleted a comment by {user}: “{text}”",
    sys_deleted_id: "{by} deleted comment #{id}",
    sys_cleared: "{by} cleared the chat",
    sys_muted: "{user} muted until {time} (by {by})",
    sys_banned: "{user} banned (by {by})",
    sys_unmuted: "{user} unmuted (by {by})",
    sys_unbanned: "{user} unbanned (by {by})",
    sys_slow: "Slow mode {s} s (by {by})",
    sys_slow_off: "Slow mode off (by {by})",
    sys_pinned: "{by} pinned “{title}”",
    sys_unpinned: "{by} unpinned the product",
    sys_sale_opened: "Flash sale opened: “{title}”",
    sys_sale_started: "Flash sale started",
    sys_sold_out: "Sold out: {sold} / {total}",
    sys_sale_ended: "Sale ended: {sold} / {total} sold",
    sys_coupons: "{count} coupons of {discount} off dropped",
    sys_lagged: "Slow connection: {n} comments were not shown",
    sys_reconnected: "Reconnected",
    err_invalid_field: "Check the form:",
    err_missing_field: "Missing:",
    err_bad_json: "The request was malformed:",
    need_token: "Paste your host token first.",
    need_int: "{field}: enter a whole number.",
    need_money: "{field}: enter an amount such as 19.99.",
    need_text: "Type a message first.",
    need_product: "Add a product first, then open a sale for it.",
    need_sale: "Select a sale first.",
    role_warning: "This is a {role} token: the console needs a host (or moderator) token.",
    signed_out: "Signed out.",
    room_exists: "A room with that id exists already: pick another id.",
    product_not_found: "No such product in this room.",
    unknown_sale: "No such sale.",
    already_ended: "That sale is over already.",
    duplicate: "That request was sent before with other values.",
    body_too_large: "That is too much text.",
    not_found: "Not found.",
    internal: "The server hit a bug (it is logged). Try again.",
    batch_not_found: "No such coupon batch.",
    poll_failed: "Live numbers are not updating: {why}",
  },
  zh: {
    app_title: "直播中控台",
    sign_out: "退出登录",
    dismiss: "关闭",
    signin_title: "登录后开始直播",
    signin_help: "粘贴你的主播令牌（来自 `live token` 或你的身份服务）。令牌只保存在此标签页，退出或关闭后即忘记。",
    token_label: "主播令牌",
    sign_in: "登录",
    signed_in_as: "{user} · {role}",
    role_host: "主播",
    role_moderator: "场控",
    role_viewer: "观众",
    setup: "准备",
    room: "直播间",
    choose_room: "当前直播间",
    choose_room_option: "— 选择直播间 —",
    room_option: "{title}（{id}）",
    viewer_link: "观众链接（分享出去）",
    copy: "复制",
    copied: "观众链接已复制。",
    copy_failed: "无法复制：请手动选中链接复制。",
    new_room: "新建直播间",
    room_title: "标题",
    room_id: "直播间 ID",
    optional: "（可选）",
    room_id_ph: "留空则自动生成",
    allow_anon: "允许未登录观众进入",
    create_room: "创建直播间",
    room_created: "直播间「{title}」（{id}）已创建。",
    products: "商品",
    no_products: "还没有商品：在下方添加第一个。",
    no_products_option: "— 请先添加商品 —",
    add_product_title: "添加商品",
    product_title: "商品名称",
    price: "价格（元）",
    image_url: "图片地址",
    add_product: "添加商品",
    product_added: "已添加「{title}」。",
    pin: "置顶",
    unpin: "取消置顶",
    pinned: "已置顶",
    pin_aria: "向观众置顶 {title}",
    unpin_aria: "取消置顶 {title}",
    pinned_ok: "已置顶「{title}」。",
    unpinned_ok: "已取消置顶。",
    new_sale: "新建秒杀",
    product: "商品",
    stock: "库存",
    per_user_limit: "每人限购",
    sale_price: "秒杀价（元）",
    sale_price_ph: "默认商品价",
    starts_in: "几秒后开始（0 = 立即）",
    duration: "持续时间（秒）",
    hold: "付款保留时间（秒）",
    group_buy: "拼团",
    group_size: "成团人数",
    group_price: "拼团价（元）",
    team_deadline: "成团时限（秒）",
    open_sale: "开启秒杀",
    sale_opened_ok: "秒杀已开启：「{title}」。",
    show: "直播",
    no_room: "选择或创建一个直播间即可开始。",
    step_room: "在左侧创建直播间，或选择已有的直播间。",
    step_products: "添加要卖的商品。",
    step_sale: "开启秒杀：立即开始，或先倒计时。",
    step_share: "分享观众链接，然后与直播间互动，在这里看实时数据。",
    live_now: "实时数据",
    charts_span: "图表：最近 2 分钟",
    viewers: "在线观众",
    spark_viewers: "最近 2 分钟在线观众",
    comments_s: "评论 / 秒",
    spark_comments: "最近 2 分钟每秒评论数",
    orders: "订单",
    spark_orders: "最近 2 分钟每秒订单数",
    gmv: "成交额",
    this_sale: "本场秒杀",
    peak: "观众峰值",
    likes_s: "点赞 / 秒",
    reservations: "已锁定未付款",
    conversion: "转化率",
    conversion_help: "买家 ÷ 观众峰值",
    flash_sale: "秒杀",
    no_sale: "未选择秒杀。开启一场，或从下方列表中选择。",
    stock_left: "剩余",
    held: "锁定",
    sold: "已售",
    total: "总量",
    add_units: "追加数量",
    add_stock: "追加库存",
    stock_added: "已追加 {units} 件。",
    coupon_count: "优惠券数量",
    coupon_discount: "减免（元）",
    drop_coupons: "发放优惠券",
    coupons_ok: "已发放 {count} 张减 {discount} 的优惠券。",
    coupon_line: "{count} 张 × 减 {discount} · 批次 {batch}",
    stop_sale: "停止秒杀",
    confirm_stop: "确定停止？",
    sale_stopped: "秒杀已停止：不再接受新的锁定。",
    room_sales: "本直播间的秒杀",
    no_sales: "暂无。",
    sale_line: "已售 {sold} / {total}",
    sale_meta: "{price} · 每人限购 {limit} · 保留 {hold}",
    sale_meta_group: "{size} 人团 {price}",
    starts_label: "距开始",
    ends_label: "距结束",
    ended_label: "已结束",
    phase_not_started: "未开始",
    phase_live: "抢购中",
    phase_sold_out: "已售罄",
    phase_ended: "已结束",
    phase_frozen: "修复中暂停",
    phase_missing_in_redis: "需要修复",
    stockbar: "剩余 {left}，锁定 {held}，已售 {sold}，共 {total}",
    latest_orders: "最新订单",
    orders_help: "已付款，来自账本",
    col_time: "时间",
    col_user: "买家",
    col_qty: "数量",
    col_amount: "金额",
    no_orders: "还没有订单。",
    talk: "与直播间互动",
    host_message: "主播消息",
    host_message_label: "发给所有观众的消息",
    host_message_ph: "发给所有观众的消息（回车发送，Shift+回车换行）",
    send: "发送",
    sending: "发送中…",
    delivered: "已送达",
    failed: "未发送",
    host_sent: "已发送给所有观众。",
    chat: "评论",
    mute_for: "禁言时长",
    m1: "1 分钟",
    m5: "5 分钟",
    m10: "10 分钟",
    h1: "1 小时",
    d1: "1 天",
    slow_mode_label: "慢速模式（秒，0 = 关闭）",
    slow_badge: "慢速模式 {s} 秒",
    set: "设置",
    slow_ok: "慢速模式：每位观众每 {s} 秒一条评论。",
    slow_off_ok: "慢速模式已关闭。",
    clear_chat: "清空评论",
    confirm_clear: "确定清空？",
    cleared_ok: "已为所有人清空评论。",
    new_below: "有新评论 ↓",
    delete: "删除",
    mute: "禁言",
    ban: "封禁",
    confirm_ban: "确认封禁",
    delete_aria: "删除 {user} 的这条评论",
    mute_aria: "禁言 {user}",
    ban_aria: "将 {user} 封禁出直播间",
    deleted_ok: "评论已删除。",
    muted_ok: "{user} 已被禁言 {duration}。",
    banned_ok: "{user} 已被封禁。",
    lift_label: "解除禁言或封禁（用户 ID）",
    unmute: "解除禁言",
    unban: "解除封禁",
    unmuted_ok: "{user} 可以再次评论了。",
    unbanned_ok: "{user} 可以再次进入直播间了。",
    need_user: "请先输入用户 ID。",
    protected_user: "不能禁言或封禁主播。",
    muted_until: "禁言至 {time}",
    badge_host: "主播",
    badge_moderator: "场控",
    sys_deleted: "{by} 删除了 {user} 的评论：“{text}”",
    sys_deleted_id: "{by} 删除了评论 #{id}",
    sys_cleared: "{by} 清空了评论",
    sys_muted: "{user} 被禁言至 {time}（{by}）",
    sys_banned: "{user} 被封禁（{by}）",
    sys_unmuted: "{user} 被解除禁言（{by}）",
    sys_unbanned: "{user} 被解除封禁（{by}）",
    sys_slow: "慢速模式 {s} 秒（{by}）",
    sys_slow_off: "慢速模式已关闭（{by}）",
    sys_pinned: "{by} 置顶了「{title}」",
    sys_unpinned: "{by} 取消了置顶",
    sys_sale_opened: "秒杀已开启：「{title}」",
    sys_sale_started: "秒杀开始",
    sys_sold_out: "已售罄：{sold} / {total}",
    sys_sale_ended: "秒杀结束：已售 {sold} / {total}",
    sys_coupons: "发放了 {count} 张减 {discount} 的优惠券",
    sys_lagged: "网络较慢：有 {n} 条评论未显示",
    sys_reconnected: "已重新连接",
    err_invalid_field: "请检查输入：",
    err_missing_field: "缺少字段：",
    err_bad_json: "请求格式有误：",
    need_token: "请先粘贴主播令牌。",
    need_int: "{field}：请输入整数。",
    need_money: "{field}：请输入金额，例如 19.99。",
    need_text: "请先输入消息。",
    need_product: "请先添加商品，再为它开启秒杀。",
    need_sale: "请先选择一场秒杀。",
    role_warning: "这是{role}令牌：中控台需要主播（或场控）令牌。",
    signed_out: "已退出登录。",
    room_exists: "该直播间 ID 已存在，请换一个。",
    product_not_found: "直播间里没有这个商品。",
    unknown_sale: "没有这场秒杀。",
    already_ended: "这场秒杀已经结束。",
    duplicate: "这个请求之前用不同的内容发送过。",
    body_too_large: "内容太长了。",
    not_found: "未找到。",
    internal: "服务器出错（已记录），请重试。",
    batch_not_found: "没有这批优惠券。",
    poll_failed: "实时数据未更新：{why}",
  },
});

// -- small helpers ------------------------------------------------------------------------------

const TOKEN_KEY = "live.console.token";
const ROOM_KEY = "live.console.room";
const CHAT_MAX = 200;
const SERIES = 120; // samples in a sparkline: one a second, two minutes
const ORDER_ROWS = 50;
const SVG = "http://www.w3.org/2000/svg";

/** A node whose text (and aria-label, placeholder) follows the language: see applyWords(). */
function w(node, key, vars) {
  node.dataset.i18n = key;
  if (vars) node.dataset.i18nVars = JSON.stringify(vars);
  else delete node.dataset.i18nVars;
  node.textContent = t(key, vars);
  return node;
}

function wAria(node, key, vars) {
  node.dataset.i18nAria = key;
  if (vars) node.dataset.i18nAriaVars = JSON.stringify(vars);
  node.setAttribute("aria-label", t(key, vars));
  return node;
}

function applyWords(root = document) {
  const vars = (text) => (text ? JSON.parse(text) : undefined);
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n, vars(node.dataset.i18nVars));
  for (const node of root.querySelectorAll("[data-i18n-aria]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nAria, vars(node.dataset.i18nAriaVars)));
  }
  for (const node of root.querySelectorAll("[data-i18n-ph]")) node.setAttribute("placeholder", t(node.dataset.i18nPh));
  document.title = t("app_title");
}

const enc = encodeURIComponent;

/** A counter as text: "–" when the server did not give it (a sale Redis lost, say). */
function count(value) {
  return typeof value === "number" ? String(value) : "–";
}

function timeOf(ms) {
  return new Date(ms).toLocaleTimeString(language() === "zh" ? "zh-CN" : "en-GB", {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  });
}

function seconds(s) {
  const zh = language() === "zh";
  if (s >= 60 && s % 60 === 0) return zh ? `${s / 60} 分钟` : `${s / 60} min`;
  return zh ? `${s} 秒` : `${s} s`;
}

/** Text of an input as an integer, or a thrown local error naming the field. */
function intOf(input) {
  const text = input.value.trim();
  if (!/^-?\d{1,15}$/.test(text)) throw localError("need_int", input);
  return Number(text);
}

/** Money text ("19.99", "¥19.99") as cents, or a thrown local error naming the field. */
function centsOf(input) {
  const cents = parseMoney(input.value.replace(/^\s*[¥￥]/, ""));
  if (cents === null) throw localError("need_money", input);
  return cents;
}

function labelOf(input) {
  const label = document.querySelector(`label[for="${input.id}"]`);
  return label ? label.textContent.replace(/\s*[(（].*$/, "").trim() : input.id;
}

class LocalError extends Error {
  constructor(text, input) {
    super(text);
    this.code = "local";
    this.input = input;
  }
}

function localError(key, input) {
  return new LocalError(t(key, { field: input ? labelOf(input) : "" }), input);
}

/** The server's error in words: ours for a known code, with the server's detail where ours is generic. */
function explain(error) {
  if (error instanceof LocalError) return error.message;
  const code = error && error.code;
  if (code === "invalid_field" || code === "missing_field" || code === "bad_json") {
    return `${t(`err_${code}`)} ${error.message}`;
  }
  return describeError(error);
}

let noticeTimer = null;

function notify(kind, text) {
  const notice = $("#notice");
  clearTimeout(noticeTimer);
  notice.className = `notice ${kind}`;
  notice.textContent = text;
  if (kind === "ok") {
    noticeTimer = setTimeout(() => {
      if (notice.textContent === text) notice.textContent = "";
    }, 5000);
  }
}

function ok(key, vars) {
  notify("ok", t(key, vars));
}

function fail(error, form = null) {
  if (!(error instanceof LocalError) && !(error && error.code)) console.error(error);
  notify("error", explain(error));
  let input = error instanceof LocalError ? error.input : null;
  // The server names the field it refused ("the field 'stock' must be ..."): point at it.
  const named = form && error && /'([\w.]+)'/.exec(error.message || "");
  if (!input && named) input = form.querySelector(`[data-field~="${named[1]}"]`);
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
  if (error && error.code === "token_expired") showSignIn();
}

/** Run an action for a button: disabled while it runs, errors shown in words. */
async function act(button, action, form = null) {
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (error) {
    fail(error, form);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/** A button that asks once more before it acts (ban, clear chat, stop sale). */
function twoStep(button, confirmKey, action) {
  let armed = null;
  let timer = null;
  button.addEventListener("click", () => {
    if (!armed) {
      button.classList.add("armed");
      armed = { key: button.dataset.i18n, vars: button.dataset.i18nVars };
      w(button, confirmKey);
      timer = setTimeout(disarm, 4000);
      return;
    }
    disarm();
    action();
  });
  button.addEventListener("blur", () => setTimeout(disarm, 150));
  function disarm() {
    clearTimeout(timer);
    if (!armed) return;
    button.classList.remove("armed");
    w(button, armed.key, armed.vars ? JSON.parse(armed.vars) : undefined);
    armed = null;
  }
}

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part + "=".repeat((4 - (part.length % 4)) % 4)), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    return null;
  }
}

// -- state ------------------------------------------------------------------------------------

const S = {
  token: null,
  claims: null,
  rooms: [],
  room: null, // the current room's id
  roomGen: 0, // bumped when the room changes: late answers for the old room are dropped
  socket: null,
  products: [],
  pinnedId: null,
  sales: new Map(), // id -> sale (list view, with product when known)
  saleId: null,
  sale: null, // the current sale's latest status
  saleGen: 0,
  coupons: [],
  online: 0,
  peak: 0,
  likes: [], // [ms, total] samples, last few seconds
  onlineSeries: [],
  commentBins: new Map(), // server second -> comments
  orderBins: new Map(), // server second -> orders
  orders: new Map(), // order id -> order
  ordersCursor: "0",
  ordersUnits: 0,
  gmv: 0,
  buyers: new Set(),
  ordersDirty: false,
  polling: { sale: false, orders: false },
  pollError: null,
  seenComments: new Set(),
  muted: new Map(), // user -> until_ms
  everLive: false, // a welcome came on this room's socket: the next one is a reconnect
};

// -- sign in / out ------------------------------------------------------------------------------

function showSignIn() {
  $("#signin-view").hidden = false;
  $("#console-view").hidden = true;
  $("#sign-out").hidden = true;
  $("#who").hidden = true;
  $("#topbar-room").hidden = true;
}

async function signIn(token) {
  token = token.trim();
  if (!token) throw localError("need_token", $("#token-input"));
  const claims = claimsOf(token);
  if (claims && claims.role === "viewer") {
    throw new LocalError(t("role_warning", { role: t("role_viewer") }), $("#token-input"));
  }
  let answer;
  try {
    answer = await api("/api/rooms", { token });
  } catch (error) {
    if (sessionStorage.getItem(TOKEN_KEY) === token) sessionStorage.removeItem(TOKEN_KEY);
    showSignIn();
    throw error;
  }
  S.token = token;
  S.claims = claims;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#token-input").value = "";
  $("#signin-view").hidden = true;
  $("#console-view").hidden = false;
  $("#sign-out").hidden = false;
  renderWho();
  S.rooms = answer.rooms;
  const wanted = sessionStorage.getItem(ROOM_KEY);
  const pick = S.rooms.find((r) => r.id === wanted) || (S.rooms.length === 1 ? S.rooms[0] : null);
  renderRooms(pick ? pick.id : null);
  $("#new-room").open = S.rooms.length === 0;
  if (pick) {
    enterRoom(pick.id);
  } else {
    leaveRoom();
    if (!S.rooms.length) $("#room-title-input").focus();
  }
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(ROOM_KEY);
  leaveRoom();
  S.token = null;
  S.claims = null;
  S.rooms = [];
  showSignIn();
  ok("signed_out");
  $("#token-input").focus();
}

function renderWho() {
  const who = $("#who");
  if (!S.claims) {
    who.hidden = true;
    return;
  }
  who.hidden = false;
  w(who, "signed_in_as", { user: S.claims.sub, role: t(`role_${S.claims.role}`) });
}

// -- rooms --------------------------------------------------------------------------------------

function renderRooms(selected) {
  const select = $("#room-select");
  select.replaceChildren(
    w(el("option", { value: "" }), "choose_room_option"),
    ...S.rooms.map((room) => w(el("option", { value: room.id }), "room_option", { title: room.title, id: room.id })),
  );
  select.value = selected || "";
}

function leaveRoom() {
  S.roomGen += 1;
  if (S.socket) S.socket.close();
  S.socket = null;
  S.room = null;
  document.body.classList.add("no-room");
  $("#no-room").hidden = false;
  $("#topbar-room").hidden = true;
  $("#viewer-link-box").hidden = true;
  resetRoomState();
}

function resetRoomState() {
  if (tools) tools.clear();
  S.products = [];
  S.pinnedId = null;
  S.sales = new Map();
  S.online = 0;
  S.peak = 0;
  S.likes = [];
  S.onlineSeries = [];
  S.commentBins = new Map();
  S.seenComments = new Set();
  S.muted = new Map();
  S.everLive = false;
  $("#lift-user-input").value = "";
  $("#chat").replaceChildren();
  $("#host-log").replaceChildren();
  $("#chat-jump").hidden = true;
  selectSale(null);
  renderProducts();
  renderSales();
  renderStats();
  renderSlow(0);
}

function enterRoom(roomId) {
  leaveRoom();
  const room = S.rooms.find((r) => r.id === roomId);
  if (!room) return;
  S.room = roomId;
  const gen = S.roomGen;
  sessionStorage.setItem(ROOM_KEY, roomId);
  document.body.classList.remove("no-room");
  $("#no-room").hidden = true;
  $("#topbar-room").hidden = false;
  $("#topbar-room-title").textContent = room.title;
  const url = `${location.origin}/r/${enc(roomId)}`;
  const link = $("#viewer-link");
  link.href = url;
  link.textContent = url;
  $("#viewer-link-box").hidden = false;

  const socket = openRoom(roomId, S.token);
  S.socket = socket;
  socket.addEventListener("state", (event) => {
    if (S.socket === socket) renderSocketState(event.detail);
  });
  socket.addEventListener("message", (event) => {
    if (S.socket !== socket) return;
    try {
      onMessage(event.detail);
    } catch (error) {
      console.error("while handling", event.detail && event.detail.type, error);
    }
  });
  renderSocketState("connecting");
  socket.connect();
  loadProducts(gen).catch(fail);
  loadSales(gen, true).catch(fail);
  tools.enter();
}

function renderSocketState(state) {
  const badge = $("#socket-state");
  badge.className = `badge socket-${state}${state === "live" ? " live" : ""}`;
  badge.dataset.state = state;
  w(badge, state);
  if (state === "expired") {
    notify("error", t("expired"));
  } else if (state === "banned") {
    notify("error", t("banned"));
  } else if (state === "refused" && S.socket) {
    notify("error", describeError(S.socket.refusal));
  }
}

async function createRoom(event) {
  event.preventDefault();
  const title = $("#room-title-input").value.trim();
  const id = $("#room-id-input").value.trim();
  const body = { title, allow_anonymous: $("#room-anon-input").checked };
  if (id) body.id = id;
  const room = await api("/api/rooms", { method: "POST", body, token: S.token });
  S.rooms = S.rooms.filter((r) => r.id !== room.id).concat([room]);
  renderRooms(room.id);
  $("#room-title-input").value = "";
  $("#room-id-input").value = "";
  $("#room-anon-input").checked = false;
  $("#new-room").open = false;
  enterRoom(room.id);
  ok("room_created", { title: room.title, id: room.id });
}

// -- products -----------------------------------------------------------------------------------

async function loadProducts(gen) {
  const answer = await api(`/api/rooms/${enc(S.room)}/products`, { token: S.token });
  if (gen !== S.roomGen) return;
  const first = S.products.length === 0;
  S.products = answer.products;
  if (first) $("#new-product").open = S.products.length === 0;
  renderProducts();
  renderSales();
  renderSale();
}

function productOf(id) {
  return S.products.find((p) => p.id === id) || null;
}

function renderProducts() {
  const list = $("#products");
  list.replaceChildren(
    ...S.products.map((product) => {
      const pinned = product.id === S.pinnedId;
      const button = el("button", { type: "button", class: pinned ? "small pinned-btn" : "small", "data-testid": "pin-product" });
      w(button, pinned ? "unpin" : "pin");
      wAria(button, pinned ? "unpin_aria" : "pin_aria", { title: product.title });
      button.addEventListener("click", () =>
        act(button, async () => {
          if (pinned) {
            await S.socket.request("unpin_product");
            ok("unpinned_ok");
          } else {
            await S.socket.request("pin_product", { product_id: product.id });
            ok("pinned_ok", { title: product.title });
          }
        }),
      );
      return el(
        "li",
        { class: pinned ? "product pinned" : "product", "data-testid": "product", "data-id": product.id },
        product.image_url
          ? el("img", { class: "thumb", src: product.image_url, alt: "", loading: "lazy", referrerpolicy: "no-referrer" })
          : el("span", { class: "thumb thumb-empty", "aria-hidden": "true" }, [...product.title][0] || "?"),
        el(
          "div",
          { class: "product-text" },
          el("span", { class: "product-title" }, product.title),
          el(
            "span",
            { class: "product-sub" },
            el("span", { class: "num" }, money(product.price_cents)),
            pinned ? w(el("span", { class: "badge live" }), "pinned") : null,
          ),
        ),
        button,
      );
    }),
  );
  $("#products-empty").hidden = S.products.length > 0;

  const select = $("#sale-product-select");
  const before = select.value;
  select.replaceChildren(
    ...S.products.map((p) => el("option", { value: p.id }, `${p.title} · ${money(p.price_cents)}`)),
  );
  if (!S.products.length) select.append(w(el("option", { value: "" }), "no_products_option"));
  if (S.products.some((p) => p.id === before)) select.value = before;
  else if (S.products.length) select.value = S.products[S.products.length - 1].id;
  updateSalePricePlaceholder();
  if (tools) tools.products();
}

function updateSalePricePlaceholder() {
  const product = productOf($("#sale-product-select").value);
  $("#sale-price-input").placeholder = product ? money(product.price_cents).replace("¥", "") : "";
}

async function addProduct(event) {
  event.preventDefault();
  const title = $("#product-title-input").value.trim();
  const price = centsOf($("#product-price-input"));
  const image = $("#product-image-input").value.trim();
  const body = { title, price_cents: price };
  if (image) body.image_url = image;
  const gen = S.roomGen;
  const product = await api(`/api/rooms/${enc(S.room)}/products`, { method: "POST", body, token: S.token });
  if (gen !== S.roomGen) return;
  S.products = S.products.filter((p) => p.id !== product.id).concat([product]);
  renderProducts();
  $("#sale-product-select").value = product.id;
  updateSalePricePlaceholder();
  for (const id of ["#product-title-input", "#product-price-input", "#product-image-input"]) $(id).value = "";
  ok("product_added", { title: product.title });
}

// -- sales --------------------------------------------------------------------------------------

async function loadSales(gen, pickLatest = false) {
  const answer = await api(`/api/rooms/${enc(S.room)}/sales`, { token: S.token });
  if (gen !== S.roomGen) return;
  for (const sale of answer.sales) {
    const known = S.sales.get(sale.id);
    S.sales.set(sale.id, { ...known, ...sale, product: sale.product || (known && known.product) });
  }
  if (pickLatest && !S.saleId) {
    const open = [...S.sales.values()]
      .filter((s) => s.phase !== "ended" && s.state !== "stopped")
      .sort((a, b) => b.created_at_ms - a.created_at_ms);
    if (open.length) selectSale(open[0].id);
  }
  renderSales();
}

function saleTitle(sale) {
  const product = (sale.product && sale.product.id ? sale.product : null) || productOf(sale.product_id);
  return product ? product.title : sale.product_id;
}

function renderSales() {
  const list = $("#sales");
  const sales = [...S.sales.values()].sort(
    (a, b) => (b.created_at_ms || b.starts_at_ms) - (a.created_at_ms || a.starts_at_ms),
  );
  list.replaceChildren(
    ...sales.map((sale) => {
      const current = sale.id === S.saleId;
      const shown = current && S.sale ? { ...sale, ...S.sale } : sale;
      const button = el(
        "button",
        { type: "button", class: "sale-pick", "aria-pressed": current ? "true" : "false", "data-testid": "sale-pick", "data-id": sale.id },
        el("span", { class: "sale-pick-title" }, saleTitle(sale)),
        el("span", { class: "sale-pick-meta muted num" }, `${money(shown.price_cents)} · `, w(el("span"), "sale_line", { sold: count(shown.sold), total: count(shown.total ?? shown.stock) })),
        phaseBadge(shown.phase),
      );
      button.addEventListener("click", () => selectSale(sale.id));
      return el("li", {}, button);
    }),
  );
  $("#sales-empty").hidden = sales.length > 0;
}

function phaseBadge(phase, node = el("span")) {
  node.className = `badge phase phase-${phase}${phase === "live" ? " live" : phase === "sold_out" ? " warn" : ""}`;
  node.dataset.phase = phase;
  return w(node, `phase_${phase}`);
}

function selectSale(id) {
  if (id === S.saleId && id !== null) return;
  S.saleId = id;
  S.saleGen += 1;
  S.sale = id ? { ...S.sales.get(id) } : null;
  S.coupons = [];
  S.orders = new Map();
  S.orderBins = new Map();
  S.ordersCursor = "0";
  S.ordersUnits = 0;
  S.gmv = 0;
  S.buyers = new Set();
  S.ordersDirty = true;
  renderSale();
  renderSales();
  renderOrders();
  renderStats();
  if (id) {
    pollSale();
    pollOrders();
  }
}

function renderSale() {
  const sale = S.sale;
  $("#no-sale").hidden = Boolean(sale);
  $("#sale-card").hidden = !sale;
  $("#sale-phase").hidden = !sale;
  $("#stop-sale").hidden = !sale;
  if (!sale) return;
  phaseBadge(sale.phase, $("#sale-phase"));
  $("#sale-title").textContent = saleTitle({ ...S.sales.get(sale.id), ...sale });
  const meta = [
    w(el("span"), "sale_meta", { price: money(sale.price_cents), limit: sale.per_user_limit, hold: seconds(sale.hold_ms / 1000) }),
  ];
  if (sale.group) {
    meta.push(" · ", w(el("span"), "sale_meta_group", { size: sale.group.size, price: money(sale.group.price_cents) }));
  }
  $("#sale-meta").replaceChildren(...meta);
  $("#stock-left").textContent = count(sale.available);
  $("#sale-held").textContent = count(sale.held);
  $("#sold").textContent = count(sale.sold);
  $("#sale-total").textContent = count(sale.total ?? sale.stock);
  $("#held").textContent = count(sale.held);
  drawStockBar(sale);
  $("#stop-sale").hidden = sale.phase === "ended";
  $("#coupons").replaceChildren(
    ...S.coupons.map((c) =>
      w(el("li", { class: "coupon" }), "coupon_line", { count: c.count, discount: money(c.discount_cents), batch: c.batch_id }),
    ),
  );
  renderCountdown();
}

function renderCountdown() {
  const sale = S.sale;
  if (!sale || !S.socket) return;
  const now = S.socket.now();
  let key;
  let value;
  if (sale.phase === "not_started" && now < sale.starts_at_ms) {
    key = "starts_label";
    value = clock(sale.starts_at_ms - now);
  } else if (sale.phase === "ended" || now >= sale.ends_at_ms) {
    key = "ended_label";
    value = timeOf(Math.min(sale.ends_at_ms, now));
  } else {
    key = "ends_label";
    value = clock(sale.ends_at_ms - now);
  }
  const label = $("#countdown-label");
  if (label.dataset.i18n !== key) w(label, key);
  const box = $("#countdown");
  if (box.textContent !== value) box.textContent = value;
  box.parentElement.dataset.kind = key;
}

function drawStockBar(sale) {
  const svg = $("#stockbar");
  const total = Math.max(1, sale.total || 0);
  const parts = [
    ["sold", sale.sold || 0],
    ["held", sale.held || 0],
    ["left", sale.available || 0],
  ];
  let x = 0;
  const rects = parts.map(([name, value]) => {
    const width = (1000 * value) / total;
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("class", `bar-${name}`);
    rect.setAttribute("x", String(x));
    rect.setAttribute("y", "0");
    rect.setAttribute("width", String(Math.max(0, width)));
    rect.setAttribute("height", "14");
    x += width;
    return rect;
  });
  const back = document.createElementNS(SVG, "rect");
  back.setAttribute("class", "bar-back");
  back.setAttribute("width", "1000");
  back.setAttribute("height", "14");
  svg.replaceChildren(back, ...rects);
  wAria(svg, "stockbar", { left: sale.available, held: sale.held, sold: sale.sold, total: sale.total });
}

/** Merge fields into the current sale (from a poll or an event) and redraw. */
function updateSale(id, fields) {
  const listed = S.sales.get(id);
  if (listed) S.sales.set(id, { ...listed, ...fields });
  if (id === S.saleId) {
    S.sale = { ...S.sale, ...fields };
    renderSale();
    renderStats();
  }
  renderSales();
}

async function pollSale() {
  if (!S.saleId || S.polling.sale) return;
  S.polling.sale = true;
  const gen = S.saleGen;
  try {
    const sale = await api(`/api/sales/${enc(S.saleId)}`, { token: S.token });
    if (gen !== S.saleGen) return;
    pollRecovered("sale");
    updateSale(sale.id, sale);
  } catch (error) {
    pollFailed("sale", error);
  } finally {
    S.polling.sale = false;
  }
}

// The orders endpoint answers with a cursor that only moves forward (the ledger's recording
// order): polling with it sees each new order once, however the order ids sort.
async function pollOrders() {
  if (!S.saleId || S.polling.orders) return;
  S.polling.orders = true;
  const gen = S.saleGen;
  const saleId = S.saleId;
  try {
    for (let page = 0; page < 50; page += 1) {
      const query = new URLSearchParams({ limit: "1000", after: S.ordersCursor });
      const answer = await api(`/api/sales/${enc(saleId)}/orders?${query}`, { token: S.token });
      if (gen !== S.saleGen) return;
      for (const order of answer.orders) addOrder(order);
      S.ordersCursor = answer.cursor;
      if (!answer.more) break;
    }
    pollRecovered("orders");
    if (S.ordersDirty) {
      renderOrders();
      renderStats();
    }
  } catch (error) {
    pollFailed("orders", error);
  } finally {
    S.polling.orders = false;
  }
}

function addOrder(order) {
  if (S.orders.has(order.order_id)) return;
  S.orders.set(order.order_id, order);
  S.gmv += order.amount_cents;
  S.ordersUnits += order.quantity;
  S.buyers.add(order.user_id);
  const second = Math.floor(order.confirmed_at_ms / 1000);
  S.orderBins.set(second, (S.orderBins.get(second) || 0) + 1);
  S.ordersDirty = true;
}

function renderOrders() {
  S.ordersDirty = false;
  const latest = [...S.orders.values()]
    .sort((a, b) => b.confirmed_at_ms - a.confirmed_at_ms || (a.order_id < b.order_id ? 1 : -1))
    .slice(0, ORDER_ROWS);
  $("#orders").replaceChildren(
    ...latest.map((o) =>
      el(
        "tr",
        { "data-testid": "order-row", "data-id": o.order_id },
        el("td", { class: "num muted" }, timeOf(o.confirmed_at_ms)),
        el("td", { class: "user" }, o.user_id),
        el("td", { class: "num right" }, String(o.quantity)),
        el("td", { class: "num right" }, money(o.amount_cents)),
      ),
    ),
  );
  $("#orders-empty").hidden = S.orders.size > 0;
  $("#orders-count").textContent = String(S.orders.size);
  $("#gmv").textContent = money(S.gmv);
}

function pollFailed(what, error) {
  if (S.pollError === what + error.code) return; // said once; the next success clears it
  S.pollError = what + error.code;
  notify("error", t("poll_failed", { why: explain(error) }));
  if (error.code === "token_expired") showSignIn();
}

function pollRecovered(what) {
  if (S.pollError && S.pollError.startsWith(what)) {
    S.pollError = null;
    const notice = $("#notice");
    if (notice.textContent.startsWith(t("poll_failed", { why: "" }))) notice.textContent = "";
  }
}

async function openSale(event) {
  event.preventDefault();
  const productId = $("#sale-product-select").value;
  if (!productId) throw new LocalError(t("need_product"), $("#product-title-input"));
  const body = {
    product_id: productId,
    stock: intOf($("#sale-stock-input")),
    per_user_limit: intOf($("#sale-limit-input")),
    starts_in_s: intOf($("#sale-start-input")),
    duration_s: intOf($("#sale-duration-input")),
    hold_s: intOf($("#sale-hold-input")),
  };
  if ($("#sale-price-input").value.trim()) body.price_cents = centsOf($("#sale-price-input"));
  if ($("#sale-group-input").checked) {
    const price = $("#sale-group-price-input");
    body.group = {
      size: intOf($("#sale-group-size-input")),
      price_cents: centsOf(price),
      team_s: intOf($("#sale-team-input")),
    };
  }
  const gen = S.roomGen;
  const sale = await api(`/api/rooms/${enc(S.room)}/sales`, { method: "POST", body, token: S.token });
  if (gen !== S.roomGen) return;
  const product = productOf(sale.product_id);
  S.sales.set(sale.id, { ...sale, product, created_at_ms: Date.now() });
  S.saleId = null;
  selectSale(sale.id);
  ok("sale_opened_ok", { title: product ? product.title : sale.product_id });
}

async function addStock(event) {
  event.preventDefault();
  if (!S.saleId) throw new LocalError(t("need_sale"));
  const units = intOf($("#stock-units-input"));
  const sale = await api(`/api/sales/${enc(S.saleId)}/stock`, { method: "POST", body: { units }, token: S.token });
  updateSale(sale.id, sale);
  ok("stock_added", { units });
}

async function dropCoupons(event) {
  event.preventDefault();
  if (!S.saleId) throw new LocalError(t("need_sale"));
  const body = { count: intOf($("#coupon-count-input")), discount_cents: centsOf($("#coupon-discount-input")) };
  const batch = await api(`/api/sales/${enc(S.saleId)}/coupons`, { method: "POST", body, token: S.token });
  if (batch.sale_id === S.saleId) {
    S.coupons.push(batch);
    renderSale();
  }
  ok("coupons_ok", { count: batch.count, discount: money(batch.discount_cents) });
}

async function stopSale() {
  if (!S.saleId) return;
  const sale = await api(`/api/sales/${enc(S.saleId)}/stop`, { method: "POST", token: S.token });
  updateSale(sale.id, sale);
  ok("sale_stopped");
}

// -- live numbers and sparklines ----------------------------------------------------------------

function setOnline(n) {
  S.online = n;
  S.peak = Math.max(S.peak, n);
  $("#online").textContent = String(n);
  $("#peak").textContent = String(S.peak);
}

function binsSeries(bins, endSecond) {
  const out = [];
  for (let s = endSecond - SERIES + 1; s <= endSecond; s += 1) out.push(bins.get(s) || 0);
  return out;
}

function renderStats() {
  const serverSecond = Math.floor((S.socket ? S.socket.now() : Date.now()) / 1000);
  const done = serverSecond - 1; // the last whole second
  let recent = 0;
  for (let s = done - 4; s <= done; s += 1) recent += S.commentBins.get(s) || 0;
  $("#comments-rate").textContent = (recent / 5).toFixed(1);

  let likeRate = 0;
  if (S.likes.length >= 2) {
    const [t0, l0] = S.likes[0];
    const [t1, l1] = S.likes[S.likes.length - 1];
    if (t1 > t0) likeRate = Math.max(0, ((l1 - l0) * 1000) / (t1 - t0));
  }
  $("#likes-rate").textContent = likeRate.toFixed(1);
  $("#held").textContent = S.sale ? count(S.sale.held) : "0";
  $("#conversion").textContent = S.peak > 0 && S.buyers.size ? `${((100 * S.buyers.size) / S.peak).toFixed(1)}%` : "–";
  $("#orders-count").textContent = String(S.orders.size);
  $("#gmv").textContent = money(S.gmv);

  sparkline($("#spark-online"), S.onlineSeries.length ? S.onlineSeries : [0]);
  sparkline($("#spark-comments"), binsSeries(S.commentBins, done));
  sparkline($("#spark-orders"), binsSeries(S.orderBins, done));
}

/** A tiny line chart: an area and a line, scaled to the series' largest value. */
function sparkline(svg, values) {
  const width = 120;
  const height = 32;
  if (!svg.firstChild) {
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    const base = document.createElementNS(SVG, "line");
    base.setAttribute("class", "spark-base");
    for (const [name, value] of [["x1", 0], ["x2", width], ["y1", height - 0.5], ["y2", height - 0.5]]) {
      base.setAttribute(name, String(value));
    }
    base.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(base);
    for (const name of ["area", "line"]) {
      const node = document.createElementNS(SVG, name === "area" ? "path" : "polyline");
      node.setAttribute("class", `spark-${name}`);
      if (name === "line") node.setAttribute("vector-effect", "non-scaling-stroke");
      svg.append(node);
    }
  }
  const top = Math.max(1, ...values);
  const n = SERIES;
  const offset = n - values.length; // a short series is drawn from the right
  const points = values.map((v, i) => [
    ((offset + i) * width) / (n - 1),
    height - 1.5 - (v / top) * (height - 4),
  ]);
  const text = points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
  const [, area, line] = svg.children;
  line.setAttribute("points", text);
  const first = points[0][0].toFixed(1);
  const last = points[points.length - 1][0].toFixed(1);
  area.setAttribute("d", `M${first},${height} L${text.replace(/ /g, " L")} L${last},${height} Z`);
}

function tick() {
  if (!S.room) return;
  S.onlineSeries.push(S.online);
  if (S.onlineSeries.length > SERIES) S.onlineSeries.shift();
  const cutoff = Math.floor((S.socket ? S.socket.now() : Date.now()) / 1000) - SERIES - 10;
  for (const bins of [S.commentBins, S.orderBins]) {
    for (const key of bins.keys()) if (key < cutoff) bins.delete(key);
  }
  const now = Date.now();
  while (S.likes.length > 1 && now - S.likes[0][0] > 5000) S.likes.shift();
  renderStats();
}

// -- the room's WebSocket -------------------------------------------------------------------

function onMessage(m) {
  if (tools.handle(m)) return; // auctions, lucky draws, polls, Q&A
  switch (m.type) {
    case "welcome":
      setOnline(m.online ?? 0);
      S.likes.push([Date.now(), m.likes ?? 0]);
      renderSlow(m.slow_mode_s || 0);
      setPinned(m.pinned ? m.pinned.id : null);
      if (m.room && m.room.title) $("#topbar-room-title").textContent = m.room.title;
      for (const sale of (m.room && m.room.sales) || []) {
        const known = S.sales.get(sale.id);
        S.sales.set(sale.id, { ...known, ...sale });
      }
      renderSales();
      addComments(m.comments || []);
      if (S.everLive) {
        addSystem("sys_reconnected", {});
        loadSales(S.roomGen).catch(fail);
      }
      S.everLive = true;
      tools.welcome(m);
      break;
    case "batch":
      if (typeof m.online === "number") setOnline(m.online);
      if (typeof m.likes === "number") S.likes.push([Date.now(), m.likes]);
      if (m.comments && m.comments.length) addComments(m.comments);
      break;
    case "host_message":
      addHostLine(m);
      break;
    case "product_pinned":
      if (!productOf(m.product.id)) S.products.push(m.product);
      setPinned(m.product.id);
      addSystem("sys_pinned", { by: m.by, title: m.product.title });
      break;
    case "product_unpinned":
      setPinned(null);
      addSystem("sys_unpinned", { by: m.by });
      break;
    case "comment_deleted":
      removeComment(m);
      break;
    case "chat_cleared":
      for (const node of [...$("#chat").children]) node.remove();
      addSystem("sys_cleared", { by: m.by });
      break;
    case "user_muted":
      S.muted.set(m.user_id, m.until_ms);
      markMuted(m.user_id);
      addSystem("sys_muted", { user: m.user_id, time: timeOf(m.until_ms), by: m.by });
      offerLift(m.user_id);
      break;
    case "user_banned":
      addSystem("sys_banned", { user: m.user_id, by: m.by });
      for (const node of commentsOf(m.user_id)) node.classList.add("banned");
      offerLift(m.user_id);
      break;
    case "user_unmuted":
      S.muted.delete(m.user_id);
      for (const node of commentsOf(m.user_id)) node.querySelector(".muted-flag").hidden = true;
      addSystem("sys_unmuted", { user: m.user_id, by: m.by });
      break;
    case "user_unbanned":
      for (const node of commentsOf(m.user_id)) node.classList.remove("banned");
      addSystem("sys_unbanned", { user: m.user_id, by: m.by });
      break;
    case "slow_mode":
      renderSlow(m.interval_s);
      addSystem(m.interval_s ? "sys_slow" : "sys_slow_off", { s: m.interval_s, by: m.by });
      break;
    case "sale_opened": {
      const sale = m.sale;
      S.sales.set(sale.id, { ...S.sales.get(sale.id), ...sale, created_at_ms: sale.created_at_ms || m.ts_ms });
      if (sale.product && !productOf(sale.product.id)) loadProducts(S.roomGen).catch(fail);
      addSystem("sys_sale_opened", { title: saleTitle(sale) });
      if (!S.saleId) selectSale(sale.id);
      else renderSales();
      break;
    }
    case "sale_countdown":
      updateSale(m.sale_id, { starts_at_ms: m.starts_at_ms });
      break;
    case "sale_started":
      updateSale(m.sale_id, { phase: "live", available: m.available, total: m.total, ends_at_ms: m.ends_at_ms });
      addSystem("sys_sale_started", {});
      break;
    case "sale_stock": {
      const fields = { available: m.available, total: m.total, sold: m.sold };
      const current = S.sales.get(m.sale_id);
      if (current && current.phase === "sold_out" && m.available > 0) fields.phase = "live";
      updateSale(m.sale_id, fields);
      break;
    }
    case "sale_sold_out":
      updateSale(m.sale_id, { phase: "sold_out", available: 0, sold: m.sold, total: m.total });
      addSystem("sys_sold_out", { sold: m.sold, total: m.total });
      break;
    case "sale_ended":
      updateSale(m.sale_id, { phase: "ended", sold: m.sold, total: m.total });
      addSystem("sys_sale_ended", { sold: m.sold, total: m.total });
      break;
    case "coupons_dropped":
      addSystem("sys_coupons", { count: m.count, discount: money(m.discount_cents) });
      break;
    case "lagged":
      addSystem("sys_lagged", { n: m.dropped_comments || 0 });
      break;
    case "error":
      fail(m);
      break;
    default:
      break; // pong, order_status (buyers only), anything newer than this page
  }
}

function setPinned(id) {
  S.pinnedId = id;
  renderProducts();
}

function renderSlow(seconds) {
  const badge = $("#slow-badge");
  badge.hidden = !seconds;
  if (seconds) w(badge, "slow_badge", { s: seconds });
  const input = $("#slow-input");
  if (document.activeElement !== input) input.value = String(seconds);
}

// -- chat ---------------------------------------------------------------------------------------

function chatAtBottom() {
  const chat = $("#chat");
  return chat.scrollHeight - chat.scrollTop - chat.clientHeight < 40;
}

function appendChat(...nodes) {
  if (!nodes.length) return;
  const chat = $("#chat");
  const stick = chatAtBottom();
  chat.append(...nodes.slice(-CHAT_MAX));
  let extra = chat.children.length - CHAT_MAX;
  while (extra-- > 0) chat.firstElementChild.remove();
  if (stick) chat.scrollTop = chat.scrollHeight;
  else $("#chat-jump").hidden = false;
}

/** New comments, oldest first: counted for the rate, and the latest CHAT_MAX shown. */
function addComments(comments) {
  const fresh = comments.filter((c) => !S.seenComments.has(c.id));
  for (const c of fresh) {
    S.seenComments.add(c.id);
    const second = Math.floor((c.ts_ms || Date.now()) / 1000);
    S.commentBins.set(second, (S.commentBins.get(second) || 0) + 1);
  }
  if (S.seenComments.size > 5000) S.seenComments = new Set([...S.seenComments].slice(-2000));
  appendChat(...fresh.slice(-CHAT_MAX).map(commentNode));
  for (const user of new Set(fresh.map((c) => c.user_id))) {
    if (S.muted.get(user) > Date.now()) markMuted(user);
  }
}

function commentNode(c) {
  const staff = c.role === "host" || c.role === "moderator";
  const mine = S.claims && c.user_id === S.claims.sub;
  const actions = el("div", { class: "actions" });
  if (!mine) {
    const del = el("button", { type: "button", class: "small", "data-testid": "delete-comment" });
    w(del, "delete");
    wAria(del, "delete_aria", { user: c.user_id });
    del.addEventListener("click", () =>
      act(del, async () => {
        await S.socket.request("delete_comment", { comment_id: c.id });
        ok("deleted_ok");
      }),
    );
    actions.append(del);
    if (!staff) {
      const mute = el("button", { type: "button", class: "small", "data-testid": "mute-user" });
      w(mute, "mute");
      wAria(mute, "mute_aria", { user: c.user_id });
      mute.addEventListener("click", () =>
        act(mute, async () => {
          const select = $("#mute-duration");
          const duration = Number(select.value);
          await S.socket.request("mute", { user_id: c.user_id, duration_s: duration });
          ok("muted_ok", { user: c.user_id, duration: select.selectedOptions[0].textContent });
        }),
      );
      const ban = el("button", { type: "button", class: "small danger-ghost", "data-testid": "ban-user" });
      w(ban, "ban");
      wAria(ban, "ban_aria", { user: c.user_id });
      twoStep(ban, "confirm_ban", () =>
        act(ban, async () => {
          await S.socket.request("ban", { user_id: c.user_id });
          ok("banned_ok", { user: c.user_id });
        }),
      );
      actions.append(mute, ban);
    }
  }
  const meta = el(
    "div",
    { class: "meta" },
    el("time", { class: "num", datetime: new Date(c.ts_ms || Date.now()).toISOString() }, timeOf(c.ts_ms || Date.now())),
    el("span", { class: "user" }, c.user_id),
    staff ? w(el("span", { class: `badge role-${c.role}` }), `badge_${c.role}`) : null,
    el("span", { class: "muted-flag badge warn", hidden: true }),
  );
  return el(
    "li",
    { class: staff ? "comment staff" : "comment", "data-testid": "chat-comment", "data-id": c.id, "data-user": c.user_id },
    meta,
    el("p", { class: "text" }, c.text),
    actions,
  );
}

function commentsOf(user) {
  return [...$("#chat").querySelectorAll(".comment")].filter((node) => node.dataset.user === user);
}

/** After a mute or ban, its undo is one click away: the user's id waits in the lift form. */
function offerLift(user) {
  const input = $("#lift-user-input");
  if (document.activeElement === input) return;
  input.value = user;
  input.removeAttribute("aria-invalid");
}

/** Unmute or unban the user named in the lift form. */
async function lift(kind) {
  const input = $("#lift-user-input");
  const user = input.value.trim();
  if (!user) throw localError("need_user", input);
  await S.socket.request(kind, { user_id: user });
  ok(kind === "unmute" ? "unmuted_ok" : "unbanned_ok", { user });
}

function markMuted(user) {
  const until = S.muted.get(user);
  for (const node of $("#chat").querySelectorAll(".comment")) {
    if (node.dataset.user !== user) continue;
    const flag = node.querySelector(".muted-flag");
    flag.hidden = false;
    w(flag, "muted_until", { time: timeOf(until) });
  }
}

function removeComment(m) {
  const node = $("#chat").querySelector(`.comment[data-id="${Number(m.comment_id)}"]`);
  if (node) {
    const text = node.querySelector(".text").textContent;
    addSystem("sys_deleted", {
      by: m.by,
      user: node.dataset.user,
      text: text.length > 40 ? `${text.slice(0, 40)}…` : text,
    });
    node.remove();
  } else {
    addSystem("sys_deleted_id", { by: m.by, id: m.comment_id });
  }
}

function addSystem(key, vars) {
  appendChat(
    el("li", { class: "system", "data-testid": "chat-event", "data-kind": key }, w(el("span"), key, vars)),
  );
}

function addHostLine(m) {
  const label = w(el("span", { class: `badge role-${m.role || "host"}` }), `badge_${m.role === "moderator" ? "moderator" : "host"}`);
  appendChat(
    el(
      "li",
      { class: "hostline", "data-testid": "chat-host-message" },
      el("div", { class: "meta" }, el("time", { class: "num" }, timeOf(m.ts_ms || Date.now())), el("span", { class: "user" }, m.by), label),
      el("p", { class: "text" }, m.text),
    ),
  );
}

async function sendHostMessage(event) {
  event.preventDefault();
  const input = $("#host-message-input");
  const text = input.value.trim();
  if (!text) throw new LocalError(t("need_text"), input);
  const status = w(el("span", { class: "status" }), "sending");
  const entry = el("li", { "data-state": "sending", "data-testid": "host-log-entry" }, el("span", { class: "text" }, text), status);
  const log = $("#host-log");
  log.prepend(entry);
  while (log.children.length > 5) log.lastElementChild.remove();
  try {
    await S.socket.request("host_message", { text });
  } catch (error) {
    entry.dataset.state = "failed";
    w(status, "failed");
    throw error;
  }
  entry.dataset.state = "sent";
  w(status, "delivered");
  if (input.value.trim() === text) input.value = "";
  updateHostCount();
  ok("host_sent");
}

function updateHostCount() {
  $("#host-count").textContent = `${$("#host-message-input").value.length} / 2000`;
}

async function setSlowMode(event) {
  event.preventDefault();
  const interval = intOf($("#slow-input"));
  await S.socket.request("slow_mode", { interval_s: interval });
  if (interval) ok("slow_ok", { s: interval });
  else ok("slow_off_ok");
}

// -- wiring -------------------------------------------------------------------------------------

function onSubmit(form, handler) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
    act(form.querySelector("button[type=submit]"), () => handler(event), form);
  });
}

function renderLanguage() {
  applyWords();
  for (const [code, id] of [["en", "#lang-en"], ["zh", "#lang-zh"]]) {
    $(id).setAttribute("aria-pressed", language() === code ? "true" : "false");
  }
  renderWho();
  if (S.room) {
    renderProducts();
    renderSales();
    renderSale();
    renderOrders();
    tools.render();
    tools.renderQueue();
  }
}

let tools = null;

function start() {
  tools = new ConsoleTools({
    token: () => S.token,
    room: () => S.room,
    roomGen: () => S.roomGen,
    socket: () => S.socket,
    products: () => S.products,
    onSubmit,
    act,
    ok,
    fail,
    w,
    twoStep,
    intOf,
    centsOf,
    LocalError,
    localError,
    addSystem,
    timeOf,
  });
  setLanguage(language());
  renderLanguage();
  $("#lang-en").addEventListener("click", () => {
    setLanguage("en");
    renderLanguage();
  });
  $("#lang-zh").addEventListener("click", () => {
    setLanguage("zh");
    renderLanguage();
  });
  $("#notice-close").addEventListener("click", () => {
    $("#notice").textContent = "";
  });
  document.addEventListener("input", (event) => event.target.removeAttribute("aria-invalid"));

  onSubmit($("#signin-form"), () => signIn($("#token-input").value));
  $("#sign-out").addEventListener("click", signOut);
  $("#room-select").addEventListener("change", (event) => {
    if (event.target.value) enterRoom(event.target.value);
    else {
      sessionStorage.removeItem(ROOM_KEY);
      leaveRoom();
    }
  });
  $("#copy-link").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("#viewer-link").href);
      ok("copied");
    } catch (error) {
      notify("error", t("copy_failed"));
    }
  });
  onSubmit($("#room-form"), createRoom);
  onSubmit($("#product-form"), addProduct);
  onSubmit($("#sale-form"), openSale);
  onSubmit($("#stock-form"), addStock);
  onSubmit($("#coupon-form"), dropCoupons);
  onSubmit($("#host-form"), sendHostMessage);
  onSubmit($("#slow-form"), setSlowMode);
  $("#lift-form").addEventListener("submit", (event) => event.preventDefault()); // two actions: no default
  for (const kind of ["unmute", "unban"]) {
    const button = $(`#${kind}-user`);
    button.addEventListener("click", () => act(button, () => lift(kind), $("#lift-form")));
  }
  twoStep($("#stop-sale"), "confirm_stop", () => act($("#stop-sale"), stopSale));
  twoStep($("#clear-chat"), "confirm_clear", () =>
    act($("#clear-chat"), async () => {
      await S.socket.request("clear_chat");
      ok("cleared_ok");
    }),
  );
  $("#sale-product-select").addEventListener("change", updateSalePricePlaceholder);
  $("#sale-group-input").addEventListener("change", (event) => {
    const fields = $("#sale-group-fields");
    fields.hidden = !event.target.checked;
    fields.disabled = !event.target.checked;
  });
  const hostInput = $("#host-message-input");
  hostInput.addEventListener("input", updateHostCount);
  hostInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("#host-form").requestSubmit();
    }
  });
  const chat = $("#chat");
  chat.addEventListener("scroll", () => {
    if (chatAtBottom()) $("#chat-jump").hidden = true;
  });
  $("#chat-jump").addEventListener("click", () => {
    chat.scrollTop = chat.scrollHeight;
    $("#chat-jump").hidden = true;
  });

  setInterval(tick, 1000);
  let second = 0;
  setInterval(() => {
    if (!S.saleId) return;
    second += 1;
    pollSale();
    if (second % 2 === 0) pollOrders();
  }, 1000);
  setInterval(renderCountdown, 250);

  // #token=... (and optionally &room=...) in the address: take it, then drop it from the
  // address bar and history so it is not shared or bookmarked by accident.
  const fragment = new URLSearchParams(location.hash.slice(1));
  let token = fragment.get("token");
  if (fragment.has("token") || fragment.has("room")) {
    if (fragment.get("room")) sessionStorage.setItem(ROOM_KEY, fragment.get("room"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  token = token || sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    signIn(token).catch(fail);
  } else {
    showSignIn();
    $("#token-input").focus();
  }
}

start();
