// The host console's panels for the room's interaction tools: open a live auction, a lucky
// draw or a poll (forms whose refusals show the server's words and point at the field), watch
// them live, close a draw or a poll early, and run the Q&A queue (answer, pin, unpin, dismiss).
//
// console.js owns the sign-in, the room and its socket; it hands this module its helpers.

import { api, clock, el, extend, money, t } from "/static/common.js";
import { drawWinners, sha256Hex } from "/static/draw-verify.js";

extend({
  en: {
    tools: "Room tools",
    tools_help: "Auctions, lucky draws and polls keep the room watching between sales.",
    new_auction: "New auction",
    new_draw: "New lucky draw",
    new_poll: "New poll",
    start_price: "Starting price (¥)",
    increment: "Bid step (¥)",
    snipe: "Anti-sniping window (s)",
    max_extension: "Max extension (s)",
    reserve: "Reserve (¥)",
    buy_now: "Buy-it-now (¥)",
    open_auction: "Open auction",
    auction_opened_ok: "Auction opened: “{title}”.",
    prize_kind: "Prize",
    prize_product: "A product (free)",
    prize_coupon: "A coupon batch",
    coupon_batch: "Coupon batch id",
    winners: "Winners",
    keyword: "Keyword to comment",
    keyword_ph: "empty: an Enter button",
    rule_signed_in: "Signed-in viewers only",
    rule_present: "Must be in the room at the draw",
    min_watch: "Watched at least (s)",
    claim_window: "Time to claim (s)",
    open_draw: "Open lucky draw",
    draw_opened_ok: "Lucky draw opened.",
    question: "Question",
    options: "Options (one a line, 2 to 6)",
    allow_change: "Viewers may change their vote",
    open_poll: "Open poll",
    poll_opened_ok: "Poll opened.",
    need_options: "{field}: give 2 to 6 options, one a line.",
    need_text_field: "{field}: fill this in.",
    live_tools: "Auctions, draws and polls",
    no_tools: "None yet. Open one on the left.",
    kind_auction: "Auction",
    kind_draw: "Lucky draw",
    kind_poll: "Poll",
    t_state_open: "Open",
    t_state_offered: "Offered",
    t_state_sold: "Sold",
    t_state_unsold: "Unsold",
    t_state_closed: "Closed",
    bid_line: "{amount} by {user} · {n} bids",
    bid_none: "Starts at {amount} · no bids",
    offer_line: "Offered to {user} at {amount}, pay by {time}",
    sold_line: "Sold to {user} for {amount} · order {order}",
    ends_in: "ends in {time}",
    tool_ended: "ended",
    entrants_line: "{n} entered · {w} winners",
    keyword_line: "keyword “{keyword}”",
    winners_line: "Winners: {list}",
    no_winner: "No winners: nobody eligible.",
    seed_line: "seed {seed}",
    votes_line: "{n} votes",
    close_early: "Close now",
    verify_draw: "Verify",
    verified_ok: "Verified: SHA-256(seed) is the commitment, and the winners recomputed from the seed and the {n} eligible of {e} entries are the ones announced ✓",
    verified_bad: "Does NOT verify: the commitment or the winners differ from the recomputation ✗",
    confirm_close: "Really close?",
    closed_ok: "Closed.",
    qna_queue: "Q&A queue",
    qna_help: "ranked by upvotes, live",
    no_questions_q: "No open questions.",
    answer: "Answered",
    pin_q: "Pin",
    unpin_q: "Unpin",
    dismiss_q: "Dismiss",
    pinned_badge: "Pinned",
    answered_ok: "Marked as answered.",
    pinned_q_ok: "Pinned for every viewer.",
    unpinned_q_ok: "Unpinned.",
    dismissed_ok: "Dismissed.",
    upvotes_n: "▲ {n}",
    sys_auction_opened: "Auction opened: “{title}”",
    sys_auction_ended: "Auction ended: {state}",
    sys_auction_sold: "Auction sold to {user} for {amount}",
    sys_draw_opened: "Lucky draw opened",
    sys_draw_closed: "Lucky draw drawn: {n} winners",
    sys_poll_opened: "Poll opened: “{q}”",
    sys_poll_closed: "Poll closed",
    sys_question_pinned: "Question pinned",
    auction_not_found: "No such auction.",
    draw_not_found: "No such lucky draw.",
    poll_not_found: "No such poll.",
    question_not_found: "That question is no longer in the queue.",
    draw_closed: "The draw has closed already.",
    poll_closed: "The poll has closed already.",
    question_closed: "That question was answered or dismissed already.",
    limit_exceeded: "The room has as many open tools as it may have: close one first.",
  },
  zh: {
    tools: "直播间互动",
    tools_help: "拍卖、福袋和投票让观众在秒杀之间也留在直播间。",
    new_auction: "新建拍卖",
    new_draw: "新建福袋",
    new_poll: "新建投票",
    start_price: "起拍价（元）",
    increment: "加价幅度（元）",
    snipe: "防狙击延时窗口（秒）",
    max_extension: "最多延长（秒）",
    reserve: "保留价（元）",
    buy_now: "一口价（元）",
    open_auction: "开始拍卖",
    auction_opened_ok: "拍卖已开始：「{title}」。",
    prize_kind: "奖品",
    prize_product: "商品（免费）",
    prize_coupon: "一批优惠券",
    coupon_batch: "优惠券批次 ID",
    winners: "中奖人数",
    keyword: "参与口令",
    keyword_ph: "留空：观众点按钮参与",
    rule_signed_in: "仅限登录用户",
    rule_present: "开奖时须在直播间",
    min_watch: "至少观看（秒）",
    claim_window: "领奖时限（秒）",
    open_draw: "发福袋",
    draw_opened_ok: "福袋已发出。",
    question: "问题",
    options: "选项（每行一个，2 到 6 个）",
    allow_change: "观众可以改票",
    open_poll: "发起投票",
    poll_opened_ok: "投票已发起。",
    need_options: "{field}：请填写 2 到 6 个选项，每行一个。",
    need_text_field: "{field}：请填写。",
    live_tools: "拍卖、福袋和投票",
    no_tools: "暂无。在左侧发起一个。",
    kind_auction: "拍卖",
    kind_draw: "福袋",
    kind_poll: "投票",
    t_state_open: "进行中",
    t_state_offered: "待付款",
    t_state_sold: "已成交",
    t_state_unsold: "流拍",
    t_state_closed: "已结束",
    bid_line: "{user} 出价 {amount} · 共 {n} 次出价",
    bid_none: "起拍价 {amount} · 暂无出价",
    offer_line: "由 {user} 以 {amount} 拍得，{time} 前付款",
    sold_line: "{user} 以 {amount} 成交 · 订单 {order}",
    ends_in: "{time} 后结束",
    tool_ended: "已结束",
    entrants_line: "{n} 人参与 · {w} 个名额",
    keyword_line: "口令“{keyword}”",
    winners_line: "中奖：{list}",
    no_winner: "无人中奖：没有符合条件的参与者。",
    seed_line: "种子 {seed}",
    votes_line: "{n} 票",
    close_early: "立即结束",
    verify_draw: "验证",
    verified_ok: "验证通过：SHA-256(种子) 等于承诺值，用种子和 {e} 个参与者中 {n} 个有效者重新计算的中奖名单与公布的一致 ✓",
    verified_bad: "验证失败：承诺值或中奖名单与重新计算的不一致 ✗",
    confirm_close: "确定结束？",
    closed_ok: "已结束。",
    qna_queue: "观众提问",
    qna_help: "按点赞数实时排序",
    no_questions_q: "暂无待回答的问题。",
    answer: "已回答",
    pin_q: "置顶",
    unpin_q: "取消置顶",
    dismiss_q: "移除",
    pinned_badge: "已置顶",
    answered_ok: "已标记为已回答。",
    pinned_q_ok: "已向所有观众置顶。",
    unpinned_q_ok: "已取消置顶。",
    dismissed_ok: "已移除。",
    upvotes_n: "▲ {n}",
    sys_auction_opened: "拍卖开始：「{title}」",
    sys_auction_ended: "拍卖结束：{state}",
    sys_auction_sold: "拍卖成交：{user}，{amount}",
    sys_draw_opened: "福袋已发出",
    sys_draw_closed: "福袋开奖：{n} 人中奖",
    sys_poll_opened: "投票开始：「{q}」",
    sys_poll_closed: "投票结束",
    sys_question_pinned: "问题已置顶",
    auction_not_found: "没有这个拍卖。",
    draw_not_found: "没有这个福袋。",
    poll_not_found: "没有这个投票。",
    question_not_found: "该问题已不在队列中。",
    draw_closed: "福袋已经开奖。",
    poll_closed: "投票已经结束。",
    question_closed: "该问题已回答或已移除。",
    limit_exceeded: "直播间同时进行的互动已达上限：请先结束一个。",
  },
});

