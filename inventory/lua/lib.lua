-- Helpers shared by the inventory scripts: inventory/scripts.py puts this file in front of
-- each script before loading it (Redis scripts cannot include one another).
--
-- Every script gets the same KEYS, all of one sale and all with its hash tag {sale id}, so
-- they live in one Redis Cluster slot:
--   KEYS[1] sale hash: id, room, product, price, limit, starts, ends, hold_ms, total,
--           available, held, sold, state ("" | "stopped" | "frozen"), seq (last hold number),
--           group_size, group_price, team_ms, channel, announced, stock_announced, stock_at
--   KEYS[2] users hash: user id -> units the user holds + has bought
--   KEYS[3] holds hash: hold id -> hold record (below). A hold id is "<sale>.<seq>.<ms>": the
--           time keeps ids unique even when a Redis failover loses the last seq increments.
--   KEYS[4] expiry sorted set: hold id, scored by its expiry (ms); team holds are not in it
--   KEYS[5] idempotency hash: <#user>:<user><key> -> "qty|hold id|expires_ms", for a team
--           "qty|hold id|deadline_ms|team code[|open]", or, for a reservation refused by a
--           decision (reserve.lua), "!code|qty|number"; and p:<payment attempt> -> "used"
--           (a confirm or team join spent it) or "void" (the app refunds it: never spent)
--   KEYS[6] orders hash: order id (= the hold id it came from) -> order JSON
--   KEYS[7] orders stream: one entry per confirmed order, field "o" = order JSON
--   KEYS[8] teams hash: code -> "state|deadline_ms|size|count|unit_price",
--           code:holds -> comma-separated hold ids, code:u:<user> -> hold id,
--           code:p:<user> -> the payment attempt that paid the member's place
--   KEYS[9] team deadlines sorted set: open team codes, scored by deadline (ms)
--   KEYS[10] coupons hash: b:<batch> -> "total|discount", r:<batch> -> remaining,
--           u:<batch>:<user> -> coupon id, c:<coupon id> -> "discount|state|user"
--   KEYS[11] mine hash, what each user has in the sale (the welcome's `you`, mine.lua):
--           h:<user> -> comma-separated ids of the user's holds and orders (an order's id is
--           its hold's), c:<user> -> comma-separated ids of the user's coupons. Hold, order
--           and coupon ids are made of the sale's and batches' ids ([A-Za-z0-9_-]), digits
--           and dots: never a comma. A hold given back leaves its id behind: the reader skips
--           it, and a hold of the user that would pass their limit drops it (hold_list).
--
-- Invariant after every script, per sale: total = available + held + sold, where held is
-- the sum of the holds' quantities and sold the sum of the orders' quantities.
--
-- A hold record is "qty|expires_ms|unit_price_cents|team code|<#key>|<key><user>": the user
-- id and the client's idempotency key may contain any character, so they go last, split by
-- the key's length.

local SALE, USERS, HOLDS, EXPIRY, IDEM, ORDERS, STREAM, TEAMS, TEAM_DEADLINES, COUPONS, MINE =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]

-- The time of Redis: one clock for every process that touches the sale.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function hnum(key, field)
  return tonumber(redis.call('HGET', key, field) or '0')
end

-- "not_started" | "live" | "ended" | "frozen" at time now, from the sale's fields.
local function phase_of(now, state, starts, ends)
  if state == 'frozen' then return 'frozen' end
  if state == 'stopped' or now >= ends then return 'ended' end
  if now < starts then return 'not_started' end
  return 'live'
end

local function idem_field(user, key)
  return #user .. ':' .. user .. key
end

local function hold_record(qty, expires, price, team, key, user)
  return qty .. '|' .. expires .. '|' .. price .. '|' .. team .. '|' .. #key .. '|' .. key .. user
end

-- qty, expires, unit price, team code, key, user
local function parse_hold(rec)
  local qty, expires, price, team, klen, rest =
    string.match(rec, '^(%d+)|(%d+)|(%d+)|([^|]*)|(%d+)|(.*)$')
  klen = tonumber(klen)
  return tonumber(qty), tonumber(expires), tonumber(price), team,
    string.sub(rest, 1, klen), string.sub(rest, klen + 1)
end

-- Tell every process the sale has units again (their sold-out flags go off).
local function announce_available(available)
  local id, channel = unpack(redis.call('HMGET', SALE, 'id', 'channel'))
  redis.call('PUBLISH', channel, id .. '|' .. available)
