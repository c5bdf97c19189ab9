-- The periodic work of one sale; safe to run from every process at once (each expired hold
-- and failed team is handled by exactly one call, and each announcement returned once).
--   1. Holds past their expiry give their units back.
--   2. Teams past their deadline without enough members fail: their holds are released.
--   3. The sale's phase is compared with the last one announced; a change is returned once.
--   4. The units left are returned for a stock update when they changed and the last update
--      is at least ARGV[2] ms old (coalescing: at most 1000/ARGV[2] updates a second).
--   5. When the next sweep is due: the earliest of the next hold expiry, the next team
--      deadline, the next countdown second or the start, the end, the next stock update
--      when one is pending, and now + ARGV[4] (a sweep of an idle sale now and then).
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV[1] most holds (and teams) handled per call   ARGV[2] stock update interval (ms)
-- ARGV[3] countdown: announce every second this many ms before the start
-- ARGV[4] the longest an active sale goes without a sweep (ms; default 30000)
-- Returns: {phase, previous, stock, available, held, sold, total, now, expired, failed, seq,
--           due}
--   phase: "scheduled" | "countdown:<seconds>" | "live" | "sold_out" | "ended" | "frozen"
--   previous: the phase announced before, when this call is the one that saw it change;
--             else equal to phase (the change was announced by an earlier call)
--   stock: the units left to announce, or -1
--   expired: flat list of hold id, user id, quantity
--   seq: the sale's hold counter (with sold and total, it never goes down unless Redis lost
--        writes: the app watches it to detect a failover that lost data)
--   failed: flat list per failed team: code, member count n, then n triples
--           hold id, user id, amount paid (cents)
--   due: when the sale's next sweep is due (Redis ms)
--   Returns {"unknown_sale"} when the sale does not exist.

local limit, interval, countdown = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local idle = tonumber(ARGV[4] or '30000')
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
-- what the stock gauge shows: units left and units sold (a confirm turns a held unit into a
-- sold one and leaves `available` as it was: the gauge must still say so)
local shown = available .. '|' .. sold
local stock_pending = phase == 'live' and shown ~= stock_announced
if stock_pending and now - tonumber(stock_at or '0') >= interval then
  redis.call('HSET', SALE, 'stock_announced', shown, 'stock_at', now)
  stock, stock_pending = available, false
end

local due = now + idle
local function sooner(at)
  if at and tonumber(at) < due then due = tonumber(at) end
end
-- (what this call left past due, beyond ARGV[1], makes the sale due at once)
sooner(redis.call('ZRANGE', EXPIRY, 0, 0, 'WITHSCORES')[2])
sooner(redis.call('ZRANGE', TEAM_DEADLINES, 0, 0, 'WITHSCORES')[2])
if phase == 'not_started' then
  local left = tonumber(starts) - now
  if left > countdown then
    sooner(tonumber(starts) - countdown)
  else  -- the second shown changes when left reaches the next whole second down
    sooner(tonumber(starts) - 1000 * (math.ceil(left / 1000) - 1))
  end
elseif phase == 'live' then
  sooner(tonumber(ends))
  if stock_pending then sooner(tonumber(stock_at or '0') + interval) end
end
return {current, previous, stock, available, tonumber(held), tonumber(sold), tonumber(total), now,
  expired, failed, tonumber(seq), due}
