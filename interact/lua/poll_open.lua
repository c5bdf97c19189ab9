-- Open a poll (or put back one a Redis lost, from its record: ARGV[8] = "restore"). Opening
-- again answers as the first time did and changes nothing.
-- KEYS[1] the poll's hash   KEYS[2] the room's open tools (set)   KEYS[3] the votes (hash: user -> option)
-- ARGV[1] poll id   ARGV[2] room id   ARGV[3] question   ARGV[4] options (JSON list)
-- ARGV[5] number of options   ARGV[6] allow_change (1/0)   ARGV[7] duration ms
-- ARGV[8] "" (new) or "restore", then for a restore: ARGV[9] opened at ms   ARGV[10] closes at ms
-- ARGV[11] state ("open" | "closed")   ARGV[12] closed at ms (0: open)
-- ARGV[13...] the votes: user, option, user, option...
-- Returns {"opened" | "exists", opened_at_ms, closes_at_ms}
if redis.call('EXISTS', KEYS[1]) == 1 then
  local t = redis.call('HMGET', KEYS[1], 'opened_at', 'closes_at')
  return {'exists', tonumber(t[1]), tonumber(t[2])}
end
local now = now_ms()
local n = tonumber(ARGV[5])
local opened, closes, state, closed_at = now, now + tonumber(ARGV[7]), 'open', 0
local tallies = {}
for i = 0, n - 1 do tallies[i] = 0 end
local votes = 0
if ARGV[8] == 'restore' then
  opened, closes, state, closed_at = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11], tonumber(ARGV[12])
  for i = 13, #ARGV - 1, 2 do
    local option = tonumber(ARGV[i + 1])
    if option and option >= 0 and option < n and tallies[option] then
      redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
      tallies[option] = tallies[option] + 1
      votes = votes + 1
    end
  end
end
local fields = {
  'id', ARGV[1], 'room_id', ARGV[2], 'question', ARGV[3], 'options', ARGV[4], 'n', n,
  'allow_change', ARGV[6], 'duration_ms', ARGV[7], 'opened_at', opened, 'closes_at', closes,
  'state', state, 'closed_at', closed_at, 'votes', votes, 'seq', 0, 'sent', 0,
}
for i = 0, n - 1 do
  fields[#fields + 1] = 't' .. i
  fields[#fields + 1] = tallies[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
if state == 'open' then redis.call('SADD', KEYS[2], ARGV[1]) end
return {'opened', opened, closes}
