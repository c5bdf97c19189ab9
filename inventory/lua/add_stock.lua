-- Add units to a sale (total and available grow together; the invariant holds).
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV[1] units to add (> 0)
-- Returns: {code, total, available}: "added" or "unknown_sale"

local units = tonumber(ARGV[1])
if redis.call('EXISTS', SALE) == 0 then return {'unknown_sale', 0, 0} end
local total = redis.call('HINCRBY', SALE, 'total', units)
local available = redis.call('HINCRBY', SALE, 'available', units)
if available == units then announce_available(available) end
return {'added', total, available}
