// The viewer page's panel of the room's interaction tools: live auctions, lucky draws (福袋),
// polls and Q&A. viewer.js owns the socket and the page; this module owns the cards.
//
// Fed by the welcome's room.auctions / room.draws / room.polls / room.questions and the live
// events (docs/protocol.md). Everything strangers wrote (questions, product titles, user ids)
// goes in as text through el(), never as HTML. A tool the server does not serve has no key in
// the welcome and shows nothing.

import { api, clock, describeError, el, extend, money, t } from "/static/common.js";
import { drawWinners, sha256Hex, utf8Sorted } from "/static/draw-verify.js";

extend({
  en: {
    tools_heading: "Join in",
    tag_auction: "Auction",
    tag_draw: "Lucky draw",
    tag_poll: "Poll",
    state_open: "Open",
    state_offered: "Won",
    state_sold: "Sold",
    state_unsold: "Not sold",
    state_closed: "Closed",
    state_ended: "Ended",
    current_bid: "Current bid",
    starting_bid: "Starting bid",
    leader_you: "You lead",
    leader_is: "Leader: {user}",
    no_bids: "No bids yet",
    bids_count: "{n} bids",
    ends_in: "Ends in {time}",
    ending: "Closing…",
    extended: "Extended! A late bid moved the end.",
    bid_amount: "Bid {amount}",
    bidding: "Bidding…",
    increment_note: "Step {amount}",
    buy_now_note: "Buy now at {amount}",
    outbid: "You were outbid: {amount} leads (your bid {yours}).",
    you_won_pay: "You won at {amount}! Pay within {time}.",
    offer_lapsed: "Time to pay is up…",
    pay_auction: "Pay {amount}",
    paying: "Paying…",
    offered_to: "Offered to {user} at {amount}",
    sold_to: "Sold to {user} for {amount}",
    sold_to_you: "Paid {amount}: the order is yours",
    unsold: "Not sold",
    order_number: "Order {id}",
    simulated: "Simulated payment: no real money moves.",
    prize: "Prize",
    prize_product: "{title}",
    prize_coupon: "Coupon",
    winners_n: "{n} winners",
    keyword_hint: "Comment “{keyword}” to enter",
    send_keyword: "Comment “{keyword}”",
    enter_draw: "Enter the draw",
    entering: "Entering…",
    entered: "You're in! Good luck",
    rule_signed_in: "Signed-in viewers only",
    rule_present: "Stay until the draw",
    rule_watch: "Watch at least {n} s",
    entrants: "{n} entered",
    draws_in: "Draw in {time}",
    drawing: "Drawing…",
    winners_are: "Winners",
    no_winners: "Nobody entered.",
    winners_announced: "The winners were announced.",
    you_won_draw: "You won! Claim it within {time}.",
    claim_prize: "Claim prize",
    claiming: "Claiming…",
    claimed: "Claimed: order {id}",
    claim_over: "The claim window is over.",
    not_won: "Not this time. Thanks for taking part!",
    excluded_n: "{n} excluded ({rules})",
    verify: "Verify the draw",
    commitment: "Commitment (published at open)",
    seed: "Seed (revealed at close)",
    eligible_entries: "Eligible entries",
    eligible_of: "{n} of {entrants} entered",
    recomputed_winners: "Winners recomputed in this browser",
    nobody: "nobody",
    verifying: "Checking…",
    check_commitment_ok: "√ SHA-256(seed) equals the commitment published at the open",
    check_commitment_bad: "× SHA-256(seed) does NOT equal the commitment published at the open",
    check_seed_bad: "× The seed read is not the one revealed at the close",
    check_list_ok: "√ The {n} eligible entries and the {k} excluded add up to the {entrants} who entered",
    check_list_bad: "× The eligible list is not sorted, repeats someone, or does not add up to the entrants",
    check_winners_ok: "√ Winners recomputed from the seed and the {n} eligible entries match the announced ones",
    check_winners_bad: "× Winners recomputed from the seed do NOT match the announced ones",
    check_unread: "× The entry list could not be read: {reason}",
    check_unavailable: "This browser cannot compute SHA-256 here.",
    verdict_ok: "√ Verified: the winners follow from the seed",
    verdict_bad: "× Not verified",
    verify_cli: "Check it again yourself: {command}",
    votes_n: "{n} votes",
    poll_ends: "Closes in {time}",
    final_result: "Final result",
    your_vote: "your vote",
    can_change: "You may change your vote until it closes.",
    vote_for: "Vote for {option}",
    qna: "Questions for the host",
    ask_label: "Ask the host a question",
    ask_ph: "Your question…",
    ask: "Ask",
    asking: "Sending…",
    asked_ok: "Question sent.",
    no_questions: "No questions yet: ask the first one.",
    pinned_question: "Pinned by the host",
    answered: "Answered",
    upvote: "Upvote",
    upvote_aria: "Upvote: {text}",
    upvotes_aria: "{n} upvotes",
    your_question: "yours",
    question_banned_words: "That question contains a word that is not allowed.",
  },
  zh: {
    tools_heading: "互动",
    tag_auction: "拍卖",
    tag_draw: "福袋",
    tag_poll: "投票",
    state_open: "进行中",
    state_offered: "已成交待付",
    state_sold: "已成交",
    state_unsold: "流拍",
    state_closed: "已结束",
    state_ended: "已结束",
    current_bid: "当前出价",
    starting_bid: "起拍价",
    leader_you: "你领先",
    leader_is: "领先：{user}",
    no_bids: "暂无出价",
    bids_count: "{n} 次出价",
    ends_in: "{time} 后结束",
    ending: "即将结束…",
    extended: "延时了！最后时刻的出价推迟了结束时间。",
    bid_amount: "出价 {amount}",
    bidding: "出价中…",
    increment_note: "加价幅度 {amount}",
    buy_now_note: "一口价 {amount}",
    outbid: "你的出价被超过：当前 {amount}（你出 {yours}）。",
    you_won_pay: "恭喜拍得，成交价 {amount}！请在 {time} 内付款。",
    offer_lapsed: "付款时间到了…",
    pay_auction: "支付 {amount}",
    paying: "支付中…",
    offered_to: "由 {user} 以 {amount} 拍得",
    sold_to: "{user} 以 {amount} 成交",
    sold_to_you: "已支付 {amount}，订单已生成",
    unsold: "流拍",
    order_number: "订单 {id}",
    simulated: "模拟支付：不会产生真实扣款。",
    prize: "奖品",
    prize_product: "{title}",
    prize_coupon: "优惠券",
    winners_n: "{n} 个名额",
    keyword_hint: "评论“{keyword}”即可参与",
    send_keyword: "一键评论“{keyword}”",
    enter_draw: "参与抽奖",
    entering: "参与中…",
    entered: "已参与，祝你好运！",
    rule_signed_in: "仅限登录用户",
    rule_present: "开奖时需在直播间",
    rule_watch: "需观看至少 {n} 秒",
    entrants: "{n} 人已参与",
    draws_in: "{time} 后开奖",
    drawing: "开奖中…",
    winners_are: "中奖名单",
    no_winners: "无人参与。",
    winners_announced: "中奖名单已公布。",
    you_won_draw: "恭喜中奖！请在 {time} 内领取。",
    claim_prize: "领取奖品",
    claiming: "领取中…",
    claimed: "已领取：订单 {id}",
    claim_over: "领奖时间已过。",
    not_won: "很遗憾没有中奖，感谢参与！",
    excluded_n: "{n} 人被排除（{rules}）",
    verify: "验证开奖",
    commitment: "承诺值（开始时公布）",
    seed: "种子（开奖时公布）",
    eligible_entries: "有效参与者",
    eligible_of: "{n} 人（共 {entrants} 人参与）",
    recomputed_winners: "本浏览器重新计算的中奖名单",
    nobody: "无",
    verifying: "验证中…",
    check_commitment_ok: "√ SHA-256(种子) 与开始时公布的承诺值一致",
    check_commitment_bad: "× SHA-256(种子) 与开始时公布的承诺值不一致",
    check_seed_bad: "× 读到的种子与开奖时公布的不一致",
    check_list_ok: "√ {n} 个有效参与者加上 {k} 个被排除者，等于 {entrants} 个参与者",
    check_list_bad: "× 有效参与名单未排序、有重复，或与参与人数对不上",
    check_winners_ok: "√ 用种子和 {n} 个有效参与者重新计算的中奖名单与公布的一致",
    check_winners_bad: "× 用种子重新计算的中奖名单与公布的不一致",
    check_unread: "× 无法读取参与名单：{reason}",
    check_unavailable: "此浏览器无法在这里计算 SHA-256。",
    verdict_ok: "√ 验证通过：中奖名单由种子算出",
    verdict_bad: "× 验证未通过",
    verify_cli: "也可以自己再验证一次：{command}",
    votes_n: "{n} 票",
    poll_ends: "{time} 后截止",
    final_result: "最终结果",
    your_vote: "你的选择",
    can_change: "截止前可以改票。",
    vote_for: "投给 {option}",
    qna: "向主播提问",
    ask_label: "向主播提一个问题",
    ask_ph: "你的问题…",
    ask: "提问",
    asking: "发送中…",
    asked_ok: "问题已发送。",
    no_questions: "还没有问题，来提第一个吧。",
    pinned_question: "主播置顶",
    answered: "已回答",
    upvote: "点赞",
    upvote_aria: "点赞：{text}",
    upvotes_aria: "{n} 个赞",
    your_question: "我的",
    question_banned_words: "问题包含不允许的词语。",
  },
});