const enc = encodeURIComponent;
const QUEUE_REFRESH_MS = 3000;

/**
 * h: the console's helpers: token(), room(), roomGen(), socket(), products(), onSubmit(form,
 * handler), act(button, action), ok(key, vars), fail(error, form), w(node, key, vars),
 * twoStep(button, confirmKey, action), intOf(input), centsOf(input), LocalError, localError(key,
 * input), addSystem(key, vars), timeOf(ms).
 */
export class ConsoleTools {
  constructor(h) {
    this.h = h;
    this.auctions = new Map();
    this.draws = new Map();
    this.polls = new Map();
    this.questions = [];
    this.queueTimer = null;
    this.queueBusy = false;
    this.queueAgain = false;
    this.qnaServed = false;
    const $ = (id) => document.getElementById(id);
    this.list = $("tool-list");
    this.queue = $("qna-queue");
    h.onSubmit($("auction-form"), () => this.openAuction());
    h.onSubmit($("draw-form"), () => this.openDraw());
    h.onSubmit($("poll-form"), () => this.openPoll());
    $("draw-prize-kind").addEventListener("change", () => this._prizeKind());
    this._prizeKind();
    setInterval(() => this.tick(), 250);
    setInterval(() => {
      if (this.h.room() && this.qnaServed) this.refreshQueue();
    }, QUEUE_REFRESH_MS);
  }

