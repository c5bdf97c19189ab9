-- A host's or moderator's decision on a question: answer, dismiss, pin or unpin it. Answering
-- or dismissing takes it out of the open queue (and unpins it); one question of the room is
-- pinned at most (pinning another unpins the one before). Doing it again changes nothing
-- ("same"); unpinning a question that is not pinned too. A refusal changes nothing.
-- KEYS[1] the room's questions (hash, as question_ask.lua)   KEYS[2] the open queue (zset)
-- KEYS[3] the pinned question's id (string)
-- ARGV[1] "answer" | "dismiss" | "pin" | "unpin"   ARGV[2] question id   ARGV[3] keys' time to live, ms
-- Returns {"changed" | "same", unpinned id ("" none: the question this unpinned), id, user,
--   text, asked_at_ms, state, upvotes, pinned (0/1)} or a refusal: question_not_found,
--   question_closed (answer a dismissed one, dismiss an answered one, pin a closed one)
local action, id, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local q = redis.call('HMGET', KEYS[1], id .. '|u', id .. '|t', id .. '|at', id .. '|s', id .. '|v')
if not q[1] then return refuse('question_not_found') end
local state = q[4]
local pinned = redis.call('GET', KEYS[3])
local outcome, unpinned = 'same', ''
if action == 'answer' or action == 'dismiss' then
  local closed = action == 'answer' and 'answered' or 'dismissed'
  if state ~= closed then
    if state ~= 'open' then return refuse('question_closed') end
    state, outcome = closed, 'changed'
    redis.call('HSET', KEYS[1], id .. '|s', state)
    redis.call('ZREM', KEYS[2], string.format('%015.0f', tonumber(q[3])) .. '|' .. id)
    if pinned == id then
      redis.call('DEL', KEYS[3])
      pinned, unpinned = false, id
    end
  end
elseif action == 'pin' then
  if state ~= 'open' then return refuse('question_closed') end
  if pinned ~= id then
    if pinned then unpinned = pinned end
    redis.call('SET', KEYS[3], id, 'PX', ttl)
    pinned, outcome = id, 'changed'
  end
elseif action == 'unpin' then
  if pinned == id then
    redis.call('DEL', KEYS[3])
    pinned, outcome, unpinned = false, 'changed', id
  end
else
  return redis.error_reply('unknown action ' .. action)
end
if outcome == 'changed' then redis.call('PEXPIRE', KEYS[1], ttl) end
return {outcome, unpinned, id, q[1], q[2], q[3], state, q[5], pinned == id and 1 or 0}
