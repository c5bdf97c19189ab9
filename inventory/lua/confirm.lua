-- Confirm a hold (its payment went through): it becomes an order, recorded in the orders
-- hash and appended to the orders stream for the ledger. Confirming an order again answers
-- as the first time did.
--
-- A refusal must not cost the buyer anything: the app first asks with ARGV[6] = "check"
-- (every refusal decided now, nothing changed), then takes the payment, then confirms with the
-- payment's attempt id. The confirm spends the attempt atomically with the order (IDEM
-- "p:<attempt>" = "used") and refuses an attempt the app voided before refunding it ("void").
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV[1] hold id   ARGV[2] user id   ARGV[3] coupon id ("" for none)
-- ARGV[4] the amount the caller charged, in cents (-1: do not check)
-- ARGV[5] the payment attempt that pays the order ("" for none: nothing is tracked)
-- ARGV[6] "check": decide, change nothing ("ok" and the amount when it would confirm)
-- Returns: {code, amount_cents, order JSON or "", paid}
--   "confirmed"; "ok" (a check); or "hold_not_found" "not_your_hold" "hold_expired" (the
--   units went back) "in_team" (a team's holds confirm together) "coupon_invalid"
--   "amount_changed" "frozen" "payment_failed" (ARGV[5] was voided)
--   paid: 1 when the order is paid by ARGV[5] (spent now, or by an earlier confirm)

local hold_id, user, coupon, charged = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local attempt = ARGV[5] or ''
local checking = ARGV[6] == 'check'
local now = now_ms()
if redis.call('HGET', SALE, 'state') == 'frozen' then return {'frozen', 0, '', 0} end
local rec = redis.call('HGET', HOLDS, hold_id)
if not rec then
  local order = redis.call('HGET', ORDERS, hold_id)
  if order and cjson.decode(order).user == user then
    local paid = attempt ~= '' and redis.call('HGET', IDEM, 'p:' .. attempt) == 'used' and 1 or 0
    return {'confirmed', cjson.decode(order).amount, order, paid}
  end
  return {'hold_not_found', 0, '', 0}
end
local qty, expires, price, team, key, owner = parse_hold(rec)
if owner ~= user then return {'not_your_hold', 0, '', 0} end
if team ~= '' then return {'in_team', 0, '', 0} end
if expires <= now then
  if not checking then release(hold_id, qty, owner) end -- a check leaves it to the sweep
  return {'hold_expired', 0, '', 0}
end
local discount = 0
if coupon ~= '' then
  local c = redis.call('HGET', COUPONS, 'c:' .. coupon)
  local d, state, holder
  if c then d, state, holder = string.match(c, '^(%d+)|([^|]*)|(.*)$') end
  if not c or holder ~= user or state ~= 'new' then return {'coupon_invalid', 0, '', 0} end
  discount = tonumber(d)
end
local amount = math.max(0, qty * price - discount)
if charged >= 0 and charged ~= amount then return {'amount_changed', 0, '', 0} end
if checking then return {'ok', amount, '', 0} end
-- spend the payment, unless the app voided it (it is refunding it)
if attempt ~= '' and redis.call('HSETNX', IDEM, 'p:' .. attempt, 'used') == 0 then
  return {'payment_failed', 0, '', 0}
end
if coupon ~= '' then
  redis.call('HSET', COUPONS, 'c:' .. coupon, discount .. '|used:' .. hold_id .. '|' .. user)
end
make_order(hold_id, qty, price, '', key, user, coupon, discount, now)
return {'confirmed', amount, redis.call('HGET', ORDERS, hold_id), attempt ~= '' and 1 or 0}