const QUESTION_MAX = 200;
const QUESTIONS_SHOWN = 10;
const ANSWERED_SHOWN = 3;

// -- the panel ---------------------------------------------------------------------------------

/**
 * ctx: socket() (the RoomClient), me() (the welcome's user), banned(), token(), room,
 * showError(error), comment(text) (post a comment as the viewer, resolves once acked).
 */
export class RoomTools {
  constructor(ctx) {
    this.ctx = ctx;
    this.auctions = new Map();
    this.draws = new Map();
    this.polls = new Map();
    this.questions = []; // the top questions, ranked as the server sent them
    this.pinned = null; // the pinned question
    this.answered = []; // the last few answered while this page watched
    this.qnaServed = false;
    this.products = null; // id -> product, fetched once for draw prizes
    this.mine = this._emptyMine();
    this.mineUser = null;
    this.cards = document.getElementById("tool-cards");
    this.qna = document.getElementById("qna");
    this.asking = false;
    this._buildQna();
  }

  // -- what this viewer did (kept in the tab across a reload, per room and user) ----------------

  _emptyMine() {
    return { votes: {}, upvoted: [], entered: [], claims: {}, paid: {}, won: {} };
  }

  _key(userId) {
    return `live.tools.${this.ctx.room}.${userId}`;
  }

  _restoreMine() {
    const me = this.ctx.me();
    if (!me || me.id === this.mineUser) return;
    this.mineUser = me.id;
    this.mine = this._emptyMine();
    if (me.id.startsWith("anon_")) return;
    try {
      const saved = JSON.parse(sessionStorage.getItem(this._key(me.id)) || "null");
      if (saved && typeof saved === "object") Object.assign(this.mine, saved);
    } catch (error) {
      /* nothing remembered */
    }
  }

  _saveMine() {
    const me = this.ctx.me();
    if (!me || me.id.startsWith("anon_")) return;
    try {
      sessionStorage.setItem(this._key(me.id), JSON.stringify(this.mine));
    } catch (error) {
      /* the page remembers it until a reload */
    }
  }

  /** Another person signed in (or out): nothing of the last one's stays. */
  reset() {
    this.mine = this._emptyMine();
    this.mineUser = null;
    for (const a of this.auctions.values()) Object.assign(a, { notice: null, busy: false });
    this.renderAll();
  }

  _myId() {
    const me = this.ctx.me();
    return me ? me.id : null;
  }

  _now() {
    const socket = this.ctx.socket();
    return socket ? socket.now() : Date.now();
  }

