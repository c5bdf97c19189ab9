-- Upvote an open question, once per user: again answers the same count and changes nothing.
-- A refusal changes nothing.
-- KEYS[1] the room's questions (hash, as question_ask.lua)   KEYS[2] the open queue (zset)
-- KEYS[3] the upvotes given (set, member "<id>\n<user>")
-- ARGV[1] question id   ARGV[2] user id   ARGV[3] keys' time to live, ms
-- Returns {"counted" | "again", upvotes} or a refusal: question_not_found, question_closed
--   (answered or dismissed), own_question
local id, user, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local q = redis.call('HMGET', KEYS[1], id .. '|u', id .. '|at', id .. '|s', id .. '|v')
if not q[1] then return refuse('question_not_found') end
if q[3] ~= 'open' then return refuse('question_closed') end
if q[1] == user then return refuse('own_question') end
if redis.call('SADD', KEYS[3], id .. '\n' .. user) == 0 then return {'again', q[4]} end
local upvotes = redis.call('HINCRBY', KEYS[1], id .. '|v', 1)
redis.call('ZINCRBY', KEYS[2], -1, string.format('%015.0f', tonumber(q[2])) .. '|' .. id)
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {'counted', tostring(upvotes)}
