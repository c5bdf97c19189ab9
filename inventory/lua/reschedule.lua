-- After a sweep: when each swept sale is next due, as its sweep computed it. A sale whose
-- lease is no longer the caller's (it changed after the lease, or the lease ran out and
-- another process took it) is left as it is: due already, or another sweeper's to schedule.
--
-- KEYS: as due.lua (the active set, the due sorted set, the leases hash)
-- ARGV: triples sale id, lease token (from due.lua), next due time (Redis ms)
-- Returns: how many sales were scheduled

local due, leases = KEYS[2], KEYS[3]
local scheduled = 0
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('HGET', leases, id) == ARGV[i + 1] then
    redis.call('HDEL', leases, id)
    redis.call('ZADD', due, 'XX', ARGV[i + 2], id)
    scheduled = scheduled + 1
  end
end
return scheduled