  /** A command with a rid; a lost reply is asked again with the same rid (bids are idempotent
   * per rid, the others answer the same again). */
  async _request(type, fields) {
    const rid = `${type.slice(0, 2)}${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
    const socket = this.ctx.socket();
    try {
      return await socket.request(type, { ...fields, rid }, { resend: true });
    } catch (error) {
      if (error.code !== "timeout") throw error;
      return socket.request(type, { ...fields, rid }, { resend: true });
    }
  }

  // -- feeding ----------------------------------------------------------------------------------

  welcome(w) {
    this._restoreMine();
    const room = w.room || {};
    this._sync(this.auctions, room.auctions, (a) => this._upsertAuction(a), (a) => {
      if (a.state === "open" || a.state === "offered") a.state = "ended";
    });
    this._sync(this.draws, room.draws, (d) => this._upsertDraw(d), (d) => {
      if (d.state === "open") this._refreshDraw(d.id);
    });
    this._sync(this.polls, room.polls, (p) => this._upsertPoll(p), (p) => {
      if (p.state === "open") p.state = "closed";
    });
    this.qnaServed = Array.isArray(room.questions);
    if (this.qnaServed) this._setQuestions(room.questions, true);
    this.renderAll();
  }

  _sync(map, list, upsert, gone) {
    if (!Array.isArray(list)) return;
    const current = new Set(list.map((item) => item.id));
    for (const item of list) upsert(item);
    for (const item of map.values()) if (!current.has(item.id)) gone(item);
  }

  /** A message from the server: true when it was one of ours. */
  handle(m) {
    switch (m.type) {
      case "auction_opened":
        this._upsertAuction(m.auction, true);
        break;
      case "auction_bid":
        this._onBid(m);
        break;
      case "auction_ended":
        this._patchAuction(m.auction_id, (a) => {
          a.state = m.state;
          if (m.state === "unsold") a.offer = null;
          if (m.winner_id) a.leader_id = m.winner_id;
          if (typeof m.amount_cents === "number") a.amount_cents = m.amount_cents;
        });
        break;
      case "auction_offer":
        this._patchAuction(m.auction_id, (a) => {
          a.state = "offered";
          a.offer = { user_id: m.user_id, amount_cents: m.amount_cents, pay_by_ms: m.pay_by_ms };
        });
        break;
      case "auction_won":
        this._patchAuction(m.auction_id, (a) => {
          a.state = "offered";
          a.offer = { user_id: this._myId(), amount_cents: m.amount_cents, pay_by_ms: m.pay_by_ms };
          a.notice = null;
        });
        break;
      case "auction_sold":
        this._patchAuction(m.auction_id, (a) => {
          a.state = "sold";
          a.sold = { user_id: m.user_id, amount_cents: m.amount_cents, order_id: m.order_id };
          a.offer = null;
        });
        break;
      case "auction_outbid":
        this._patchAuction(m.auction_id, (a) => {
          a.notice = { kind: "outbid", amount: m.amount_cents, yours: m.your_bid_cents };
          if (typeof m.amount_cents === "number" && (a.amount_cents ?? 0) < m.amount_cents) {
            a.amount_cents = m.amount_cents;
            a.min_bid_cents = Math.max(a.min_bid_cents || 0, m.amount_cents + a.increment_cents);
          }
        });
        break;
      case "draw_opened":
        this._upsertDraw(m.draw, true);
        break;
      case "draw_entries":
        this._patchDraw(m.draw_id, (d) => {
          d.entrants = Math.max(d.entrants || 0, m.entrants);
        });
        break;
      case "draw_closed":
        this._patchDraw(m.draw_id, (d) => {
          Object.assign(d, {
            state: "closed",
            seed: m.seed,
            commitment: m.commitment || d.commitment,
            winner_ids: m.winner_ids || [],
            entrants: m.entrants ?? d.entrants,
            eligible_count: m.eligible,
            excluded_counts: m.excluded || {},
            check: null,
            proof: null,
          });
          if (m.claim_by_ms) d.claim_by_ms = m.claim_by_ms;
          if ((m.winner_ids || []).includes(this._myId())) this._won(d.id);
        });
        break;
      case "draw_won":
        this._patchDraw(m.draw_id, (d) => {
          d.won = { prize: m.prize, claim_by_ms: m.claim_by_ms };
          if (m.claim_by_ms) d.claim_by_ms = m.claim_by_ms;
          this._won(d.id);
        });
        break;
      case "poll_opened":
        this._upsertPoll(m.poll, true);
        break;
      case "poll_tally":
      case "poll_closed":
        this._patchPoll(m.poll_id, (p) => {
          // A late gauge never undoes the final result.
          if (p.state === "closed" && m.type === "poll_tally") return;
          if (Array.isArray(m.tallies)) p.tallies = m.tallies;
          if (typeof m.votes === "number") p.votes = m.votes;
          if (m.type === "poll_closed") p.state = "closed";
        });
        break;
      case "qna_top":
        this.qnaServed = true;
        this._setQuestions(m.questions || [], false);
        this.renderQna();
        break;
      case "question_pinned":
      case "question_unpinned":
      case "question_answered":
        this._onQuestionEvent(m);
        this.renderQna();
        break;
      default:
        return false;
    }
    return true;
  }

  /** One of this viewer's comments was accepted: a keyword draw's entry. */
  commented(text) {
    const folded = text.toLowerCase();
    let changed = false;
    for (const d of this.draws.values()) {
      const keyword = d.rules && d.rules.keyword;
      if (d.state !== "open" || !keyword || this.mine.entered.includes(d.id)) continue;
      if (this._signedInOnly(d) && this._anonymous()) continue;
      if (folded.includes(keyword.toLowerCase())) {
        this.mine.entered.push(d.id);
        changed = true;
        this.renderDraw(d);
      }
    }
    if (changed) this._saveMine();
  }

  _anonymous() {
    const id = this._myId();
    return !id || id.startsWith("anon_");
  }

  // -- rendering helpers --------------------------------------------------------------------------

  renderAll() {
    for (const a of this.auctions.values()) this.renderAuction(a);
    for (const d of this.draws.values()) this.renderDraw(d);
    for (const p of this.polls.values()) this.renderPoll(p);
    this.renderQna();
    this._heading();
  }

  _heading() {
    const heading = document.getElementById("tools-heading");
    if (heading) heading.textContent = t("tools_heading");
    const section = document.getElementById("tools");
    if (section) section.hidden = !this.cards.children.length && !this.qnaServed;
  }

  /** A card's article (made once, newest first), refilled with replaceChildren; the focused
   * button comes back focused after the refill. */
  _card(item, kind) {
    if (!item.dom) {
      item.dom = el("article", { class: `tool-card tool-${kind}`, "data-testid": `${kind}-card`, dataset: { id: item.id } });
      if (item.fresh) item.dom.classList.add("fresh");
      this.cards.prepend(item.dom);
      this._heading();
    }
    return item.dom;
  }

  _fill(card, children) {
    const active = document.activeElement;
    let focusKey = null;
    if (active && card.contains(active) && active.dataset.testid) {
      focusKey = `[data-testid="${active.dataset.testid}"]${active.dataset.amount ? `[data-amount="${active.dataset.amount}"]` : ""}${active.dataset.option !== undefined ? `[data-option="${active.dataset.option}"]` : ""}`;
    }
    const open = card.querySelector("details[open]");
    card.replaceChildren(...children.flat().filter(Boolean));
    if (open) {
      const again = card.querySelector("details");
      if (again) again.open = true;
    }
    if (focusKey) {
      const node = card.querySelector(focusKey);
      if (node && !node.disabled) node.focus({ preventScroll: true });
    }
  }

  _head(kind, state, title) {
    return el(
      "div",
      { class: "tool-head" },
      el("span", { class: `tag tag-tool tag-${kind}` }, t(`tag_${kind}`)),
      el("span", { class: `tag tag-state state-${state}`, "data-testid": `${kind}-state`, dataset: { state } }, t(`state_${state}`)),
      title ? el("h3", { class: "tool-title" }, title) : null,
    );
  }

  _who(userId) {
    if (!userId) return "";
    return userId === this._myId() ? `${userId} (${t("your_question")})` : userId;
  }

  // -- auctions --------------------------------------------------------------------------------

  _upsertAuction(data, fresh = false) {
    let a = this.auctions.get(data.id);
    if (!a) {
      a = { ...data, fresh, notice: null, busy: false, extendedAt: 0, dom: null };
      this.auctions.set(a.id, a);
    } else {
      // Keep the newest bid state (two processes' events may cross: the higher bid_seq wins).
      const older = (data.bid_seq ?? 0) < (a.bid_seq ?? 0);
      const keep = older ? { leader_id: a.leader_id, amount_cents: a.amount_cents, bid_seq: a.bid_seq, ends_at_ms: a.ends_at_ms, bids: a.bids, min_bid_cents: a.min_bid_cents } : {};
      Object.assign(a, data, keep);
    }
    if (this.mine.paid[a.id] && a.state !== "sold") a.state = "sold";
    this.renderAuction(a);
  }

  _patchAuction(id, change) {
    const a = this.auctions.get(id);
    if (!a) return;
    change(a);
    this.renderAuction(a);
  }

  _onBid(m) {
    this._patchAuction(m.auction_id, (a) => {
      if ((m.bid_seq ?? 0) < (a.bid_seq ?? 0)) return;
      const later = m.ends_at_ms > a.ends_at_ms;
      Object.assign(a, {
        leader_id: m.leader_id,
        amount_cents: m.amount_cents,
        ends_at_ms: m.ends_at_ms,
        bids: m.bids,
        bid_seq: m.bid_seq,
        min_bid_cents: m.min_bid_cents,
      });
      if (m.extended || later) a.extendedAt = Date.now();
      if (m.leader_id === this._myId()) a.notice = null;
    });
  }

  _bidAmounts(a) {
    const min = a.min_bid_cents || a.start_cents;
    const step = a.increment_cents;
    const amounts = [min, min + step, min + 5 * step];
    if (a.buy_now_cents) return amounts.filter((x) => x < a.buy_now_cents).concat([a.buy_now_cents]).slice(0, 3);
    return amounts;
  }

  renderAuction(a) {
    const card = this._card(a, "auction");
    const me = this._myId();
    card.dataset.state = a.state;
    const leading = a.leader_id && a.leader_id === me;
    const amount = a.amount_cents;
    const price = el(
      "div",
      { class: "auction-price" },
      el("span", { class: "auction-label" }, amount === null || amount === undefined ? t("starting_bid") : t("current_bid")),
      el("span", { class: "price big num", "data-testid": "auction-amount" }, money(amount ?? a.start_cents)),
    );
    const leader = el(
      "p",
      { class: `auction-leader${leading ? " me" : ""}`, "data-testid": "auction-leader", dataset: { leader: a.leader_id || "" } },
      a.leader_id ? (leading ? t("leader_you") : t("leader_is", { user: a.leader_id })) : t("no_bids"),
      a.bids ? ` · ${t("bids_count", { n: a.bids })}` : "",
    );
    a.timer = el("p", { class: "tool-timer num", "data-testid": "auction-countdown", "aria-live": "off", dataset: { endsAt: a.ends_at_ms } });
    a.extendedNote = el("p", { class: "extended-note", role: "status" });
    const parts = [this._head("auction", a.state, a.product && a.product.title), price, leader];
    if (a.state === "open") {
      parts.push(a.timer, a.extendedNote);
      const host = this.ctx.me() && this.ctx.me().role === "host";
      const buttons = this._bidAmounts(a).map((cents) =>
        el(
          "button",
          {
            type: "button",
            class: "bid-btn",
            "data-testid": "bid",
            dataset: { amount: cents },
            disabled: Boolean(a.busy) || this.ctx.banned() || host,
            onclick: () => this.bid(a, cents),
          },
          a.busy === cents ? t("bidding") : t("bid_amount", { amount: money(cents) }),
        ),
      );
      parts.push(el("div", { class: "bid-row" }, buttons));
      const notes = [t("increment_note", { amount: money(a.increment_cents) })];
      if (a.buy_now_cents) notes.push(t("buy_now_note", { amount: money(a.buy_now_cents) }));
      parts.push(el("p", { class: "tool-note" }, notes.join(" · ")));
    }
    if (a.notice && a.notice.kind === "outbid" && a.state === "open" && !leading) {
      parts.push(
        el("p", { class: "tool-alert outbid", "data-testid": "auction-outbid", role: "status" }, t("outbid", { amount: money(a.notice.amount), yours: money(a.notice.yours) })),
      );
    }
    const paid = this.mine.paid[a.id];
    if (a.state === "offered" && a.offer) {
      if (a.offer.user_id === me && !paid) {
        a.payLeft = el("p", { class: "won-text", "data-testid": "auction-won", "aria-live": "off" });
        a.payButton = el(
          "button",
          { type: "button", class: "primary pay", "data-testid": "pay-auction", disabled: Boolean(a.busy), onclick: () => this.payAuction(a) },
          a.busy === "pay" ? t("paying") : t("pay_auction", { amount: money(a.offer.amount_cents) }),
        );
        parts.push(el("div", { class: "won-box" }, a.payLeft, a.payButton, el("p", { class: "muted small" }, t("simulated"))));
      } else if (!paid) {
        parts.push(el("p", { class: "tool-result" }, t("offered_to", { user: a.offer.user_id, amount: money(a.offer.amount_cents) })));
      }
    }
    if (paid) {
      parts.push(
        el(
          "div",
          { class: "order-status status-confirmed", "data-testid": "auction-paid", dataset: { orderId: paid.order_id || "" } },
          el("span", { class: "status-icon", "aria-hidden": "true" }, "✓"),
          el("span", { class: "status-text" }, t("sold_to_you", { amount: money(paid.amount_cents) })),
          el("small", { class: "order-id" }, t("order_number", { id: paid.order_id })),
        ),
      );
    } else if (a.state === "sold" && a.sold) {
      parts.push(el("p", { class: "tool-result", "data-testid": "auction-result" }, t("sold_to", { user: a.sold.user_id, amount: money(a.sold.amount_cents) })));
    } else if (a.state === "unsold") {
      parts.push(el("p", { class: "tool-result", "data-testid": "auction-result" }, t("unsold")));
    }
    this._fill(card, parts);
    this.tickAuction(a);
  }

  tickAuction(a) {
    if (a.state === "open" && a.timer) {
      const left = a.ends_at_ms - this._now();
      const text = left > 0 ? t("ends_in", { time: clock(left) }) : t("ending");
      if (a.timer.textContent !== text) a.timer.textContent = text;
      a.timer.dataset.endsAt = a.ends_at_ms;
      a.timer.classList.toggle("urgent", left < 10000);
      const flash = Date.now() - a.extendedAt < 4000;
      a.timer.classList.toggle("extended", flash);
      const note = flash ? t("extended") : "";
      if (a.extendedNote.textContent !== note) a.extendedNote.textContent = note;
    }
    if (a.state === "offered" && a.payLeft && a.offer) {
      const left = a.offer.pay_by_ms - this._now();
      const text = left > 0 ? t("you_won_pay", { amount: money(a.offer.amount_cents), time: clock(left) }) : t("offer_lapsed");
      if (a.payLeft.textContent !== text) a.payLeft.textContent = text;
      if (a.payButton) a.payButton.disabled = left <= 0 || Boolean(a.busy);
    }
  }

  async bid(a, cents) {
    if (a.busy) return;
    a.busy = cents;
    this.renderAuction(a);
    try {
      const ack = await this._request("bid", { auction_id: a.id, amount_cents: cents });
      if ((ack.bid_seq ?? 0) >= (a.bid_seq ?? 0)) {
        const later = ack.ends_at_ms > a.ends_at_ms;
        Object.assign(a, {
          leader_id: this._myId(),
          amount_cents: ack.amount_cents,
          bid_seq: ack.bid_seq,
          ends_at_ms: ack.ends_at_ms,
          min_bid_cents: ack.amount_cents + a.increment_cents,
          bids: Math.max(a.bids || 0, ack.bid_seq || 0),
        });
        if (ack.extended || later) a.extendedAt = Date.now();
      }
      a.notice = null;
    } catch (error) {
      const details = error.data || {};
      if (error.code === "bid_too_low" && typeof details.min_bid_cents === "number") a.min_bid_cents = details.min_bid_cents;
      if (error.code === "auction_ended" && a.state === "open") a.ends_at_ms = Math.min(a.ends_at_ms, this._now());
      this.ctx.showError(error);
    } finally {
      a.busy = false;
    }
    this.renderAuction(a);
  }

  async payAuction(a) {
    if (a.busy) return;
    a.busy = "pay";
    this.renderAuction(a);
    try {
      const ack = await this._request("pay_auction", { auction_id: a.id });
      const order = ack.order || {};
      this.mine.paid[a.id] = { order_id: order.order_id, amount_cents: order.amount_cents ?? a.offer.amount_cents };
      this._saveMine();
      a.state = "sold";
    } catch (error) {
      if (error.code === "offer_expired") a.offer = null;
      this.ctx.showError(error);
    } finally {
      a.busy = false;
    }
    this.renderAuction(a);
  }

  // -- lucky draws -------------------------------------------------------------------------------

  _upsertDraw(data, fresh = false) {
    let d = this.draws.get(data.id);
    if (!d) {
      d = { ...data, fresh, busy: false, dom: null, check: null };
      this.draws.set(d.id, d);
    } else {
      const entrants = Math.max(d.entrants || 0, data.entrants || 0);
      Object.assign(d, data, { entrants });
    }
    if (d.state === "closed" && Array.isArray(d.eligible)) d.eligible_count = d.eligible.length;
    this._needProducts(d);
    this.renderDraw(d);
  }

  _patchDraw(id, change) {
    const d = this.draws.get(id);
    if (!d) return;
    change(d);
    this.renderDraw(d);
  }

  _verificationPath(id) {
    return `/api/rooms/${encodeURIComponent(this.ctx.room)}/draws/${encodeURIComponent(id)}/verification`;
  }

  /** A draw we showed open is not in the welcome any more: it closed while we were away. Its
   * verification read (any token of the room) has the seed and the winners. */
  async _refreshDraw(id) {
    try {
      const proof = await api(this._verificationPath(id), { token: this.ctx.token() });
      this._patchDraw(id, (d) => this._takeProof(d, proof));
    } catch (error) {
      this._patchDraw(id, (d) => {
        d.state = "closed";
      });
    }
  }

  /** What the verification read says that the card did not know (a draw closed while away). */
  _takeProof(d, proof) {
    d.proof = proof;
    d.state = "closed";
    if (!d.seed) d.seed = proof.seed;
    if (!d.commitment) d.commitment = proof.commitment;
    if (!Array.isArray(d.winner_ids)) d.winner_ids = proof.winner_ids;
    if (typeof d.eligible_count !== "number") d.eligible_count = proof.eligible.length;
    if (!d.excluded_counts) d.excluded_counts = proof.excluded_counts;
    d.entrants = Math.max(d.entrants || 0, proof.entrants || 0);
  }

  async _needProducts(d) {
    const prize = d.prize || {};
    if (!prize.product_id || prize.title || this.products) return;
    this.products = new Map();
    try {
      const answer = await api(`/api/rooms/${encodeURIComponent(this.ctx.room)}/products`, { token: this.ctx.token() });
      for (const product of answer.products || []) this.products.set(product.id, product);
    } catch (error) {
      return; // the prize is shown by its id
    }
    for (const draw of this.draws.values()) this.renderDraw(draw);
  }

  _prizeText(prize) {
    if (!prize) return "";
    if (prize.title) return prize.title;
    if (prize.product && prize.product.title) return prize.product.title;
    if (prize.product_id) {
      const product = this.products && this.products.get(prize.product_id);
      return product ? product.title : prize.product_id;
    }
    if (prize.coupon_batch_id) {
      return typeof prize.discount_cents === "number" ? `${t("prize_coupon")} −${money(prize.discount_cents)}` : t("prize_coupon");
    }
    return "";
  }

  renderDraw(d) {
    const card = this._card(d, "draw");
    const me = this._myId();
    const rules = d.rules || {};
    card.dataset.state = d.state;
    const parts = [this._head("draw", d.state === "open" ? "open" : "closed", this._prizeText(d.prize))];
    parts.push(
      el(
        "p",
        { class: "draw-meta" },
        el("span", { class: "draw-winners" }, t("winners_n", { n: d.winners })),
        " · ",
        el("span", { class: "num", "data-testid": "draw-entrants", dataset: { count: d.entrants || 0 } }, t("entrants", { n: d.entrants || 0 })),
      ),
    );
    const ruleNotes = [];
    if (rules.signed_in) ruleNotes.push(t("rule_signed_in"));
    if (rules.present_at_close) ruleNotes.push(t("rule_present"));
    if (rules.min_watch_s) ruleNotes.push(t("rule_watch", { n: rules.min_watch_s }));
    if (d.state === "open") {
      d.timer = el("p", { class: "tool-timer num", "data-testid": "draw-countdown", "aria-live": "off" });
      parts.push(d.timer);
      const entered = this.mine.entered.includes(d.id);
      if (rules.keyword) parts.push(el("p", { class: "keyword-hint", "data-testid": "draw-keyword" }, t("keyword_hint", { keyword: rules.keyword })));
      if (entered) {
        parts.push(el("p", { class: "entered", "data-testid": "draw-entered", role: "status" }, `✓ ${t("entered")}`));
      } else if (rules.keyword) {
        parts.push(
          el(
            "button",
            { type: "button", class: "primary draw-btn", "data-testid": "draw-comment", disabled: Boolean(d.busy) || this.ctx.banned(), onclick: () => this.commentKeyword(d) },
            d.busy ? t("entering") : t("send_keyword", { keyword: rules.keyword }),
          ),
        );
      } else {
        parts.push(
          el(
            "button",
            { type: "button", class: "primary draw-btn", "data-testid": "enter-draw", disabled: Boolean(d.busy) || this.ctx.banned(), onclick: () => this.enterDraw(d) },
            d.busy ? t("entering") : t("enter_draw"),
          ),
        );
      }
      if (ruleNotes.length) parts.push(el("p", { class: "tool-note" }, ruleNotes.join(" · ")));
    } else {
      parts.push(...this._drawResult(d, me));
    }
    this._fill(card, parts);
    this.tickDraw(d);
  }

  _drawResult(d, me) {
    const parts = [];
    const known = Array.isArray(d.winner_ids);
    const winners = known ? d.winner_ids : this.mine.won[d.id] ? [me] : [];
    if (!d.seed && !winners.length) return [el("p", { class: "tool-result" }, t("drawing"))];
    parts.push(el("h4", { class: "result-title" }, t("winners_are")));
    if (winners.length) {
      parts.push(
        el(
          "ol",
          { class: "winners", "data-testid": "draw-winners" },
          winners.map((id) => el("li", { class: id === me ? "winner me" : "winner", "data-testid": "draw-winner" }, id === me ? `★ ${id}` : id)),
        ),
      );
    } else {
      parts.push(el("p", { class: "tool-result" }, known ? t("no_winners") : t("winners_announced")));
    }
    const excluded = Object.entries(d.excluded_counts || {}).filter(([, n]) => n > 0);
    if (excluded.length) {
      const n = excluded.reduce((sum, [, k]) => sum + k, 0);
      parts.push(el("p", { class: "tool-note" }, t("excluded_n", { n, rules: excluded.map(([rule, k]) => `${rule} ${k}`).join(", ") })));
    }
    const claim = this.mine.claims[d.id] || (d.claims && me && d.claims[me] ? { order_id: d.claims[me] } : null);
    if (me && winners.includes(me)) {
      if (claim) {
        parts.push(
          el(
            "div",
            { class: "order-status status-confirmed", "data-testid": "prize-claimed" },
            el("span", { class: "status-icon", "aria-hidden": "true" }, "✓"),
            el("span", { class: "status-text" }, t("claimed", { id: claim.order_id || "" })),
          ),
        );
      } else {
        d.claimLeft = el("p", { class: "won-text", "data-testid": "draw-won", "aria-live": "off" });
        d.claimButton = el(
          "button",
          { type: "button", class: "primary pay", "data-testid": "claim-prize", disabled: Boolean(d.busy), onclick: () => this.claimPrize(d) },
          d.busy ? t("claiming") : t("claim_prize"),
        );
        parts.push(el("div", { class: "won-box" }, d.claimLeft, d.claimButton));
      }
    } else if (me && this.mine.entered.includes(d.id) && known) {
      parts.push(el("p", { class: "tool-note", "data-testid": "draw-not-won" }, t("not_won")));
    }
    if (d.seed) parts.push(this._verifyBox(d));
    return parts;
  }

  /** The command line that checks this draw outside the browser: the URL itself where the
   * page is served from this machine (the CLI reads no other), else fetched and piped in. */
  _verifyCommand(d) {
    const url = `${location.origin}${this._verificationPath(d.id)}`;
    const local = ["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
    const auth = this.ctx.token() ? ' -H "Authorization: Bearer $LIVE_TOKEN"' : "";
    return local ? `live draw verify ${url}` : `curl -s${auth} '${url}' | live draw verify -`;
  }

  _verifyBox(d) {
    const c = d.check;
    const checks = el("ul", { class: "checks", "data-testid": "verify-checks" });
    if (c) {
      for (const line of c.lines) checks.append(el("li", { class: line.ok ? "ok" : "bad", dataset: { ok: String(line.ok) } }, line.text));
    }
    const rows = [el("dt", {}, t("commitment")), el("dd", { class: "hex", "data-testid": "draw-commitment" }, d.commitment || ""), el("dt", {}, t("seed")), el("dd", { class: "hex", "data-testid": "draw-seed" }, d.seed)];
    if (c && c.eligible !== null) {
      rows.push(
        el("dt", {}, t("eligible_entries")),
        el("dd", { class: "num", "data-testid": "verify-eligible", dataset: { count: c.eligible } }, t("eligible_of", { n: c.eligible, entrants: c.entrants })),
        el("dt", {}, t("recomputed_winners")),
        el(
          "dd",
          {},
          c.recomputed.length
            ? el("ol", { class: "winners recomputed", "data-testid": "verify-winners" }, c.recomputed.map((id) => el("li", { "data-testid": "verify-winner" }, id)))
            : t("nobody"),
        ),
      );
    }
    let verdict = el("p", { class: "verdict", "data-testid": "verify-verdict", dataset: { ok: "pending" }, role: "status" }, d.verifying ? t("verifying") : "");
    if (c && c.verdict !== null) {
      verdict = el("p", { class: `verdict ${c.verdict ? "ok" : "bad"}`, "data-testid": "verify-verdict", dataset: { ok: String(c.verdict) }, role: "status" }, t(c.verdict ? "verdict_ok" : "verdict_bad"));
    }
    const box = el(
      "details",
      { class: "verify", "data-testid": "draw-verify" },
      el("summary", {}, c && c.verdict !== null ? `${t("verify")} ${c.verdict ? "√" : "×"}` : t("verify")),
      verdict,
      el("dl", {}, ...rows),
      checks,
      el("p", { class: "tool-note cli", "data-testid": "verify-cli" }, t("verify_cli", { command: this._verifyCommand(d) })),
    );
    box.addEventListener("toggle", () => {
      if (box.open && (!d.check || d.check.retry)) this.verifyDraw(d);
    });
    return box;
  }

  /** Check the draw in this browser, as `live draw verify` does: read its verification once
   * (any token of the room), then SHA-256(seed) against the commitment seen at the open, the
   * eligible list against the counts, and the winners recomputed from the seed and the list
   * against the ones announced. */
  async verifyDraw(d) {
    if (d.verifying) return undefined;
    if (!(globalThis.crypto && crypto.subtle)) {
      d.check = { lines: [{ ok: false, text: t("check_unavailable") }], verdict: null, eligible: null, retry: false };
      return this.renderDraw(d);
    }
    d.verifying = true;
    this.renderDraw(d);
    try {
      d.check = await this._check(d);
    } finally {
      d.verifying = false;
    }
    this.renderDraw(d);
    return undefined;
  }

  async _check(d) {
    const lines = [];
    const line = (ok, key, vars) => lines.push({ ok, text: t(key, vars) });
    if (!d.proof) {
      try {
        this._takeProof(d, await api(this._verificationPath(d.id), { token: this.ctx.token() }));
      } catch (error) {
        const commitment = await sha256Hex(d.seed);
        line(commitment === d.commitment, commitment === d.commitment ? "check_commitment_ok" : "check_commitment_bad");
        line(false, "check_unread", { reason: describeError(error) });
        return { lines, verdict: null, eligible: null, retry: true };
      }
    }
    const p = d.proof;
    if (p.seed !== d.seed) line(false, "check_seed_bad");
    const commitment = await sha256Hex(p.seed);
    const committed = commitment === d.commitment && commitment === p.commitment;
    line(committed, committed ? "check_commitment_ok" : "check_commitment_bad");
    const eligible = Array.isArray(p.eligible) ? p.eligible : [];
    const excluded = Object.values(p.excluded_counts || {}).reduce((sum, n) => sum + n, 0);
    const sorted = JSON.stringify(utf8Sorted(eligible)) === JSON.stringify(eligible) && new Set(eligible).size === eligible.length;
    const listOk = sorted && eligible.length + excluded === p.entrants;
    line(listOk, listOk ? "check_list_ok" : "check_list_bad", { n: eligible.length, k: excluded, entrants: p.entrants });
    const recomputed = await drawWinners(p.seed, eligible, p.winners);
    const announced = Array.isArray(d.winner_ids) ? d.winner_ids : p.winner_ids;
    const same = JSON.stringify(recomputed) === JSON.stringify(announced) && JSON.stringify(recomputed) === JSON.stringify(p.winner_ids);
    line(same, same ? "check_winners_ok" : "check_winners_bad", { n: eligible.length });
    return { lines, verdict: lines.every((l) => l.ok), eligible: eligible.length, entrants: p.entrants, recomputed, retry: false };
  }

  tickDraw(d) {
    if (d.state === "open" && d.timer) {
      const left = d.closes_at_ms - this._now();
      const text = left > 0 ? t("draws_in", { time: clock(left) }) : t("drawing");
      if (d.timer.textContent !== text) d.timer.textContent = text;
      d.timer.classList.toggle("urgent", left < 10000);
    }
    if (d.claimLeft) {
      const by = (d.won && d.won.claim_by_ms) || d.claim_by_ms;
      const left = by ? by - this._now() : null;
      const text = left === null ? t("you_won_draw", { time: "–" }) : left > 0 ? t("you_won_draw", { time: clock(left) }) : t("claim_over");
      if (d.claimLeft.textContent !== text) d.claimLeft.textContent = text;
      if (d.claimButton) d.claimButton.disabled = (left !== null && left <= 0) || Boolean(d.busy);
    }
  }

  /** Won: kept in the tab (draw_won is not replayed, and the welcome's draw has no winners). */
  _won(id) {
    if (this.mine.won[id]) return;
    this.mine.won[id] = true;
    this._saveMine();
  }

  _signedInOnly(d) {
    return Boolean(d.rules && d.rules.signed_in);
  }

  async enterDraw(d) {
    if (d.busy) return;
    d.busy = true;
    this.renderDraw(d);
    try {
      await this._request("enter_draw", { draw_id: d.id });
      if (!this.mine.entered.includes(d.id)) this.mine.entered.push(d.id);
      this._saveMine();
    } catch (error) {
      if (error.code === "draw_closed") d.state = "closed";
      this.ctx.showError(error);
    } finally {
      d.busy = false;
    }
    this.renderDraw(d);
  }

  async commentKeyword(d) {
    if (d.busy) return;
    d.busy = true;
    this.renderDraw(d);
    try {
      await this.ctx.comment(d.rules.keyword); // its ack calls commented(), which enters us
    } catch (error) {
      this.ctx.showError(error);
    } finally {
      d.busy = false;
    }
    this.renderDraw(d);
  }

  async claimPrize(d) {
    if (d.busy) return;
    d.busy = true;
    this.renderDraw(d);
    try {
      const ack = await this._request("claim_prize", { draw_id: d.id });
      this.mine.claims[d.id] = { order_id: (ack.order && (ack.order.order_id || ack.order.id)) || "" };
      this._saveMine();
    } catch (error) {
      this.ctx.showError(error);
    } finally {
      d.busy = false;
    }
    this.renderDraw(d);
  }

  // -- polls ----------------------------------------------------------------------------------

  _upsertPoll(data, fresh = false) {
    let p = this.polls.get(data.id);
    if (!p) {
      p = { ...data, fresh, busy: false, dom: null };
      this.polls.set(p.id, p);
    } else {
      Object.assign(p, data);
    }
    this.renderPoll(p);
  }

  _patchPoll(id, change) {
    const p = this.polls.get(id);
    if (!p) return;
    change(p);
    this.renderPoll(p);
  }

  renderPoll(p) {
    const card = this._card(p, "poll");
    card.dataset.state = p.state;
    const open = p.state === "open";
    const tallies = p.tallies || p.options.map(() => 0);
    const total = tallies.reduce((sum, n) => sum + n, 0);
    const best = Math.max(...tallies);
    const chosen = this.mine.votes[p.id];
    const parts = [this._head("poll", open ? "open" : "closed", null), el("h3", { class: "poll-question" }, p.question)];
    const options = p.options.map((text, i) => {
      const n = tallies[i] || 0;
      const pct = total ? Math.round((100 * n) / total) : 0;
      const mine = chosen === i;
      const winner = !open && total > 0 && n === best;
      const bar = el("progress", { class: "poll-bar", max: String(Math.max(1, total)), value: String(n), "aria-hidden": "true" });
      const label = el(
        "span",
        { class: "poll-label" },
        el("span", { class: "poll-text" }, text),
        mine ? el("span", { class: "poll-mine" }, ` · ${t("your_vote")}`) : null,
      );
      const count = el("span", { class: "poll-count num", "data-testid": "poll-tally", dataset: { count: n } }, `${pct}% · ${n}`);
      const canVote = open && !this.ctx.banned() && !p.busy && (p.allow_change !== false || chosen === undefined);
      return el(
        "button",
        {
          type: "button",
          class: `poll-option${mine ? " chosen" : ""}${winner ? " winner" : ""}`,
          "data-testid": "poll-option",
          dataset: { option: i },
          "aria-pressed": mine ? "true" : "false",
          "aria-label": `${t("vote_for", { option: text })}: ${pct}%`,
          disabled: !canVote,
          onclick: () => this.vote(p, i),
        },
        label,
        count,
        bar,
      );
    });
    parts.push(el("div", { class: "poll-options" }, options));
    const meta = [el("span", { class: "num", "data-testid": "poll-votes", dataset: { count: p.votes ?? total } }, t("votes_n", { n: p.votes ?? total }))];
    if (open) {
      p.timer = el("span", { class: "num poll-timer", "aria-live": "off", "data-testid": "poll-countdown" });
      meta.push(" · ", p.timer);
    } else {
      meta.push(" · ", el("b", { "data-testid": "poll-final" }, t("final_result")));
    }
    parts.push(el("p", { class: "tool-note" }, meta));
    if (open && p.allow_change !== false && chosen !== undefined) parts.push(el("p", { class: "tool-note" }, t("can_change")));
    this._fill(card, parts);
    this.tickPoll(p);
  }

  tickPoll(p) {
    if (p.state !== "open" || !p.timer) return;
    const left = p.closes_at_ms - this._now();
    const text = left > 0 ? t("poll_ends", { time: clock(left) }) : t("state_closed");
    if (p.timer.textContent !== text) p.timer.textContent = text;
  }

  async vote(p, option) {
    if (p.busy) return;
    p.busy = true;
    this.renderPoll(p);
    try {
      const ack = await this._request("vote", { poll_id: p.id, option });
      this.mine.votes[p.id] = typeof ack.option === "number" ? ack.option : option;
      this._saveMine();
    } catch (error) {
      if (error.code === "poll_closed") p.state = "closed";
      this.ctx.showError(error);
    } finally {
      p.busy = false;
    }
    this.renderPoll(p);
  }

  // -- Q&A ------------------------------------------------------------------------------------

  _setQuestions(list, fromWelcome) {
    const top = [];
    for (const q of list) {
      if (q.pinned) this.pinned = q;
      if (q.state === "open" || q.state === undefined) top.push(q);
    }
    if (fromWelcome && !list.some((q) => q.pinned)) this.pinned = null;
    if (this.pinned) {
      const fresh = list.find((q) => q.id === this.pinned.id);
      if (fresh) this.pinned = fresh;
    }
    this.questions = top;
  }

  _onQuestionEvent(m) {
    const q = m.question || this._findQuestion(m.question_id) || { id: m.question_id };
    const id = q.id;
    if (m.type === "question_pinned") {
      this.pinned = { ...(this._findQuestion(id) || {}), ...q, pinned: true };
    } else if (m.type === "question_unpinned") {
      if (this.pinned && (id === undefined || this.pinned.id === id)) this.pinned = null;
    } else if (m.type === "question_answered") {
      const known = this._findQuestion(id);
      this.questions = this.questions.filter((item) => item.id !== id);
      if (this.pinned && this.pinned.id === id) this.pinned.state = "answered";
      // The last few answered stay in view (answering leaves the queue, and unpins).
      const answered = { ...(known || {}), ...q, state: "answered", pinned: false };
      this.answered = [answered, ...this.answered.filter((item) => item.id !== id)].slice(0, ANSWERED_SHOWN);
    }
  }

  _findQuestion(id) {
    return this.questions.find((q) => q.id === id) || (this.pinned && this.pinned.id === id ? this.pinned : null);
  }

  _buildQna() {
    if (!this.qna) return;
    this.qnaInput = el("textarea", {
      id: "question-input",
      class: "question-input",
      "data-testid": "question-input",
      rows: "2",
      maxlength: String(QUESTION_MAX),
      enterkeyhint: "send",
    });
    this.qnaCount = el("span", { class: "question-count num", "data-testid": "question-count", "aria-live": "off" });
    this.qnaButton = el("button", { type: "submit", class: "primary ask-btn", "data-testid": "ask" });
    this.qnaLabel = el("label", { for: "question-input", class: "qna-label" });
    this.qnaForm = el("form", { class: "ask-form", autocomplete: "off" }, this.qnaLabel, this.qnaInput, el("div", { class: "ask-row" }, this.qnaCount, this.qnaButton));
    this.qnaForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.ask();
    });
    this.qnaInput.addEventListener("input", () => this._renderCount());
    this.qnaInput.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.qnaForm.requestSubmit();
      }
    });
    this.qnaTitle = el("h2", { class: "section-title", id: "qna-heading" });
    this.qnaList = el("ol", { class: "questions", "data-testid": "questions" });
    this.qnaPinned = el("div", { class: "pinned-question-box" });
    this.qnaEmpty = el("p", { class: "tool-note qna-empty" });
    this.qnaAnswered = el("ol", { class: "questions answered", "data-testid": "answered-questions" });
    this.qna.append(this.qnaTitle, this.qnaPinned, this.qnaForm, this.qnaList, this.qnaEmpty, this.qnaAnswered);
  }

  _renderCount() {
    const n = Array.from(this.qnaInput.value).length;
    this.qnaCount.textContent = `${n} / ${QUESTION_MAX}`;
    this.qnaCount.classList.toggle("near", n > QUESTION_MAX * 0.9);
  }

  _questionItem(q, pinned) {
    const me = this._myId();
    const own = q.user_id === me;
    const upvoted = this.mine.upvoted.includes(q.id);
    const open = (q.state || "open") === "open";
    return el(
      pinned ? "div" : "li",
      { class: `question${pinned ? " pinned" : ""}${own ? " own" : ""}`, "data-testid": pinned ? "pinned-question" : "question", dataset: { questionId: q.id, state: q.state || "open" } },
      pinned ? el("span", { class: "tag tag-pinned-q" }, `★ ${t("pinned_question")}`) : null,
      q.state === "answered" ? el("span", { class: "tag tag-answered", "data-testid": "question-answered" }, `✓ ${t("answered")}`) : null,
      el("p", { class: "question-text" }, q.text || ""),
      el(
        "div",
        { class: "question-foot" },
        el("span", { class: "question-who" }, this._who(q.user_id)),
        el(
          "button",
          {
            type: "button",
            class: `upvote${upvoted ? " done" : ""}`,
            "data-testid": "upvote",
            "aria-pressed": upvoted ? "true" : "false",
            "aria-label": `${t("upvote_aria", { text: q.text || "" })} (${t("upvotes_aria", { n: q.upvotes || 0 })})`,
            disabled: own || !open || this.ctx.banned() || Boolean(q.busy),
            onclick: () => this.upvote(q),
          },
          "▲ ",
          el("span", { class: "num", "data-testid": "upvotes" }, String(q.upvotes || 0)),
        ),
      ),
    );
  }

  renderQna() {
    if (!this.qna) return;
    this.qna.hidden = !this.qnaServed;
    this._heading();
    if (!this.qnaServed) return;
    this.qnaTitle.textContent = t("qna");
    this.qnaLabel.textContent = t("ask_label");
    this.qnaInput.placeholder = t("ask_ph");
    this.qnaInput.disabled = this.ctx.banned();
    this.qnaButton.textContent = this.asking ? t("asking") : t("ask");
    this.qnaButton.disabled = this.asking || this.ctx.banned();
    this._renderCount();
    this.qnaPinned.replaceChildren(this.pinned ? this._questionItem(this.pinned, true) : "");
    const shown = this.questions.filter((q) => !this.pinned || q.id !== this.pinned.id).slice(0, QUESTIONS_SHOWN);
    const active = document.activeElement;
    const focusId = active && this.qnaList.contains(active) ? active.closest("[data-question-id]")?.dataset.questionId : null;
    this.qnaList.replaceChildren(...shown.map((q) => this._questionItem(q, false)));
    if (focusId) {
      const again = this.qnaList.querySelector(`[data-question-id="${CSS.escape(focusId)}"] [data-testid="upvote"]`);
      if (again && !again.disabled) again.focus({ preventScroll: true });
    }
    this.qnaAnswered.replaceChildren(
      ...this.answered.map((q) => {
        const item = this._questionItem(q, false);
        item.dataset.testid = "answered-question";
        return item;
      }),
    );
    this.qnaEmpty.textContent = t("no_questions");
    this.qnaEmpty.hidden = shown.length > 0 || Boolean(this.pinned);
  }

  async ask() {
    const text = this.qnaInput.value.trim();
    if (!text || this.asking) return;
    if (Array.from(text).length > QUESTION_MAX) return this.ctx.showError({ code: "invalid_text" });
    this.asking = true;
    this.renderQna();
    try {
      const ack = await this._request("ask", { text });
      if (this.qnaInput.value.trim() === text) this.qnaInput.value = "";
      const q = ack.question;
      if (q && !this._findQuestion(q.id)) this.questions.push(q);
    } catch (error) {
      this.ctx.showError(error.code === "banned_words" ? { code: "question_banned_words", message: t("question_banned_words") } : error);
    } finally {
      this.asking = false;
    }
    this.renderQna();
    return undefined;
  }

  async upvote(q) {
    if (q.busy) return;
    q.busy = true;
    this.renderQna();
    try {
      const ack = await this._request("upvote", { question_id: q.id });
      if (typeof ack.upvotes === "number") q.upvotes = Math.max(q.upvotes || 0, ack.upvotes);
      if (!this.mine.upvoted.includes(q.id)) this.mine.upvoted.push(q.id);
      this._saveMine();
    } catch (error) {
      this.ctx.showError(error);
    } finally {
      q.busy = false;
    }
    this.renderQna();
  }

  // -- the clock --------------------------------------------------------------------------------

  tick() {
    for (const a of this.auctions.values()) this.tickAuction(a);
    for (const d of this.draws.values()) this.tickDraw(d);
    for (const p of this.polls.values()) this.tickPoll(p);
  }
}

