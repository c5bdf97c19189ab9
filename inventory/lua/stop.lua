-- Stop a sale early: no new holds from now; existing holds may still be confirmed or expire.
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV: none
-- Returns: {code, ends_at_ms}: "stopped", "already_ended" or "unknown_sale"

local now = now_ms()
local state, ends = unpack(redis.call('HMGET', SALE, 'state', 'ends'))
if not ends then return {'unknown_sale', 0} end
if state == 'stopped' or tonumber(ends) <= now then return {'already_ended', tonumber(ends)} end
redis.call('HSET', SALE, 'state', 'stopped', 'ends', now)
return {'stopped', now}
