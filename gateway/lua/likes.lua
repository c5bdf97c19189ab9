-- Add a process's likes of one tick to a room's total and publish the new total.
--
-- KEYS[1]  state hash (field "likes")
-- ARGV[1]  channel    ARGV[2]  "PUBLISH" or "SPUBLISH"    ARGV[3]  likes to add (> 0)
--
-- Publishes: "0|{"type":"likes","total":N}" (seq 0: likes are a counter, not history).
-- Returns: the new total.

local total = redis.call('HINCRBY', KEYS[1], 'likes', ARGV[3])
redis.call(ARGV[2], ARGV[1], '0|{"type":"likes","total":' .. total .. '}')
return total
