-- A poll's tallies changed since they were last published: publish them now if the room's
-- tally gate is free (SET NX PX), so the last change always goes out, at most one poll_tally
-- per gate ms room-wide, whichever process asks.
-- KEYS[1] the poll's hash   KEYS[2] the room's tally gate
-- ARGV[1] gate ms
-- Returns {"publish", seq, votes, tally 0, tally 1, ...} | {"wait"} (the gate is taken: try at
--   the next tick) | {"done"} (nothing unpublished, or the poll is closed or gone: its
--   poll_closed carries the final tallies)
if redis.call('EXISTS', KEYS[1]) == 0 then return {'done'} end
local p = redis.call('HMGET', KEYS[1], 'state', 'seq', 'sent', 'n', 'votes')
local seq = tonumber(p[2])
if p[1] ~= 'open' or tonumber(p[3]) >= seq then return {'done'} end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', tonumber(ARGV[1])) then return {'wait'} end
redis.call('HSET', KEYS[1], 'sent', seq)
local out = {'publish', seq, tonumber(p[5])}
for i = 0, tonumber(p[4]) - 1 do out[#out + 1] = tonumber(redis.call('HGET', KEYS[1], 't' .. i)) end
return out
