-- Confirm a hold (its payment went through): it becomes an order, recorded in the orders
-- hash and appended to the orders stream for the ledger. Confirming an order again answers
-- as the first time did.
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV[1] hold id   ARGV[2] user id   ARGV[3] coupon id ("" for none)
-- ARGV[4] the amount the caller charged, in cents (-1: do not check)
-- Returns: {code, amount_cents, order JSON or ""}
--   "confirmed"; or "hold_not_found" "not_your_hold" "hold_expired" (the units went back)
--   "in_team" (a team's holds confirm together) "coupon_invalid" "amount_changed" "frozen"

local hold_id, user, coupon, charged = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
if redis.call('HGET', SALE, 'state') == 'frozen' then return {'frozen', 0, ''} end
local rec = redis.call('HGET', HOLDS, hold_id)
if not rec then
  local order = redis.call('HGET', ORDERS, hold_id)
  if order and cjson.decode(order).user == user then
    return {'confirmed', cjson.decode(order).amount, order}
  end
  return {'hold_not_found', 0, ''}
end
local qty, expires, price, team, key, owner = parse_hold(rec)
if owner ~= user then return {'not_your_hold', 0, ''} end
if team ~= '' then return {'in_team', 0, ''} end
if expires <= now then
  release(hold_id, qty, owner)
  return {'hold_expired', 0, ''}
end
local discount = 0
if coupon ~= '' then
  local c = redis.call('HGET', COUPONS, 'c:' .. coupon)
  local d, state, holder
  if c then d, state, holder = string.match(c, '^(%d+)|([^|]*)|(.*)$') end
  if not c or holder ~= user or state ~= 'new' then return {'coupon_invalid', 0, ''} end
  discount = tonumber(d)
end
if charged >= 0 and charged ~= math.max(0, qty * price - discount) then
  return {'amount_changed', 0, ''}
end
if coupon ~= '' then
  redis.call('HSET', COUPONS, 'c:' .. coupon, discount .. '|used:' .. hold_id .. '|' .. user)
end
local amount = make_order(hold_id, qty, price, '', key, user, coupon, discount, now)
return {'confirmed', amount, redis.call('HGET', ORDERS, hold_id)}