  _prizeKind() {
    const coupon = document.getElementById("draw-prize-kind").value === "coupon";
    document.getElementById("draw-product-field").hidden = coupon;
    document.getElementById("draw-coupon-field").hidden = !coupon;
  }

  // -- the room ---------------------------------------------------------------------------------

  /** Left the room: nothing of it stays on the screen. */
  clear() {
    this.auctions = new Map();
    this.draws = new Map();
    this.polls = new Map();
    this.questions = [];
    this.qnaServed = false;
    if (this.list) this.list.replaceChildren();
    this.render();
    this.renderQueue();
  }

  enter() {
    this.auctions = new Map();
    this.draws = new Map();
    this.polls = new Map();
    this.questions = [];
    this.qnaServed = false;
    if (this.list) this.list.replaceChildren();
    this.render();
    this.renderQueue();
  }

  async _load(kind, map, gen) {
    try {
      const answer = await api(`/api/rooms/${enc(this.h.room())}/${kind}`, { token: this.h.token() });
      if (gen !== this.h.roomGen()) return;
      for (const item of answer[kind] || []) map.set(item.id, { ...normalise(item), ...map.get(item.id) });
      this.render();
    } catch (error) {
      this.h.fail(error);
    }
  }

  products() {
    const options = this.h.products().map((p) => el("option", { value: p.id }, `${p.title} · ${money(p.price_cents)}`));
    for (const id of ["auction-product-select", "draw-product-select"]) {
      const select = document.getElementById(id);
      const before = select.value;
      select.replaceChildren(...options.map((o) => o.cloneNode(true)));
      if (!options.length) select.append(this.h.w(el("option", { value: "" }), "no_products_option"));
      if ([...select.options].some((o) => o.value === before)) select.value = before;
      else if (options.length) select.value = select.options[select.options.length - 1].value;
    }
  }

