-- Close a poll, once, whichever process asks: at its close time (ARGV[1] = "due": before it,
-- nothing changes) or early (ARGV[1] = "now", a host's close). The closing call gets the final
-- tallies; every later one gets the state.
-- KEYS[1] the poll's hash   KEYS[2] the room's open tools (set)
-- ARGV[1] "due" or "now"
-- Returns {"closed", closed_at_ms, votes, tally 0, tally 1, ...} | {"later", closes_at_ms} |
--   {"state", state} (closed before: nothing to do) | a refusal (poll_not_found)
if redis.call('EXISTS', KEYS[1]) == 0 then return refuse('poll_not_found') end
local p = redis.call('HMGET', KEYS[1], 'state', 'closes_at', 'n', 'votes', 'seq', 'id')
if p[1] ~= 'open' then return {'state', p[1]} end
local now = now_ms()
if ARGV[1] == 'due' and now < tonumber(p[2]) then return {'later', tonumber(p[2])} end
redis.call('HSET', KEYS[1], 'state', 'closed', 'closed_at', now, 'sent', p[5])
redis.call('SREM', KEYS[2], p[6])
local out = {'closed', now, tonumber(p[4])}
for i = 0, tonumber(p[3]) - 1 do out[#out + 1] = tonumber(redis.call('HGET', KEYS[1], 't' .. i)) end
return out
