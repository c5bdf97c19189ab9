-- A winner claims the prize, once: the first claim makes its order (price 0; a coupon prize
-- carries the coupon ARGV[2]); claiming again answers the same order, even after the claim
-- window. The app first asks with ARGV[3] = "check" (every refusal decided, nothing changed),
-- then gets the coupon (a coupon prize), then claims.
-- KEYS[1] the draw's hash   KEYS[2] winner -> place (hash)   KEYS[3] winner -> order JSON (hash)
-- ARGV[1] user id   ARGV[2] coupon id ("" none)   ARGV[3] "check" or "claim"
-- Returns {"ok"} (a check) | {"claimed", order JSON, 1 (made now) / 0 (before)} | a refusal:
--   draw_not_found, not_a_winner (not drawn, or not yet closed), claim_expired
local function int(n) return string.format('%.0f', n) end
local user, coupon, mode = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', KEYS[1]) == 0 then return refuse('draw_not_found') end
local had = redis.call('HGET', KEYS[3], user)
if had then return {'claimed', had, 0} end
local place = redis.call('HGET', KEYS[2], user)
if not place then return refuse('not_a_winner') end
local d = redis.call('HMGET', KEYS[1], 'claim_by', 'claims_state', 'id')
local now = now_ms()
if d[2] ~= 'open' or now >= tonumber(d[1]) then return refuse('claim_expired') end
if mode == 'check' then return {'ok'} end
local id = d[3]
local order = '{"id":' .. cjson.encode(id .. '.' .. place) .. ',"sale":' .. cjson.encode(id) ..
  ',"user":' .. cjson.encode(user) .. ',"qty":1,"unit_price":0,"discount":0,"amount":0,"coupon":' ..
  cjson.encode(coupon) .. ',"team":"","key":' .. cjson.encode('draw:' .. id .. ':' .. place) ..
  ',"ts":' .. int(now) .. '}'
redis.call('HSET', KEYS[3], user, order)
return {'claimed', order, 1}