  /** The welcome names the tools this server serves (a key each in its room): their lists,
   * the closed ones too, come from the HTTP API; the welcome has the open ones as they stand. */
  welcome(m) {
    const room = m.room || {};
    const gen = this.h.roomGen();
    for (const [key, map] of [["auctions", this.auctions], ["draws", this.draws], ["polls", this.polls]]) {
      if (!Array.isArray(room[key])) continue;
      for (const item of room[key]) map.set(item.id, { ...map.get(item.id), ...normalise(item) });
      this._load(key, map, gen);
    }
    this.qnaServed = Array.isArray(room.questions);
    this.render();
    this.renderQueue();
    if (this.qnaServed) this.refreshQueue();
  }

  /** A message of the room's socket: true when it was one of ours. */
  handle(m) {
    const h = this.h;
    switch (m.type) {
      case "auction_opened":
        this.auctions.set(m.auction.id, { ...this.auctions.get(m.auction.id), ...m.auction });
        h.addSystem("sys_auction_opened", { title: (m.auction.product && m.auction.product.title) || m.auction.id });
        break;
      case "auction_bid":
        this._patch(this.auctions, m.auction_id, (a) => {
          if ((m.bid_seq ?? 0) < (a.bid_seq ?? 0)) return;
          Object.assign(a, { leader_id: m.leader_id, amount_cents: m.amount_cents, ends_at_ms: m.ends_at_ms, bids: m.bids, bid_seq: m.bid_seq });
        });
        break;
      case "auction_ended":
        this._patch(this.auctions, m.auction_id, (a) => {
          a.state = m.state;
          if (m.winner_id) a.leader_id = m.winner_id;
        });
        h.addSystem("sys_auction_ended", { state: t(`t_state_${m.state}`) });
        break;
      case "auction_offer":
        this._patch(this.auctions, m.auction_id, (a) => {
          a.state = "offered";
          a.offer = { user_id: m.user_id, amount_cents: m.amount_cents, pay_by_ms: m.pay_by_ms };
        });
        break;
      case "auction_sold":
        this._patch(this.auctions, m.auction_id, (a) => {
          a.state = "sold";
          a.sold = { user_id: m.user_id, amount_cents: m.amount_cents, order_id: m.order_id };
        });
        h.addSystem("sys_auction_sold", { user: m.user_id, amount: money(m.amount_cents) });
        break;
      case "draw_opened":
        this.draws.set(m.draw.id, { ...this.draws.get(m.draw.id), ...m.draw });
        h.addSystem("sys_draw_opened", {});
        break;
      case "draw_entries":
        this._patch(this.draws, m.draw_id, (d) => {
          d.entrants = Math.max(d.entrants || 0, m.entrants);
        });
        break;
      case "draw_closed":
        this._patch(this.draws, m.draw_id, (d) => {
          Object.assign(d, { state: "closed", seed: m.seed, winner_ids: m.winner_ids || [], entrants: m.entrants ?? d.entrants });
        });
        h.addSystem("sys_draw_closed", { n: (m.winner_ids || []).length });
        break;
      case "poll_opened":
        this.polls.set(m.poll.id, { ...this.polls.get(m.poll.id), ...m.poll });
        h.addSystem("sys_poll_opened", { q: m.poll.question });
        break;
      case "poll_tally":
      case "poll_closed":
        this._patch(this.polls, m.poll_id, (p) => {
          if (p.state === "closed" && m.type === "poll_tally") return;
          if (Array.isArray(m.tallies)) p.tallies = m.tallies;
          if (typeof m.votes === "number") p.votes = m.votes;
          if (m.type === "poll_closed") p.state = "closed";
        });
        if (m.type === "poll_closed") h.addSystem("sys_poll_closed", {});
        break;
      case "qna_top":
      case "question_answered":
      case "question_unpinned":
        this.qnaServed = true;
        this.refreshQueue();
        break;
      case "question_pinned":
        this.qnaServed = true;
        h.addSystem("sys_question_pinned", {});
        this.refreshQueue();
        break;
      default:
        return false;
    }
    this.render();
    return true;
  }

