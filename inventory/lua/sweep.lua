-- The periodic work of one sale; safe to run from every process at once (each expired hold
-- and failed team is handled by exactly one call, and each announcement returned once).
--   1. Holds past their expiry give their units back.
--   2. Teams past their deadline without enough members fail: their holds are released.
--   3. The sale's phase is compared with the last one announced; a change is returned once.
--   4. The units left are returned for a stock update when they changed and the last update
--      is at least ARGV[2] ms old (coalescing: at most 1000/ARGV[2] updates a second).
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV[1] most holds (and teams) handled per call   ARGV[2] stock update interval (ms)
-- ARGV[3] countdown: announce every second this many ms before the start
-- Returns: {phase, previous, stock, available, held, sold, total, now, expired, failed, seq}
--   phase: "scheduled" | "countdown:<seconds>" | "live" | "sold_out" | "ended" | "frozen"
--   previous: the phase announced before, when this call is the one that saw it change;
--             else equal to phase (the change was announced by an earlier call)
--   stock: the units left to announce, or -1
--   expired: flat list of hold id, user id, quantity
--   seq: the sale's hold counter (with sold and total, it never goes down unless Redis lost
--        writes: the app watches it to detect a failover that lost data)
--   failed: flat list per failed team: code, member count n, then n triples
--           hold id, user id, amount paid (cents)
--   Returns {"unknown_sale"} when the sale does not exist.

local limit, interval, countdown = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
if redis.call('EXISTS', SALE) == 0 then return {'unknown_sale'} end

local expired = {}
for _, hold_id in ipairs(redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now, 'LIMIT', 0, limit)) do
  local rec = redis.call('HGET', HOLDS, hold_id)
  if rec then
    local qty, _, _, _, _, user = parse_hold(rec)
    release(hold_id, qty, user)
    expired[#expired + 1] = hold_id; expired[#expired + 1] = user; expired[#expired + 1] = qty
  else
    redis.call('ZREM', EXPIRY, hold_id)
  end
end

local failed = {}
for _, code in ipairs(redis.call('ZRANGEBYSCORE', TEAM_DEADLINES, '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', TEAM_DEADLINES, code)
  local team = redis.call('HGET', TEAMS, code)
  if team and string.match(team, '^open|') then
    redis.call('HSET', TEAMS, code, 'failed' .. string.sub(team, 5))
    local members = {}
    for hold_id in string.gmatch(redis.call('HGET', TEAMS, code .. ':holds') or '', '[^,]+') do
      local rec = redis.call('HGET', HOLDS, hold_id)
      if rec then
        local qty, _, price, _, _, user = parse_hold(rec)
        release(hold_id, qty, user)
        members[#members + 1] = hold_id; members[#members + 1] = user
        members[#members + 1] = qty * price
      end
    end
    failed[#failed + 1] = code; failed[#failed + 1] = #members / 3
    for _, m in ipairs(members) do failed[#failed + 1] = m end
  end
end

local state, starts, ends, available, held, sold, total, announced, stock_announced, stock_at, seq =
  unpack(redis.call('HMGET', SALE, 'state', 'starts', 'ends', 'available', 'held', 'sold',
    'total', 'announced', 'stock_announced', 'stock_at', 'seq'))
available = tonumber(available)
local phase = phase_of(now, state or '', tonumber(starts), tonumber(ends))
local current = phase
if phase == 'not_started' then
  local left = tonumber(starts) - now
  if left <= countdown then current = 'countdown:' .. math.ceil(left / 1000) else current = 'scheduled' end
elseif phase == 'live' and available == 0 then
  current = 'sold_out'
end
local previous = current
if current ~= announced then
  redis.call('HSET', SALE, 'announced', current)
  previous = announced or ''
end

local stock = -1
if phase == 'live' and tostring(available) ~= stock_announced
    and now - tonumber(stock_at or '0') >= interval then
  redis.call('HSET', SALE, 'stock_announced', available, 'stock_at', now)
  stock = available
end
return {current, previous, stock, available, tonumber(held), tonumber(sold), tonumber(total), now,
  expired, failed, tonumber(seq)}
