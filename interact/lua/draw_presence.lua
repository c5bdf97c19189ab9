-- Record that users are in the room (each process's tick, for its own connections): first seen
-- (kept) and last seen (moved), on the shard's clock, while the draw is open. The close applies
-- present_at_close and min_watch_s with them, whichever process each user is on.
-- KEYS[1] the draw's hash   KEYS[2] first seen (zset, ms)   KEYS[3] last seen (zset, ms)
-- ARGV[1...] user ids
-- Returns {"recorded", users} or {"state", state} (not open: nothing recorded)
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'open' then return {'state', state or ''} end
local now = now_ms()
for i = 1, #ARGV do
  redis.call('ZADD', KEYS[2], 'NX', now, ARGV[i])
  redis.call('ZADD', KEYS[3], now, ARGV[i])
end
return {'recorded', #ARGV}