  _patch(map, id, change) {
    const item = map.get(id);
    if (item) change(item);
  }

  // -- opening ----------------------------------------------------------------------------------

  _optionalCents(id) {
    const input = document.getElementById(id);
    return input.value.trim() ? this.h.centsOf(input) : undefined;
  }

  _optionalInt(id) {
    const input = document.getElementById(id);
    return input.value.trim() ? this.h.intOf(input) : undefined;
  }

  _text(id) {
    const input = document.getElementById(id);
    const text = input.value.trim();
    if (!text) throw this.h.localError("need_text_field", input);
    return text;
  }

  async _post(kind, body) {
    const gen = this.h.roomGen();
    const made = await api(`/api/rooms/${enc(this.h.room())}/${kind}`, { method: "POST", body, token: this.h.token() });
    if (gen !== this.h.roomGen()) return null;
    return made;
  }

  async openAuction() {
    const product = document.getElementById("auction-product-select");
    if (!product.value) throw new this.h.LocalError(t("need_product"), document.getElementById("product-title-input"));
    const body = {
      product_id: product.value,
      start_cents: this.h.centsOf(document.getElementById("auction-start-input")),
      increment_cents: this.h.centsOf(document.getElementById("auction-increment-input")),
      duration_s: this.h.intOf(document.getElementById("auction-duration-input")),
      snipe_s: this.h.intOf(document.getElementById("auction-snipe-input")),
      max_extension_s: this.h.intOf(document.getElementById("auction-extension-input")),
      hold_s: this.h.intOf(document.getElementById("auction-hold-input")),
    };
    const reserve = this._optionalCents("auction-reserve-input");
    if (reserve !== undefined) body.reserve_cents = reserve;
    const buyNow = this._optionalCents("auction-buy-now-input");
    if (buyNow !== undefined) body.buy_now_cents = buyNow;
    const auction = await this._post("auctions", body);
    if (!auction) return;
    this.auctions.set(auction.id, { ...auction, ...this.auctions.get(auction.id) });
    this.render();
    this.h.ok("auction_opened_ok", { title: (auction.product && auction.product.title) || auction.id });
  }

  async openDraw() {
    const coupon = document.getElementById("draw-prize-kind").value === "coupon";
    let prize;
    if (coupon) prize = { coupon_batch_id: this._text("draw-coupon-input") };
    else {
      const product = document.getElementById("draw-product-select");
      if (!product.value) throw new this.h.LocalError(t("need_product"), document.getElementById("product-title-input"));
      prize = { product_id: product.value };
    }
    const body = {
      prize,
      winners: this.h.intOf(document.getElementById("draw-winners-input")),
      duration_s: this.h.intOf(document.getElementById("draw-duration-input")),
      signed_in: document.getElementById("draw-signed-in-input").checked,
      present_at_close: document.getElementById("draw-present-input").checked,
    };
    const keyword = document.getElementById("draw-keyword-input").value.trim();
    if (keyword) body.keyword = keyword;
    const watch = this._optionalInt("draw-watch-input");
    if (watch !== undefined) body.min_watch_s = watch;
    const claim = this._optionalInt("draw-claim-input");
    if (claim !== undefined) body.claim_s = claim;
    const draw = await this._post("draws", body);
    if (!draw) return;
    this.draws.set(draw.id, { ...draw, ...this.draws.get(draw.id) });
    this.render();
    this.h.ok("draw_opened_ok");
  }

