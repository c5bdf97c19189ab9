-- Create a sale's hash (its settings and counters), unless the sale exists.
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV: field, value pairs: id room product price limit starts ends hold_ms total
--   group_size group_price team_ms channel (available = total, held = sold = seq = 0)
-- Returns: "created" or "exists"

if redis.call('EXISTS', SALE) == 1 then return 'exists' end
redis.call('HSET', SALE, unpack(ARGV))
local total = redis.call('HGET', SALE, 'total')
redis.call('HSET', SALE, 'available', total, 'held', 0, 'sold', 0, 'seq', 0, 'state', '')
return 'created'
