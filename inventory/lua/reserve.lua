-- Reserve units for a batch of requests, in order, all or nothing per request.
-- Each request is checked in this order: its idempotency record (below), the request itself
-- (the quantity must be a whole number from 1 to the per-user limit), the sale window, the
-- per-user limit (held + bought), the stock. An admitted request takes the units into a hold
-- that expires after the sale's hold_ms.
--
-- One request id, one decision: a request with a key gets its decision recorded in the call
-- that makes it (Redis runs one script at a time), so every copy of the request, from any
-- process and in any order, gets the same answer. A decision is a hold, or one of the refusals
-- in DECIDED below. "frozen" (a repair is under way) and "unknown_sale" say nothing about the
-- request and are not recorded; neither is a keyless request's answer. A recorded key asked
-- again with the same quantity gets its answer again; with another quantity (or a key a team
-- command used), "duplicate".
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV: triples user id, quantity, idempotency key ("" for none)
-- The batch's reads and writes are grouped: one HMGET of the users' counts, one of the
-- idempotency records, one of the hold lists (MINE) of the users who held before, and one
-- HSET/ZADD per key at the end (a redis.call costs more than the Lua around it). Requests of
-- one batch that repeat a key see the earlier ones' answers.
--
-- Returns: a flat list, three items per request: code, hold id ("" unless reserved), number
--   code "reserved": the number is the hold's expiry (ms since the epoch)
--   code "insufficient_stock": the number is the units left (when it was decided)
--   codes "sold_out" "limit_reached" "not_started" "ended" "frozen" "duplicate"
--         "invalid_quantity" "unknown_sale": the number is 0

-- the refusals that are decisions about a request, recorded under its key
local DECIDED = {
  sold_out = true, insufficient_stock = true, limit_reached = true, not_started = true,
  ended = true, invalid_quantity = true,
}

-- The answer a key's record (lib.lua, KEYS[5]) gives a request for qty units.
local function replay(record, qty)
  local q, hold_id, expires = string.match(record, '^(%d+)|([^|]+)|(%d+)$')
  if q and tonumber(q) == qty then return 'reserved', hold_id, tonumber(expires) end
  local code, rq, number = string.match(record, '^!([%l_]+)|(-?%d+)|(%d+)$')
  if code and tonumber(rq) == qty then return code, '', tonumber(number) end
  return 'duplicate', '', 0 -- another quantity, or a team's record (another command)
end

local now = now_ms()
local id, state, starts, ends, limit, price, hold_ms, available, held, seq = unpack(redis.call(
  'HMGET', SALE, 'id', 'state', 'starts', 'ends', 'limit', 'price', 'hold_ms', 'available',
  'held', 'seq'))
local n = #ARGV / 3
local out = {}
if not id then
  for _ = 1, n do
    out[#out + 1] = 'unknown_sale'; out[#out + 1] = ''; out[#out + 1] = 0
  end
  return out
end
local phase = phase_of(now, state or '', tonumber(starts), tonumber(ends))
limit, available, held, seq = tonumber(limit), tonumber(available), tonumber(held), tonumber(seq)
local expires = now + tonumber(hold_ms)
local was_available = available

-- what Redis has: the users' counts and the keys' first answers, read once for the batch
local users, fields = {}, {}
for i = 1, n do
  users[i] = ARGV[3 * i - 2]
  if ARGV[3 * i] ~= '' then fields[#fields + 1] = idem_field(users[i], ARGV[3 * i]) end
end
local counts = redis.call('HMGET', USERS, unpack(users))
local has, before = {}, {}
for i = 1, n do
  if has[users[i]] == nil then has[users[i]] = tonumber(counts[i] or '0') end
end
for user, units in pairs(has) do before[user] = units end
local answered = {}
if #fields > 0 then
  local seen = redis.call('HMGET', IDEM, unpack(fields))
  for i = 1, #fields do
    if seen[i] then answered[fields[i]] = seen[i] end
  end
end

local user_writes, hold_writes, expiry_writes, idem_writes, mine_writes = {}, {}, {}, {}, {}
local touched = {} -- user -> the ids of the holds this batch made for them
for i = 1, n do
  local user, qty, key = users[i], tonumber(ARGV[3 * i - 1]), ARGV[3 * i]
  local code, hold_id, number = nil, '', 0
  local field = key ~= '' and idem_field(user, key)
  local seen = field and answered[field]
  if seen then
    code, hold_id, number = replay(seen, qty)
  elseif not qty or qty < 1 or qty > limit or qty % 1 ~= 0 then
    code = 'invalid_quantity'
  elseif phase ~= 'live' then
    code = phase
  elseif has[user] + qty > limit then
    code = 'limit_reached'
  elseif available == 0 then
    code = 'sold_out'
  elseif available < qty then
    code, number = 'insufficient_stock', available
  else
    available, held, seq = available - qty, held + qty, seq + 1
    hold_id = id .. '.' .. seq .. '.' .. now
    has[user] = has[user] + qty
    touched[user] = touched[user] or {}
    touched[user][#touched[user] + 1] = hold_id
    hold_writes[#hold_writes + 1] = hold_id
    hold_writes[#hold_writes + 1] = hold_record(qty, expires, price, '', key, user)
    expiry_writes[#expiry_writes + 1] = expires
    expiry_writes[#expiry_writes + 1] = hold_id
    if field then
      local record = qty .. '|' .. hold_id .. '|' .. expires
      answered[field] = record
      idem_writes[#idem_writes + 1] = field
      idem_writes[#idem_writes + 1] = record
    end
    code, number = 'reserved', expires
  end
  if field and not seen and qty and qty % 1 == 0 and DECIDED[code] then
    local record = '!' .. code .. '|' .. qty .. '|' .. number
    answered[field] = record
    idem_writes[#idem_writes + 1] = field
    idem_writes[#idem_writes + 1] = record
  end
  out[#out + 1] = code; out[#out + 1] = hold_id; out[#out + 1] = number
end

if available ~= was_available then
  -- the hold lists of the users who held or had bought before, read at once
  local holders, fields = {}, {}
  for user in pairs(touched) do
    if before[user] > 0 then holders[#holders + 1] = user; fields[#fields + 1] = 'h:' .. user end
  end
  local listed = {}
  if #fields > 0 then
    local lists = redis.call('HMGET', MINE, unpack(fields))
    for i, user in ipairs(holders) do listed[user] = lists[i] or nil end
  end
  for user, ids in pairs(touched) do
    user_writes[#user_writes + 1] = user; user_writes[#user_writes + 1] = has[user]
    mine_writes[#mine_writes + 1] = 'h:' .. user
    mine_writes[#mine_writes + 1] = hold_list(listed[user], ids, limit)
  end
  redis.call('HSET', USERS, unpack(user_writes))
  redis.call('HSET', HOLDS, unpack(hold_writes))
  redis.call('HSET', MINE, unpack(mine_writes))
  redis.call('ZADD', EXPIRY, unpack(expiry_writes))
  redis.call('HSET', SALE, 'available', available, 'held', held, 'seq', seq)
  if available == 0 then announce_available(0) end
end
if #idem_writes > 0 then redis.call('HSET', IDEM, unpack(idem_writes)) end
return out