  async openPoll() {
    const question = this._text("poll-question-input");
    const input = document.getElementById("poll-options-input");
    const options = input.value.split("\n").map((line) => line.trim()).filter(Boolean);
    if (options.length < 2 || options.length > 6) throw this.h.localError("need_options", input);
    const body = {
      question,
      options,
      duration_s: this.h.intOf(document.getElementById("poll-duration-input")),
      allow_change: document.getElementById("poll-change-input").checked,
    };
    const poll = await this._post("polls", body);
    if (!poll) return;
    this.polls.set(poll.id, { ...poll, ...this.polls.get(poll.id) });
    this.render();
    this.h.ok("poll_opened_ok");
  }

  async close(kind, item) {
    const map = kind === "draws" ? this.draws : this.polls;
    const answer = await api(`/api/rooms/${enc(this.h.room())}/${kind}/${enc(item.id)}/close`, { method: "POST", token: this.h.token() });
    if (answer && answer.id) map.set(answer.id, { ...map.get(answer.id), ...normalise(answer) });
    this.render();
    this.h.ok("closed_ok");
  }

  // -- the live list ----------------------------------------------------------------------------

  _now() {
    const socket = this.h.socket();
    return socket ? socket.now() : Date.now();
  }

  /** Each tool is one row, made once and kept (newest first): its head and lines are refilled,
   * its buttons are not (a Close armed for confirmation stays armed through the updates). */
  render() {
    if (!this.list) return;
    const items = [
      ...[...this.auctions.values()].map((a) => ["auction", a]),
      ...[...this.draws.values()].map((d) => ["draw", d]),
      ...[...this.polls.values()].map((p) => ["poll", p]),
    ];
    for (const [kind, item] of items) {
      if (!item.row) {
        item.row = el("li", { class: `tool-row tool-${kind}`, "data-testid": `console-${kind}`, dataset: { id: item.id } });
        item.rowHead = el("div", { class: "tool-row-head" });
        item.rowBody = el("div", { class: "tool-row-body" });
        item.rowActions = el("div", { class: "tool-row-actions" });
        item.row.append(item.rowHead, item.rowBody, item.rowActions);
        item.opened = item.opened_at_ms || Date.now();
        const before = [...this.list.children].find((node) => (node.toolOpened || 0) < item.opened);
        item.row.toolOpened = item.opened;
        this.list.insertBefore(item.row, before || null);
      }
      this[`_${kind}Row`](item);
    }
    document.getElementById("tools-empty").hidden = items.length > 0;
    this.tick();
  }

  _row(kind, item, state, title, body, action = null) {
    item.row.dataset.state = state;
    item.rowHead.replaceChildren(
      el("span", { class: `badge kind-${kind}` }, t(`kind_${kind}`)),
      el("span", { class: `badge t-state-${state}${state === "open" ? " live" : ""}`, "data-testid": "tool-state" }, t(`t_state_${state}`)),
      el("span", { class: "tool-row-title" }, title),
      el("span", { class: "tool-clock num muted small", dataset: { endsAt: state === "open" ? item.ends_at_ms || item.closes_at_ms || "" : "" } }),
    );
    item.rowBody.replaceChildren(...body);
    if (action && !item.rowActions.firstChild) item.rowActions.append(action());
    if (!action) item.rowActions.replaceChildren();
  }

  _auctionRow(a) {
    const lines = [];
    if (a.amount_cents !== null && a.amount_cents !== undefined) {
      lines.push(t("bid_line", { amount: money(a.amount_cents), user: a.leader_id, n: a.bids || 0 }));
    } else lines.push(t("bid_none", { amount: money(a.start_cents) }));
    if (a.state === "offered" && a.offer) {
      lines.push(t("offer_line", { user: a.offer.user_id, amount: money(a.offer.amount_cents), time: this.h.timeOf(a.offer.pay_by_ms) }));
    }
    if (a.state === "sold" && a.sold) lines.push(t("sold_line", { user: a.sold.user_id, amount: money(a.sold.amount_cents), order: a.sold.order_id }));
    this._row("auction", a, a.state, (a.product && a.product.title) || a.id, [
      el("p", { class: "tool-row-line num", "data-testid": "auction-line" }, lines.join(" · ")),
    ]);
  }

