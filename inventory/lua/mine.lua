-- What one user has in a sale now, for the welcome's `you`: their open holds, their orders,
-- their coupons and the teams they are in. Reads only.
--
-- The lists in MINE (lib.lua) say where to look; the holds, orders, coupons and teams hashes
-- say what is true, so an id whose hold was given back (cancelled, expired, its team failed)
-- is skipped. A hold past its expiry (or a team place past its deadline) is not open even
-- when no sweep has given its units back yet: it is left out too.
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV[1] user id
-- Returns: {} when the user has nothing listed in the sale, else
--   {product id, holds, orders, coupons, teams}, each list flat:
--   holds: hold id, quantity, expires_ms (a team place: the team's deadline), unit price
--          (cents), team code ("" for none), per open hold
--   orders: order JSON (lib.lua, make_order), per order
--   coupons: coupon id, discount (cents), "new" or "used", per coupon
--   teams: code, the user's hold id in it, state ("open" | "complete"), deadline_ms, size,
--          members, unit price (cents), per team

local user = ARGV[1]
local listed_holds, listed_coupons = unpack(redis.call('HMGET', MINE, 'h:' .. user, 'c:' .. user))
if not listed_holds and not listed_coupons then return {} end
local now = now_ms()

local holds, orders, coupons, teams = {}, {}, {}, {}
local team_of = {} -- team code -> the user's hold id in it, in the order first seen
local codes = {}
local function in_team(code, hold_id)
  if code ~= '' and not team_of[code] then
    team_of[code] = hold_id
    codes[#codes + 1] = code
  end
end

for id in string.gmatch(listed_holds or '', '[^,]+') do
  local rec = redis.call('HGET', HOLDS, id)
  if rec then
    local qty, expires, price, team = parse_hold(rec)
    if expires > now then
      holds[#holds + 1] = id; holds[#holds + 1] = qty; holds[#holds + 1] = expires
      holds[#holds + 1] = price; holds[#holds + 1] = team
      in_team(team, id)
    end
  else
    local order = redis.call('HGET', ORDERS, id)
    if order then
      orders[#orders + 1] = order
      in_team(cjson.decode(order).team, id)
    end
  end
end

for id in string.gmatch(listed_coupons or '', '[^,]+') do
  local c = redis.call('HGET', COUPONS, 'c:' .. id)
  if c then
    local discount, state = string.match(c, '^(%d+)|([^|]*)|')
    coupons[#coupons + 1] = id; coupons[#coupons + 1] = tonumber(discount)
    -- "used:<hold id>" once it paid an order (confirm.lua)
    coupons[#coupons + 1] = state == 'new' and 'new' or 'used'
  end
end

for _, code in ipairs(codes) do
  local state, deadline, size, count, price = string.match(redis.call('HGET', TEAMS, code) or '',
    '^(%a+)|(%d+)|(%d+)|(%d+)|(%d+)$')
  if state then
    teams[#teams + 1] = code; teams[#teams + 1] = team_of[code]; teams[#teams + 1] = state
    teams[#teams + 1] = tonumber(deadline); teams[#teams + 1] = tonumber(size)
    teams[#teams + 1] = tonumber(count); teams[#teams + 1] = tonumber(price)
  end
end

return {redis.call('HGET', SALE, 'product') or '', holds, orders, coupons, teams}
