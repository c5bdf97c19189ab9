-- Group buying: open a team, or join one with its share code. Every member holds units at
-- the group price; the hold waits for the team, not for a payment (members paid on joining).
-- When the team reaches its size, all its holds become orders at once; when its deadline
-- passes first, sweep.lua releases them all.
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV[1] "open" or "join"   ARGV[2] team code (a new one for "open")   ARGV[3] user id
-- ARGV[4] quantity           ARGV[5] idempotency key ("" for none)
-- Returns: {code, hold id, team code, deadline_ms, members, size, completed orders}
--   code: "joined" or "completed" (this member made the team whole; completed orders is then
--   a list of order JSON, one per member), or a refusal: the reserve.lua codes, and
--   "not_group_sale" "team_not_found" "team_closed" "already_in_team" "team_exists"

local op, code, user, qty, key = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local now = now_ms()
local function refused(why) return {why, '', code, 0, 0, 0, {}} end

if key ~= '' then
  local seen = redis.call('HGET', IDEM, idem_field(user, key))
  if seen then
    local q, h, _, c = string.match(seen, '^(%d+)|([^|]+)|(%d+)|?(.*)$')
    if tonumber(q) ~= qty or c ~= code then return refused('duplicate') end
    local state, deadline, size, count = string.match(redis.call('HGET', TEAMS, c) or '',
      '^(%a+)|(%d+)|(%d+)|(%d+)|')
    local again = state == 'complete' and 'completed' or 'joined'
    return {again, h, c, tonumber(deadline or 0), tonumber(count or 0), tonumber(size or 0), {}}
  end
end

local group_size, group_price, team_ms = unpack(redis.call(
  'HMGET', SALE, 'group_size', 'group_price', 'team_ms'))
if not group_size then return refused('unknown_sale') end
if tonumber(group_size) < 2 then return refused('not_group_sale') end

local deadline, size, count, price
if op == 'open' then
  if redis.call('HEXISTS', TEAMS, code) == 1 then return refused('team_exists') end
  deadline, size, count, price = now + tonumber(team_ms), tonumber(group_size), 0, group_price
else
  local state
  state, deadline, size, count, price = string.match(redis.call('HGET', TEAMS, code) or '',
    '^(%a+)|(%d+)|(%d+)|(%d+)|(%d+)$')
  if not state then return refused('team_not_found') end
  deadline, size, count = tonumber(deadline), tonumber(size), tonumber(count)
  if state ~= 'open' or deadline <= now then return refused('team_closed') end
  if redis.call('HEXISTS', TEAMS, code .. ':u:' .. user) == 1 then return refused('already_in_team') end
end

local why, _ = refusal(now, user, qty)
if why then return refused(why) end

local hold_id = take(now, qty, deadline, price, code, key, user, false)
count = count + 1
local holds = redis.call('HGET', TEAMS, code .. ':holds')
holds = holds and (holds .. ',' .. hold_id) or hold_id
redis.call('HSET', TEAMS, code .. ':holds', holds, code .. ':u:' .. user, hold_id)
if key ~= '' then
  redis.call('HSET', IDEM, idem_field(user, key), qty .. '|' .. hold_id .. '|' .. deadline .. '|' .. code)
end

if count < size then
  redis.call('HSET', TEAMS, code, 'open|' .. deadline .. '|' .. size .. '|' .. count .. '|' .. price)
  redis.call('ZADD', TEAM_DEADLINES, deadline, code)
  return {'joined', hold_id, code, deadline, count, size, {}}
end

redis.call('HSET', TEAMS, code, 'complete|' .. deadline .. '|' .. size .. '|' .. count .. '|' .. price)
redis.call('ZREM', TEAM_DEADLINES, code)
local orders = {}
for member in string.gmatch(holds, '[^,]+') do
  local q, _, p, t, k, u = parse_hold(redis.call('HGET', HOLDS, member))
  make_order(member, q, p, t, k, u, '', 0, now)
  orders[#orders + 1] = redis.call('HGET', ORDERS, member)
end
return {'completed', hold_id, code, deadline, count, size, orders}