  _drawRow(d) {
    const rules = d.rules || {};
    const lines = [t("entrants_line", { n: d.entrants || 0, w: d.winners })];
    if (rules.keyword) lines.push(t("keyword_line", { keyword: rules.keyword }));
    const body = [el("p", { class: "tool-row-line num", "data-testid": "draw-line" }, lines.join(" · "))];
    if (d.state === "closed") {
      const winners = d.winner_ids || [];
      body.push(
        el("p", { class: "tool-row-line", "data-testid": "draw-result" }, winners.length ? t("winners_line", { list: winners.join(", ") }) : t("no_winner")),
      );
      if (d.seed) body.push(el("p", { class: "tool-row-line hex muted small" }, t("seed_line", { seed: d.seed })));
      if (d.verified) body.push(el("p", { class: `tool-row-line verified ${d.verified.ok ? "ok" : "bad"}`, "data-testid": "console-verified", dataset: { ok: String(d.verified.ok) } }, d.verified.text));
    }
    const open = d.state === "open";
    const action = open ? () => this._closeButton("draws", d, "close-draw") : d.seed ? () => this._verifyButton(d) : null;
    if (!open && d.rowActions && d.rowActions.dataset.kind !== "verify") d.rowActions.replaceChildren();
    this._row("draw", d, open ? "open" : "closed", prizeTitle(d.prize, this.h.products()), body, action);
    if (!open && d.seed) d.rowActions.dataset.kind = "verify";
  }

  _pollRow(p) {
    const tallies = p.tallies || p.options.map(() => 0);
    const total = tallies.reduce((sum, n) => sum + n, 0);
    const bars = el(
      "ol",
      { class: "tally", "data-testid": "poll-tallies" },
      p.options.map((option, i) =>
        el(
          "li",
          { class: "tally-row" },
          el("span", { class: "tally-option" }, option),
          el("progress", { class: "tally-bar", max: String(Math.max(1, total)), value: String(tallies[i] || 0), "aria-hidden": "true" }),
          el("span", { class: "tally-n num", "data-testid": "poll-tally" }, String(tallies[i] || 0)),
        ),
      ),
    );
    const body = [bars, el("p", { class: "tool-row-line muted small num", "data-testid": "poll-votes" }, t("votes_line", { n: p.votes ?? total }))];
    const open = p.state === "open";
    this._row("poll", p, open ? "open" : "closed", p.question, body, open ? () => this._closeButton("polls", p, "close-poll") : null);
  }

  _verifyButton(d) {
    const button = el("button", { type: "button", class: "small", "data-testid": "verify-draw" });
    this.h.w(button, "verify_draw");
    button.addEventListener("click", () => this.h.act(button, () => this.verifyDraw(d.id)));
    return button;
  }

  /** Read the draw in full and recompute its commitment and winners, as `live draw verify` does. */
  async verifyDraw(id) {
    const full = await api(`/api/rooms/${enc(this.h.room())}/draws/${enc(id)}`, { token: this.h.token() });
    const commitment = (await sha256Hex(full.seed)) === full.commitment;
    const again = await drawWinners(full.seed, full.eligible || [], full.winners);
    const winners = JSON.stringify(again) === JSON.stringify(full.winner_ids || []);
    const ok = commitment && winners;
    const d = this.draws.get(id);
    if (!d) return;
    d.verified = { ok, text: t(ok ? "verified_ok" : "verified_bad", { n: (full.eligible || []).length, e: (full.entries || []).length }) };
    this.render();
  }

  _closeButton(kind, item, testid) {
    const button = el("button", { type: "button", class: "small danger", "data-testid": testid });
    this.h.w(button, "close_early");
    this.h.twoStep(button, "confirm_close", () => this.h.act(button, () => this.close(kind, item)));
    return button;
  }

  tick() {
    if (!this.list) return;
    for (const node of this.list.querySelectorAll(".tool-clock")) {
      const ends = Number(node.dataset.endsAt);
      const text = ends ? (ends > this._now() ? t("ends_in", { time: clock(ends - this._now()) }) : t("tool_ended")) : "";
      if (node.textContent !== text) node.textContent = text;
    }
  }

