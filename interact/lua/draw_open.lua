-- Open a lucky draw (or put back one a Redis lost, from its record: ARGV[13] its open time).
-- The seed stays in the hash, secret, until the close reveals it; the commitment (SHA-256 of
-- the seed's hex text, computed by the caller) is public from the open. Opening again answers
-- as the first time did and changes nothing.
-- KEYS[1] the draw's hash   KEYS[2] the room's open tools (set)
-- ARGV[1] draw id   ARGV[2] room id   ARGV[3] prize JSON   ARGV[4] winners   ARGV[5] keyword ("" none)
-- ARGV[6] signed_in (1/0)   ARGV[7] present_at_close (1/0)   ARGV[8] min watch ms
-- ARGV[9] claim ms   ARGV[10] duration ms   ARGV[11] seed (hex)   ARGV[12] commitment (hex)
-- ARGV[13] "" (a new draw: opened now) or the restored draw's open time (ms)
-- Returns {"opened" | "exists", opened_at_ms, closes_at_ms}
if redis.call('EXISTS', KEYS[1]) == 1 then
  local t = redis.call('HMGET', KEYS[1], 'opened_at', 'closes_at')
  return {'exists', tonumber(t[1]), tonumber(t[2])}
end
local opened = now_ms()
if ARGV[13] ~= '' then opened = tonumber(ARGV[13]) end
local closes = opened + tonumber(ARGV[10])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'room_id', ARGV[2], 'prize', ARGV[3], 'winners', ARGV[4],
  'keyword', ARGV[5], 'signed_in', ARGV[6], 'present_at_close', ARGV[7], 'min_watch_ms', ARGV[8],
  'claim_ms', ARGV[9], 'duration_ms', ARGV[10], 'seed', ARGV[11], 'commitment', ARGV[12],
  'opened_at', opened, 'closes_at', closes, 'state', 'open', 'entrants', 0, 'claim_by', 0,
  'claims_state', 'open')
redis.call('SADD', KEYS[2], ARGV[1])
return {'opened', opened, closes}
