-- Claim a node name: take it if it is free, or if it is ours already (a worker restarted by
-- its supervisor gets its predecessor's token, so it need not wait for the TTL).
--
-- KEYS[1]  the name's claim (string: the holder's token)
-- ARGV[1]  this process's token    ARGV[2]  the claim's TTL (ms)
--
-- Returns: {1} when taken; {0, the holder's remaining ms} when another token holds it.

local held = redis.call('GET', KEYS[1])
if held == false or held == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1}
end
return {0, redis.call('PTTL', KEYS[1])}