  // -- the Q&A queue -------------------------------------------------------------------------------

  /** GET the ranked queue; calls that come while one is under way make one more after it. */
  async refreshQueue() {
    if (!this.h.room() || !this.queue) return;
    if (this.queueBusy) {
      this.queueAgain = true;
      return;
    }
    this.queueBusy = true;
    const gen = this.h.roomGen();
    try {
      const answer = await api(`/api/rooms/${enc(this.h.room())}/questions`, { token: this.h.token() });
      if (gen === this.h.roomGen()) {
        this.qnaServed = true;
        this.questions = answer.questions || [];
        this.renderQueue();
      }
    } catch (error) {
      this.h.fail(error);
    } finally {
      this.queueBusy = false;
    }
    if (this.queueAgain) {
      this.queueAgain = false;
      this.refreshQueue();
    }
  }

  renderQueue() {
    if (!this.queue) return;
    document.getElementById("qna-panel").hidden = !this.qnaServed;
    const active = document.activeElement;
    const focusKey = active && this.queue.contains(active) ? `${active.closest("[data-id]")?.dataset.id}:${active.dataset.testid}` : null;
    this.queue.replaceChildren(...this.questions.map((q, i) => this._questionRow(q, i + 1)));
    if (focusKey) {
      for (const node of this.queue.querySelectorAll("button")) {
        if (`${node.closest("[data-id]")?.dataset.id}:${node.dataset.testid}` === focusKey) node.focus();
      }
    }
    document.getElementById("qna-empty").hidden = this.questions.length > 0;
  }

  _questionRow(q, rank) {
    const button = (testid, key, action, okKey) => {
      const node = el("button", { type: "button", class: `small${testid === "dismiss-question" ? " danger-ghost" : ""}`, "data-testid": testid });
      this.h.w(node, key);
      node.addEventListener("click", () =>
        this.h.act(node, async () => {
          await api(`/api/rooms/${enc(this.h.room())}/questions/${enc(q.id)}/${action}`, { method: "POST", token: this.h.token() });
          this.h.ok(okKey);
          await this.refreshQueue();
        }),
      );
      return node;
    };
    return el(
      "li",
      { class: `queue-question${q.pinned ? " pinned" : ""}`, "data-testid": "queue-question", dataset: { id: q.id, pinned: String(Boolean(q.pinned)) } },
      el("span", { class: "queue-rank num" }, String(rank)),
      el(
        "div",
        { class: "queue-body" },
        el("p", { class: "queue-text" }, q.text),
        el(
          "p",
          { class: "queue-meta muted small" },
          el("span", { class: "num", "data-testid": "queue-upvotes" }, t("upvotes_n", { n: q.upvotes || 0 })),
          ` · ${q.user_id}`,
          q.pinned ? el("span", { class: "badge warn" }, t("pinned_badge")) : null,
        ),
        el(
          "div",
          { class: "queue-actions" },
          button("answer-question", "answer", "answer", "answered_ok"),
          q.pinned ? button("unpin-question", "unpin_q", "unpin", "unpinned_q_ok") : button("pin-question", "pin_q", "pin", "pinned_q_ok"),
          button("dismiss-question", "dismiss_q", "dismiss", "dismissed_ok"),
        ),
      ),
    );
  }
}

/** A record answered from the store only ({id, spec, state, result}) looks like the live object. */
function normalise(item) {
  if (!item.spec) return item;
  return { ...item.spec, ...item.result, id: item.id, state: item.state };
}

function prizeTitle(prize, products) {
  if (!prize) return "";
  if (prize.title) return prize.title;
  if (prize.product_id) {
    const product = products.find((p) => p.id === prize.product_id);
    return product ? product.title : prize.product_id;
  }
  return prize.coupon_batch_id ? `${t("prize_coupon")} ${prize.coupon_batch_id}` : "";
}
