-- Renew a node name's claim if it is ours; take it back if it vanished (a promoted replica
-- that never got the key): the name is still ours, as nobody else holds it.
--
-- KEYS[1]  the name's claim (string: the holder's token)
-- ARGV[1]  this process's token    ARGV[2]  the claim's TTL (ms)
--
-- Returns: 1 held; 0 another token holds it.

local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if held == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