end

-- Give a hold's units back to the sale.
local function release(hold_id, qty, user)
  local available = redis.call('HINCRBY', SALE, 'available', qty)
  redis.call('HINCRBY', SALE, 'held', -qty)
  if redis.call('HINCRBY', USERS, user, -qty) <= 0 then redis.call('HDEL', USERS, user) end
  redis.call('HDEL', HOLDS, hold_id)
  redis.call('ZREM', EXPIRY, hold_id)
  if available == qty then announce_available(available) end
end

-- Turn a hold into an order: held -> sold, the order recorded and appended to the stream.
local function make_order(hold_id, qty, price, team, key, user, coupon, discount, now)
  local amount = math.max(0, qty * price - discount)
  -- the ledger keeps one order per (sale, user, key): an order made without a client key
  -- gets its own id as the key
  if key == '' then key = hold_id end
  local order = cjson.encode({
    id = hold_id, sale = redis.call('HGET', SALE, 'id'), user = user, qty = qty,
    unit_price = price, discount = discount, amount = amount, coupon = coupon, team = team,
    key = key, ts = now,
  })
  redis.call('HINCRBY', SALE, 'held', -qty)
  redis.call('HINCRBY', SALE, 'sold', qty)
  redis.call('HDEL', HOLDS, hold_id)
  redis.call('ZREM', EXPIRY, hold_id)
  redis.call('HSET', ORDERS, hold_id, order)
  redis.call('XADD', STREAM, '*', 'o', order)
  return amount
end

-- Check a new hold of qty units for user against the sale's window, the user's limit and
-- the stock. Returns nil when allowed, else the refusal and (for insufficient_stock) the
-- units left.
local function refusal(now, user, qty)
  local state, starts, ends, limit, available = unpack(redis.call(
    'HMGET', SALE, 'state', 'starts', 'ends', 'limit', 'available'))
  if not starts then return 'unknown_sale', 0 end
  local phase = phase_of(now, state or '', tonumber(starts), tonumber(ends))
  if phase ~= 'live' then return phase, 0 end
  if qty < 1 or qty > tonumber(limit) then return 'invalid_quantity', 0 end
  if hnum(USERS, user) + qty > tonumber(limit) then return 'limit_reached', 0 end
  available = tonumber(available)
  if available == 0 then return 'sold_out', 0 end
  if available < qty then return 'insufficient_stock', available end
  return nil, 0
end

-- A user's hold list in MINE (h:<user>) with ids added. listed: the list now, or nil when the
-- user held and had bought nothing before this script (USERS): every id listed is then gone
-- (given back), so the list starts over unread. A list that would pass the user's limit keeps
-- only the ids still a hold or an order: every hold and order has a unit, so it stays within
-- the limit however often they cancel, and a buyer within it costs no lookups.
local function hold_list(listed, ids, limit)
  if not listed or listed == '' then return table.concat(ids, ',') end
  local kept = {}
  for id in string.gmatch(listed, '[^,]+') do kept[#kept + 1] = id end
  if #kept + #ids > limit then
    local live = {}
    for _, id in ipairs(kept) do
      if redis.call('HEXISTS', HOLDS, id) == 1 or redis.call('HEXISTS', ORDERS, id) == 1 then
        live[#live + 1] = id
      end
    end
    kept = live
  end
  for _, id in ipairs(ids) do kept[#kept + 1] = id end
  return table.concat(kept, ',')
end

-- Take qty units for user into a new hold. Returns the hold id.
local function take(now, qty, expires, price, team, key, user, scored)
  local hold_id = redis.call('HGET', SALE, 'id') .. '.' .. redis.call('HINCRBY', SALE, 'seq', 1) .. '.' .. now
  local listed = hnum(USERS, user) > 0 and redis.call('HGET', MINE, 'h:' .. user) or nil
  redis.call('HSET', MINE, 'h:' .. user, hold_list(listed, {hold_id}, hnum(SALE, 'limit')))
  local available = redis.call('HINCRBY', SALE, 'available', -qty)
  redis.call('HINCRBY', SALE, 'held', qty)
  redis.call('HINCRBY', USERS, user, qty)
  redis.call('HSET', HOLDS, hold_id, hold_record(qty, expires, price, team, key, user))
  if scored then redis.call('ZADD', EXPIRY, expires, hold_id) end
  if available == 0 then announce_available(0) end
  return hold_id
end

