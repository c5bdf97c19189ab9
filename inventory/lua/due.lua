-- Which active sales are due for a sweep, each leased to the caller: until the lease runs out
-- (or the sale changes) the other processes skip it, so one process sweeps an idle sale, and
-- if that process dies the sale is due again when its lease ends.
--
-- KEYS[1] the active sales set   KEYS[2] the due sorted set: sale id scored by when (Redis
--         ms) its next sweep is due   KEYS[3] the leases hash: sale id -> lease token, and
--         "#" -> the last token handed out. The three share one hash tag (one Cluster slot).
-- ARGV[1] lease length (ms)   ARGV[2] most sales to lease
-- ARGV[3] "sync": compare the due set with the active set member by member (as is done
--         anyway when their sizes differ); "all": that, and every active sale is due at once
--         (Redis lost writes: each must be looked at); "": neither
-- ARGV[4..] sales the caller changed since its last call: due at once (their lease, if any,
--         is void, so a sweep that read the sale before the change cannot postpone it)
-- Returns: {now, last token, {sale id, lease token, sale id, lease token, ...}}
--   last token: the tokens only grow, unless Redis lost writes (the caller watches them)

local active, due, leases = KEYS[1], KEYS[2], KEYS[3]
local lease_ms, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()

-- a sale opened since the last call is due at once; one that left the active set, gone
if ARGV[3] ~= '' or redis.call('SCARD', active) ~= redis.call('ZCARD', due) then
  for _, id in ipairs(redis.call('SMEMBERS', active)) do
    redis.call('ZADD', due, 'NX', 0, id)
  end
  for _, id in ipairs(redis.call('ZRANGE', due, 0, -1)) do
    if redis.call('SISMEMBER', active, id) == 0 then
      redis.call('ZREM', due, id)
      redis.call('HDEL', leases, id)
    end
  end
end

if ARGV[3] == 'all' then
  for _, id in ipairs(redis.call('ZRANGE', due, 0, -1)) do
    redis.call('ZADD', due, 0, id)
    redis.call('HDEL', leases, id)
  end
end
for i = 4, #ARGV do
  if redis.call('ZSCORE', due, ARGV[i]) then
    redis.call('ZADD', due, 0, ARGV[i])
    redis.call('HDEL', leases, ARGV[i])
  end
end

local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, most)) do
  local token = redis.call('HINCRBY', leases, '#', 1)
  redis.call('HSET', leases, id, token)
  redis.call('ZADD', due, now + lease_ms, id)
  out[#out + 1] = id; out[#out + 1] = token
end
return {now, tonumber(redis.call('HGET', leases, '#') or '0'), out}
