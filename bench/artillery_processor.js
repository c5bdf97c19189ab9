// The per-user work of bench/loadgen.py's Artillery run, as an Artillery 2 processor (loadgen.py
// copies it next to the script it writes for each run). Artillery's ws engine can send and then
// match the *next* message, but in a busy room the next message is a batch, not the ack; acks
// have to be picked out by rid, which needs a function. Closed loop, like the Locust user.
'use strict';
// Monotonic seconds: process.hrtime is CLOCK_MONOTONIC on Linux, the clock Python's
// time.monotonic() reads, so the comments' stamps mean the same as the harness's.
const fs = require('fs');
const mono = () => Number(process.hrtime.bigint()) / 1e9;
let tokens = null;
let next = 0;
let t0 = null;
let commenting = 0;
let frames = 0;
let lagged = 0;
const sends = [];
function connect(wsArgs, context, done) {
  const v = context.vars;
  if (tokens === null) {
    tokens = fs.readFileSync(v.tokensFile, 'ascii').split('\n').filter(Boolean);
    t0 = mono();
  }
  v.index = next++;
  wsArgs.target = `${wsArgs.target}/ws/rooms/${v.room}`;
  const headers = { Authorization: `Bearer ${tokens[v.index]}` };
  wsArgs.options = Object.assign({}, wsArgs.options, { headers });
  done();
}
function save(v) {
  fs.writeFileSync(v.out, JSON.stringify({ t0: t0, sends: sends, frames: frames, lagged: lagged }));
}
function chat(context, ee, done) {
  const v = context.vars;
  const ws = context.ws;
  const index = v.index;
  const pending = new Map();
  let sent = 0;
  ws.on('message', (data) => {
    const now = mono();
    frames += 1;
    const text = data.toString();
    const head = text.slice(0, 40);
    if (head.includes('"lagged"')) lagged += 1;
    if (head.includes('"batch"') || !text.includes('"rid"')) return;
    const msg = JSON.parse(text);
    const p = pending.get(msg.rid);
    if (p) {
      pending.delete(msg.rid);
      p(now, msg);
    }
  });
  const endAt = t0 + v.endS;
  const stormEnd = t0 + v.stormEndS;
  const ping = setInterval(() => ws.send('{"type":"ping"}'), v.heartbeatS * 1000);
  const later = (f, at) => setTimeout(f, Math.max(0, at - mono()) * 1000);
  const finish = () => {
    clearInterval(ping);
    done();
  };
  if (index >= v.commenters) {
    later(finish, endAt);
    return;
  }
  commenting += 1;
  let due = t0 + v.stormStartS + index / v.rate;
  const step = () => {
    const now = mono();
    if (now >= stormEnd) {
      commenting -= 1;
      if (commenting === 0) save(v);
      later(finish, endAt);
      return;
    }
    if (now < due) {
      later(step, due);
      return;
    }
    due = Math.max(due, now) + v.period;
    sent += 1;
    const rid = `${index}.${sent}`;
    const entry = sends.length;
    sends.push([now, null]);
    const timer = setTimeout(() => {
      pending.delete(rid);
      ee.emit('counter', 'comment.no_reply', 1);
      step();
    }, v.replyTimeoutS * 1000);
    pending.set(rid, (at, msg) => {
      clearTimeout(timer);
      if (msg.type === 'ack') {
        ee.emit('histogram', 'comment_ack', (at - now) * 1000);
        ee.emit('counter', 'comment.acked', 1);
        sends[entry][1] = (at - now) * 1000;
      } else {
        ee.emit('counter', `comment.error.${msg.code}`, 1);
      }
      step();
    });
    ws.send(JSON.stringify({ type: 'comment', text: `lt:c:${Math.floor(now * 1e6)}`, rid: rid }));
    ee.emit('counter', 'comment.sent', 1);
  };
  step();
}
module.exports = { connect, chat };
