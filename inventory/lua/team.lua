-- Group buying: open a team, or join one with its share code. Every member holds units at
-- the group price; the hold waits for the team, not for a payment (members paid on joining).
-- When the team reaches its size, all its holds become orders at once; when its deadline
-- passes first, sweep.lua releases them all.
--
-- Members pay before they are admitted, and a refusal must not cost them anything: the app
-- first asks with ARGV[7] = "check" (every refusal decided now, nothing changed), then takes
-- the payment, then asks again with the payment's attempt id. That call spends the attempt
-- atomically with the membership (IDEM "p:<attempt>" = "used", TEAMS "<code>:p:<user>" =
-- attempt, for the refund if the team fails) and refuses an attempt the app voided before
-- refunding it ("void"): a payment pays one membership, or is given back, never both.
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV[1] "open" or "join"   ARGV[2] team code (the new team's, for "open")   ARGV[3] user id
-- ARGV[4] quantity           ARGV[5] idempotency key ("" for none)
-- ARGV[6] the payment attempt that pays this member ("" for none: nothing is tracked)
-- ARGV[7] "check": decide, change nothing ("ok" when the member would be admitted)
-- Returns: {code, hold id, team code, deadline_ms, members, size, completed orders, amount, paid}
--   code: "joined" or "completed" (this member made the team whole; completed orders is then
--   a list of order JSON, one per member), "ok" (a check), or a refusal: the reserve.lua
--   codes, and "not_group_sale" "team_not_found" "team_closed" "already_in_team"
--   "team_exists" "payment_failed" (ARGV[6] was voided)
--   amount: what this member pays (cents); paid: 1 when ARGV[6] pays this membership
-- A key answered before gets its first answer again (the same hold and team, with the team's
-- members now), in check calls too, and spends nothing. For "open" the code given does not
-- matter then: a team's code is the server's choice, not a field of the request.

local op, code, user, qty, key = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local attempt = ARGV[6] or ''
local checking = ARGV[7] == 'check'
local now = now_ms()
local function refused(why) return {why, '', code, 0, 0, 0, {}, 0, 0} end
-- 1 when this call's payment attempt pays the user's membership of team c
local function pays(c)
  if attempt == '' then return 0 end
  return redis.call('HGET', TEAMS, c .. ':p:' .. user) == attempt and 1 or 0
end

if key ~= '' then
  local seen = redis.call('HGET', IDEM, idem_field(user, key))
  if seen then
    -- "qty|hold|deadline|code" for a join, "...|code|open" for an open; a reservation's record
    -- has no code: another command, so "duplicate"
    local q, h, _, c, kind = string.match(seen, '^(%d+)|([^|]+)|(%d+)|([^|]+)|?(%a*)$')
    if not q or tonumber(q) ~= qty or (kind == 'open') ~= (op == 'open')
        or (op == 'join' and c ~= code) then
      return refused('duplicate')
    end
    local state, deadline, size, count, price = string.match(redis.call('HGET', TEAMS, c) or '',
      '^(%a+)|(%d+)|(%d+)|(%d+)|(%d+)$')
    local again = state == 'complete' and 'completed' or 'joined'
    return {again, h, c, tonumber(deadline or 0), tonumber(count or 0), tonumber(size or 0), {},
      qty * tonumber(price or 0), pays(c)}
  end
end

local group_size, group_price, team_ms = unpack(redis.call(
  'HMGET', SALE, 'group_size', 'group_price', 'team_ms'))
if not group_size then return refused('unknown_sale') end
if tonumber(group_size) < 2 then return refused('not_group_sale') end

local deadline, size, count, price
if op == 'open' then
  if redis.call('HEXISTS', TEAMS, code) == 1 then return refused('team_exists') end
  deadline, size, count, price = now + tonumber(team_ms), tonumber(group_size), 0, tonumber(group_price)
else
  local state
  state, deadline, size, count, price = string.match(redis.call('HGET', TEAMS, code) or '',
    '^(%a+)|(%d+)|(%d+)|(%d+)|(%d+)$')
  if not state then return refused('team_not_found') end
  deadline, size, count, price = tonumber(deadline), tonumber(size), tonumber(count), tonumber(price)
  if state ~= 'open' or deadline <= now then return refused('team_closed') end
  if redis.call('HEXISTS', TEAMS, code .. ':u:' .. user) == 1 then return refused('already_in_team') end
end

local why, _ = refusal(now, user, qty)
if why then return refused(why) end
local amount = qty * price
if checking then return {'ok', '', code, deadline, count, size, {}, amount, 0} end
-- spend the payment, unless the app voided it (it is refunding it)
if attempt ~= '' and redis.call('HSETNX', IDEM, 'p:' .. attempt, 'used') == 0 then
  return refused('payment_failed')
end

local hold_id = take(now, qty, deadline, price, code, key, user, false)
count = count + 1
local holds = redis.call('HGET', TEAMS, code .. ':holds')
holds = holds and (holds .. ',' .. hold_id) or hold_id
redis.call('HSET', TEAMS, code .. ':holds', holds, code .. ':u:' .. user, hold_id)
if attempt ~= '' then redis.call('HSET', TEAMS, code .. ':p:' .. user, attempt) end
if key ~= '' then
  local record = qty .. '|' .. hold_id .. '|' .. deadline .. '|' .. code
  if op == 'open' then record = record .. '|open' end
  redis.call('HSET', IDEM, idem_field(user, key), record)
end
local paid = attempt ~= '' and 1 or 0

if count < size then
  redis.call('HSET', TEAMS, code, 'open|' .. deadline .. '|' .. size .. '|' .. count .. '|' .. price)
  redis.call('ZADD', TEAM_DEADLINES, deadline, code)
  return {'joined', hold_id, code, deadline, count, size, {}, amount, paid}
end

redis.call('HSET', TEAMS, code, 'complete|' .. deadline .. '|' .. size .. '|' .. count .. '|' .. price)
redis.call('ZREM', TEAM_DEADLINES, code)
local orders = {}
for member in string.gmatch(holds, '[^,]+') do
  local q, _, p, t, k, u = parse_hold(redis.call('HGET', HOLDS, member))
  make_order(member, q, p, t, k, u, '', 0, now)
  orders[#orders + 1] = redis.call('HGET', ORDERS, member)
end
return {'completed', hold_id, code, deadline, count, size, orders, amount, paid}
