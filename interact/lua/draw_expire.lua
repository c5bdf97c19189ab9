-- The claim window of a closed draw ends, once: unclaimed prizes expire (a claim from then on is
-- claim_expired) and the draw leaves the room's open tools. Before claim_by nothing changes.
-- KEYS[1] the draw's hash   KEYS[2] the room's open tools (set)   KEYS[3] winners in draw order (list)
-- KEYS[4] winner -> order JSON (hash)
-- Returns {"later", at_ms} | {"expired", unclaimed winner...} | {"state", state} (not closed, or
--   expired before: nothing to do) | a refusal (draw_not_found)
if redis.call('EXISTS', KEYS[1]) == 0 then return refuse('draw_not_found') end
local d = redis.call('HMGET', KEYS[1], 'state', 'claim_by', 'claims_state', 'id', 'closes_at')
if d[1] ~= 'closed' then return {'later', tonumber(d[5])} end
if d[3] ~= 'open' then return {'state', 'expired'} end
if now_ms() < tonumber(d[2]) then return {'later', tonumber(d[2])} end
redis.call('HSET', KEYS[1], 'claims_state', 'expired')
redis.call('SREM', KEYS[2], d[4])
local out = {'expired'}
for _, user in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  if redis.call('HEXISTS', KEYS[4], user) == 0 then out[#out + 1] = user end
end
return out
