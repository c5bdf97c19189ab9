-- Take the tools whose next step is due, each for a lease: a process that takes one handles it
-- (and sets its next due time); the others skip it until the lease runs out (a process that
-- died holding it: another takes it then).
-- KEYS[1] the due set (member "<room id>/<tool id>", score: due, ms on this shard's clock)
-- ARGV[1] lease ms, ARGV[2] most members taken
-- Returns {now_ms, member...}
local now = now_ms()
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local lease_until = now + tonumber(ARGV[1])
for _, member in ipairs(members) do
  redis.call('ZADD', KEYS[1], 'XX', lease_until, member)
end
local out = {now}
for _, member in ipairs(members) do out[#out + 1] = member end
return out
