-- Ask a question: it joins the room's open queue with no upvotes. Asking again with the same
-- id (the app derives it from the user and the rid) answers the same question and changes
-- nothing; the same id with another text is refused (duplicate). A refusal changes nothing.
-- Rules: the asker is within their rate (ARGV[6], decided by the app, so that a retry is
-- answered even past it); not banned from the room nor muted in it; the room has fewer than
-- ARGV[5] open questions (0: no limit).
-- KEYS[1] the room's questions (hash "<id>|u" user, "|t" text, "|at" asked at ms, "|s" state,
--   "|v" upvotes)   KEYS[2] the open queue (zset, member "<asked at, 15 digits>|<id>", score
--   -upvotes)   KEYS[3] the pinned question's id (string)   KEYS[4] the room's banned users (set)
--   KEYS[5] the room's mutes (hash user -> muted until ms)
-- ARGV[1] question id   ARGV[2] user id   ARGV[3] text   ARGV[4] keys' time to live, ms
-- ARGV[5] most open questions (0: no limit)   ARGV[6] "1": the asker is past their rate
-- Returns {"new" | "again", id, user, text, asked_at_ms, state, upvotes, pinned (0/1)} or a
--   refusal: duplicate, rate_limited, banned, muted, queue_full
local id, user, text, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local most = tonumber(ARGV[5])
local had = redis.call('HMGET', KEYS[1], id .. '|u', id .. '|t', id .. '|at', id .. '|s', id .. '|v')
if had[1] then
  if had[1] ~= user or had[2] ~= text then return refuse('duplicate') end
  local pinned = redis.call('GET', KEYS[3]) == id and 1 or 0
  return {'again', id, had[1], had[2], had[3], had[4], had[5], pinned}
end
if ARGV[6] == '1' then return refuse('rate_limited') end
if redis.call('SISMEMBER', KEYS[4], user) == 1 then return refuse('banned') end
local now = now_ms()
local until_ms = tonumber(redis.call('HGET', KEYS[5], user) or '0')
if until_ms and until_ms > now then return refuse('muted') end
if most > 0 and redis.call('ZCARD', KEYS[2]) >= most then return refuse('queue_full') end
local at = string.format('%.0f', now)
redis.call('HSET', KEYS[1], id .. '|u', user, id .. '|t', text, id .. '|at', at, id .. '|s', 'open',
  id .. '|v', 0)
redis.call('ZADD', KEYS[2], 0, string.format('%015.0f', now) .. '|' .. id)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {'new', id, user, text, at, 'open', '0', 0}
