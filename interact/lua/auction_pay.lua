-- Pay for an auction offered to you. The app first asks with ARGV[2] = "check" (every refusal
-- decided now, nothing changed), then takes the payment, then spends it here with its attempt
-- id: the attempt is spent (ATTEMPTS "p:<attempt>" = "used") atomically with the sale, and an
-- attempt the app voided before refunding it ("void") is refused. Paying again answers the
-- same order.
-- KEYS[1] the auction's hash   KEYS[2] payment attempts (hash)   KEYS[3] users offered it (set)
-- KEYS[4] the room's open tools (set)
-- ARGV[1] user id   ARGV[2] "check" or "spend"   ARGV[3] the payment attempt ("" for a check)
-- ARGV[4] the amount charged, cents (a spend)
-- Returns {"ok", amount} (a check) | {"paid", order JSON, paid (1: by ARGV[3])} | a refusal:
--   auction_not_found, not_your_offer (none was made to you), offer_expired (yours lapsed),
--   payment_failed (ARGV[3] was voided, or the amount is not the offer's)
local function int(n) return string.format('%.0f', n) end
local user, mode, attempt = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', KEYS[1]) == 0 then return refuse('auction_not_found') end
local a = redis.call('HMGET', KEYS[1], 'state', 'offer_user', 'offer_amount', 'pay_by', 'order', 'winner', 'id')
local state, offer_user, amount, pay_by = a[1], a[2], tonumber(a[3]), tonumber(a[4])
if state == 'sold' and a[6] == user then
  local paid = attempt ~= '' and redis.call('HGET', KEYS[2], 'p:' .. attempt) == 'used' and 1 or 0
  return {'paid', a[5], paid}
end
local had = redis.call('SISMEMBER', KEYS[3], user) == 1
if state ~= 'offered' or offer_user ~= user then
  if had then return refuse('offer_expired') end
  return refuse('not_your_offer')
end
local now = now_ms()
if now >= pay_by then return refuse('offer_expired') end
if mode == 'check' then return {'ok', amount} end
if tonumber(ARGV[4]) ~= amount then return refuse('payment_failed') end
if attempt == '' or redis.call('HSETNX', KEYS[2], 'p:' .. attempt, 'used') == 0 then
  return refuse('payment_failed')
end
local id = a[7]
local order = '{"id":' .. cjson.encode(id .. '.won') .. ',"sale":' .. cjson.encode(id) ..
  ',"user":' .. cjson.encode(user) .. ',"qty":1,"unit_price":' .. int(amount) ..
  ',"discount":0,"amount":' .. int(amount) .. ',"coupon":"","team":"","key":' ..
  cjson.encode('auction:' .. id) .. ',"ts":' .. int(now) .. '}'
redis.call('HSET', KEYS[1], 'state', 'sold', 'winner', user, 'order', order, 'sold_at', now)
redis.call('SREM', KEYS[4], id)
return {'paid', order, 1}
