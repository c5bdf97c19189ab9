-- Coupons of a sale: a host drops a batch; viewers claim them first come, first served, at
-- most one per user per batch. A claimed coupon takes its discount off one order
-- (confirm.lua marks it used).
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV[1] "drop": ARGV[2] batch id, ARGV[3] count, ARGV[4] discount (cents)
--   Returns {"dropped", count, discount}, or {"batch_exists"|"unknown_sale", 0, 0}
-- ARGV[1] "claim": ARGV[2] batch id, ARGV[3] user id
--   Returns {"claimed", coupon id, discount} (the same coupon again for a user who has one),
--   or {"coupons_gone"|"batch_not_found", "", 0}

local op, batch = ARGV[1], ARGV[2]
if op == 'drop' then
  if redis.call('EXISTS', SALE) == 0 then return {'unknown_sale', 0, 0} end
  if redis.call('HEXISTS', COUPONS, 'b:' .. batch) == 1 then return {'batch_exists', 0, 0} end
  redis.call('HSET', COUPONS, 'b:' .. batch, ARGV[3] .. '|' .. ARGV[4], 'r:' .. batch, ARGV[3])
  return {'dropped', tonumber(ARGV[3]), tonumber(ARGV[4])}
end

local user = ARGV[3]
local spec = redis.call('HGET', COUPONS, 'b:' .. batch)
if not spec then return {'batch_not_found', '', 0} end
local total, discount = string.match(spec, '^(%d+)|(%d+)$')
local mine = redis.call('HGET', COUPONS, 'u:' .. batch .. ':' .. user)
if mine then return {'claimed', mine, tonumber(discount)} end
local remaining = tonumber(redis.call('HGET', COUPONS, 'r:' .. batch))
if remaining <= 0 then return {'coupons_gone', '', 0} end
redis.call('HSET', COUPONS, 'r:' .. batch, remaining - 1)
local coupon = batch .. '.' .. (tonumber(total) - remaining + 1)
redis.call('HSET', COUPONS, 'u:' .. batch .. ':' .. user, coupon, 'c:' .. coupon, discount .. '|new|' .. user)
-- listed for the welcome's `you` (mine.lua); a user has at most one coupon per batch
local listed = redis.call('HGET', MINE, 'c:' .. user)
redis.call('HSET', MINE, 'c:' .. user, listed and (listed .. ',' .. coupon) or coupon)
return {'claimed', coupon, tonumber(discount)}
