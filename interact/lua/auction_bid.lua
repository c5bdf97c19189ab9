-- Decide a bid, once per (user, rid): every copy of the request gets the first decision,
-- accepted or refused; the same rid with another amount is refused (duplicate). A refusal
-- changes nothing but the record of the decision.
-- Rules: the auction is open and the shard's clock is before its end; the amount is an integer
-- 1..ARGV[4]; at least the start price (no leader yet) or the leading bid + the increment; the
-- bidder is not banned from the room. A bid with less than snipe_ms left moves the end to
-- now + snipe_ms, never past the original end + max_ext_ms; a bid of at least the buy-it-now
-- price ends the auction now (the close makes its bidder the winner).
-- KEYS[1] the auction's hash   KEYS[2] accepted bids (list)   KEYS[3] bidders' highest bids (zset)
-- KEYS[4] decisions by "<user>\n<rid>" (hash)   KEYS[5] the room's banned users (set)
-- ARGV[1] user id   ARGV[2] rid   ARGV[3] amount (decimal text, as sent)   ARGV[4] most cents
-- Returns {"ok", seq, amount, ends_at_ms, extended (0/1), previous leader ("" none),
--   previous amount, bids, next minimum, ended (0/1: bought now)}, all as text, or a refusal.
local function int(n) return string.format('%.0f', n) end
local user, rid, raw, most = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 0 then return refuse('auction_not_found') end
local field = user .. '\n' .. rid
local seen = redis.call('HGET', KEYS[4], field)
if seen then
  local nl = string.find(seen, '\n', 1, true)
  if string.sub(seen, 1, nl - 1) ~= raw then return refuse('duplicate') end
  return cjson.decode(string.sub(seen, nl + 1))
end
local function decide(reply)
  redis.call('HSET', KEYS[4], field, raw .. '\n' .. cjson.encode(reply))
  return reply
end
local amount = tonumber(raw)
if not string.match(raw, '^%d+$') or not amount or amount <= 0 or amount > most then
  return decide(refuse('invalid_amount'))
end
if redis.call('SISMEMBER', KEYS[5], user) == 1 then return decide(refuse('banned')) end
local a = redis.call('HMGET', KEYS[1], 'state', 'ends_at', 'orig_ends_at', 'leader', 'amount',
  'bid_seq', 'start', 'inc', 'snipe_ms', 'max_ext_ms', 'buy_now')
local state, ends, orig_end, leader = a[1], tonumber(a[2]), tonumber(a[3]), a[4]
local leading, seq, start, inc = tonumber(a[5]), tonumber(a[6]), tonumber(a[7]), tonumber(a[8])
local snipe, max_ext, buy_now = tonumber(a[9]), tonumber(a[10]), tonumber(a[11])
local now = now_ms()
if state ~= 'open' or now >= ends then return decide(refuse('auction_ended')) end
local minimum = leader == '' and start or leading + inc
if amount < minimum then return decide(refuse('bid_too_low', int(minimum))) end
seq = seq + 1
local extended, ended = 0, 0
if buy_now > 0 and amount >= buy_now then
  ends, ended = now, 1
elseif ends - now < snipe then
  local moved = math.min(now + snipe, orig_end + max_ext)
  if moved > ends then ends, extended = moved, 1 end
end
redis.call('HSET', KEYS[1], 'leader', user, 'amount', amount, 'bid_seq', seq, 'bids', seq, 'ends_at', ends)
redis.call('RPUSH', KEYS[2], int(seq) .. '|' .. int(amount) .. '|' .. int(now) .. '|' .. int(ends) .. '|' .. user)
redis.call('ZADD', KEYS[3], amount, user)
return decide({'ok', int(seq), int(amount), int(ends), int(extended), leader, int(leading), int(seq),
  int(amount + inc), int(ended)})
