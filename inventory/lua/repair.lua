-- Rebuild a sale's counters from the ledger (after Redis lost writes), atomically.
-- The sale hash is re-created from the ledger's copy when it is gone. Holds still in Redis
-- are kept; the orders hash becomes exactly the ledger's orders; sold, held, available and
-- the per-user counts are recomputed, so the invariant holds again.
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV[1] the sale's settings as JSON (the open_sale.lua fields, "total" = initial + added)
-- ARGV[2..] order JSON, one per order in the ledger
-- Returns: {available, held, sold, total, holds kept}

local spec = cjson.decode(ARGV[1])
local fields = {}
for name, value in pairs(spec) do
  if redis.call('HEXISTS', SALE, name) == 0 or name == 'total' then
    fields[#fields + 1] = name; fields[#fields + 1] = value
  end
end
redis.call('HSET', SALE, unpack(fields))

-- listed: the users' lists of holds and orders (MINE h:), made anew from what is there now
-- (Redis may have lost their writes with the orders')
local users, held, kept, listed = {}, 0, 0, {}
local function list(user, id)
  listed[user] = listed[user] or {}
  listed[user][#listed[user] + 1] = id
end
local all_holds = redis.call('HGETALL', HOLDS)
for i = 1, #all_holds, 2 do
  local qty, expires, _, team, _, user = parse_hold(all_holds[i + 1])
  held, kept = held + qty, kept + 1
  users[user] = (users[user] or 0) + qty
  list(user, all_holds[i])
  -- the expiry set may have lost entries too: a hold must still expire
  if team == '' then redis.call('ZADD', EXPIRY, expires, all_holds[i]) end
end

redis.call('DEL', ORDERS, USERS)
local sold = 0
for i = 2, #ARGV do
  local order = cjson.decode(ARGV[i])
  redis.call('HSET', ORDERS, order.id, ARGV[i])
  sold = sold + order.qty
  users[order.user] = (users[order.user] or 0) + order.qty
  list(order.user, order.id)
end
for user, units in pairs(users) do redis.call('HSET', USERS, user, units) end
for user, ids in pairs(listed) do redis.call('HSET', MINE, 'h:' .. user, table.concat(ids, ',')) end
local total = tonumber(redis.call('HGET', SALE, 'total'))
-- below zero means more was sold than the sale ever had: left for the operator to see
local available = total - held - sold
local seq = tonumber(redis.call('HGET', SALE, 'seq') or '0')
redis.call('HSET', SALE, 'available', available, 'held', held, 'sold', sold, 'seq', math.max(seq, tonumber(spec.seq or 0)))
if redis.call('HGET', SALE, 'state') == 'frozen' then redis.call('HSET', SALE, 'state', spec.state or '') end
announce_available(math.max(available, 0))
-- a sale over and settled has its keys expire (sale_retention_s): the keys made anew keep it
local ttl = redis.call('PTTL', SALE)
if ttl > 0 then
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ttl) end
end
return {available, held, sold, total, kept}
