-- A signed-in user's vote, decided atomically: the poll is open and the shard's clock is before
-- its close; the option is an index 0..n-1. A first vote counts the voter; with allow_change a
-- different option moves the vote (one tally down, the other up, in this one script); the
-- same option again changes nothing (an ack); without allow_change a different option is
-- already_voted. A refusal changes nothing.
-- A change bumps the poll's seq; then, if the room's tally gate is free (SET NX PX: at most one
-- poll_tally per gate ms room-wide, whichever process), the caller publishes the tallies now
-- (sent = seq), else a later tick does (poll_flush.lua).
-- KEYS[1] the poll's hash   KEYS[2] the votes (hash: user -> option)   KEYS[3] the room's tally gate
-- ARGV[1] user id   ARGV[2] option (decimal text, as sent)   ARGV[3] gate ms
-- Returns {"ok", option, changed (0/1), publish (0/1), seq, votes, tally 0, tally 1, ...} or a
--   refusal: poll_not_found, poll_closed, invalid_option, already_voted (with the option voted)
if redis.call('EXISTS', KEYS[1]) == 0 then return refuse('poll_not_found') end
local p = redis.call('HMGET', KEYS[1], 'state', 'closes_at', 'n', 'allow_change')
local n = tonumber(p[3])
if p[1] ~= 'open' or now_ms() >= tonumber(p[2]) then return refuse('poll_closed') end
local raw = ARGV[2]
if not string.match(raw, '^%d+$') or tonumber(raw) >= n then return refuse('invalid_option') end
local option = string.format('%d', tonumber(raw))
local previous = redis.call('HGET', KEYS[2], ARGV[1])
local changed = 1
if previous == option then
  changed = 0
elseif previous then
  if p[4] ~= '1' then return refuse('already_voted', previous) end
  redis.call('HINCRBY', KEYS[1], 't' .. previous, -1)
  redis.call('HINCRBY', KEYS[1], 't' .. option, 1)
  redis.call('HSET', KEYS[2], ARGV[1], option)
else
  redis.call('HINCRBY', KEYS[1], 't' .. option, 1)
  redis.call('HINCRBY', KEYS[1], 'votes', 1)
  redis.call('HSET', KEYS[2], ARGV[1], option)
end
local publish = 0
local seq
if changed == 1 then
  seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  if redis.call('SET', KEYS[3], '1', 'NX', 'PX', tonumber(ARGV[3])) then
    redis.call('HSET', KEYS[1], 'sent', seq)
    publish = 1
  end
else
  seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
end
local out = {'ok', tonumber(option), changed, publish, seq, tonumber(redis.call('HGET', KEYS[1], 'votes'))}
for i = 0, n - 1 do out[#out + 1] = tonumber(redis.call('HGET', KEYS[1], 't' .. i)) end
return out
