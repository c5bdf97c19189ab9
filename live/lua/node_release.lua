-- Release a node name's claim, only if it is still ours (never another node's claim).
--
-- KEYS[1]  the name's claim (string: the holder's token)
-- ARGV[1]  this process's token
--
-- Returns: 1 released; 0 not ours (or gone).

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
