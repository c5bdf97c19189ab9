-- The room's ranked open questions (most upvotes first, then the earliest asked) and the pinned
-- one. With ARGV[2] = "check": only when the top ARGV[1] differ from what was last sent (ids,
-- upvotes, which is pinned), decided here so that one change is sent once whichever process
-- asks; the new top is recorded as sent.
-- KEYS[1] the room's questions (hash, as question_ask.lua)   KEYS[2] the open queue (zset)
-- KEYS[3] the pinned question's id (string)   KEYS[4] the top last sent (string: a signature)
-- ARGV[1] how many   ARGV[2] "check" or "read"   ARGV[3] keys' time to live, ms
-- Returns {"same"} (check: unchanged) or {"top", count, fields of each (id, user, text,
--   asked_at_ms, state, upvotes, pinned 0/1)..., then the pinned question's fields, or none}
local n, mode, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local pinned = redis.call('GET', KEYS[3])
local out, signature = {'top', 0}, {}
local function add(id)
  local q = redis.call('HMGET', KEYS[1], id .. '|u', id .. '|t', id .. '|at', id .. '|s', id .. '|v')
  if not q[1] then return false end
  local is_pinned = pinned == id and 1 or 0
  for _, v in ipairs({id, q[1], q[2], q[3], q[4], q[5], is_pinned}) do out[#out + 1] = v end
  return q[5]
end
local members = n > 0 and redis.call('ZRANGE', KEYS[2], 0, n - 1) or {}
for _, member in ipairs(members) do
  local id = string.sub(member, string.find(member, '|', 1, true) + 1)
  local upvotes = add(id)
  if upvotes then
    out[2] = out[2] + 1
    signature[#signature + 1] = id .. ':' .. upvotes .. ':' .. (pinned == id and '1' or '0')
  end
end
if mode == 'check' then
  local text = table.concat(signature, ',')
  if redis.call('GET', KEYS[4]) == text then return {'same'} end
  redis.call('SET', KEYS[4], text, 'PX', ttl)
end
if pinned then add(pinned) end
return out
