-- Reserve units for a batch of requests, in order, all or nothing per request.
-- Each request is checked in this order: idempotency key (same key and quantity -> the first
-- answer again; same key, other quantity -> "duplicate"), sale window, per-user limit (held
-- + bought), stock. An admitted request takes the units into a hold that expires after the
-- sale's hold_ms.
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV: triples user id, quantity, idempotency key ("" for none)
-- The batch's reads and writes are grouped: one HMGET of the users' counts, one of the
-- idempotency records, and one HSET/ZADD per key at the end (a redis.call costs more than the
-- Lua around it). Requests of one batch that repeat a key see the earlier ones' answers.
--
-- Returns: a flat list, three items per request: code, hold id ("" unless reserved), number
--   code "reserved": the number is the hold's expiry (ms since the epoch)
--   code "insufficient_stock": the number is the units left
--   codes "sold_out" "limit_reached" "not_started" "ended" "frozen" "duplicate"
--         "invalid_quantity" "unknown_sale": the number is 0

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
local has = {}
for i = 1, n do
  if has[users[i]] == nil then has[users[i]] = tonumber(counts[i] or '0') end
end
local answered = {}
if #fields > 0 then
  local seen = redis.call('HMGET', IDEM, unpack(fields))
  for i = 1, #fields do
    if seen[i] then answered[fields[i]] = seen[i] end
  end
end

local user_writes, hold_writes, expiry_writes, idem_writes = {}, {}, {}, {}
local touched = {}
for i = 1, n do
  local user, qty, key = users[i], tonumber(ARGV[3 * i - 1]), ARGV[3 * i]
  local code, hold_id, number = nil, '', 0
  local field = key ~= '' and idem_field(user, key)
  local seen = field and answered[field]
  if seen then
    local q, h, e = string.match(seen, '^(%d+)|([^|]+)|(%d+)')
    if tonumber(q) == qty then
      code, hold_id, number = 'reserved', h, tonumber(e)
    else
      code = 'duplicate'
    end
  elseif phase ~= 'live' then
    code = phase
  elseif not qty or qty < 1 or qty > limit then
    code = 'invalid_quantity'
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
    touched[user] = true
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
  out[#out + 1] = code; out[#out + 1] = hold_id; out[#out + 1] = number
end

if available ~= was_available then
  for user in pairs(touched) do
    user_writes[#user_writes + 1] = user; user_writes[#user_writes + 1] = has[user]
  end
  redis.call('HSET', USERS, unpack(user_writes))
  redis.call('HSET', HOLDS, unpack(hold_writes))
  redis.call('ZADD', EXPIRY, unpack(expiry_writes))
  if #idem_writes > 0 then redis.call('HSET', IDEM, unpack(idem_writes)) end
  redis.call('HSET', SALE, 'available', available, 'held', held, 'seq', seq)
  if available == 0 then announce_available(0) end
end
return out
