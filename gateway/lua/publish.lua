-- Append events to a room: each gets the room's next sequence number and is kept in a
-- stream, and all are published as one message, atomically (publish order = seq order).
-- A comment (an event with a user id) is first checked against the ban list, mutes and slow
-- mode, and is kept in the chat stream (approximately trimmed: it only feeds the welcome's
-- recent comments). Any other event (host, moderation, product, sale) is kept in the history
-- stream, trimmed exactly; the seq of the last event trimmed away is recorded as
-- state.history_floor, so a client with last_seq >= floor can be resumed without a gap.
--
-- The comment fan-out budget: a room publishes at most ARGV[7] budgeted comments (viewers'
-- comments) per second of this shard's clock (TIME: one clock for every node), whichever
-- nodes they come from, so what each node receives from the room does not grow with the
-- room's chatters. A budgeted comment past it is still admitted (numbered, kept in the chat
-- stream, acknowledged) but not published: the caller shows it to its own viewers only. Events
-- that are not comments, and staff comments, are never budgeted.
--
-- KEYS[1] seq counter     KEYS[2] history stream   KEYS[3] state hash      KEYS[4] mutes hash
-- KEYS[5] banned set      KEYS[6] slow hash        KEYS[7] chat stream     KEYS[8] fan-out hash
-- ARGV[1] channel         ARGV[2] "PUBLISH" or "SPUBLISH"
-- ARGV[3] history length  ARGV[4] chat length      ARGV[5] ttl (ms)        ARGV[6] now (ms)
-- ARGV[7] comments published per second at most (0: no budget)
-- ARGV[8..] triples: user id ("" for events that are not comments), "1" if budgeted else "",
--           payload (JSON, no seq)
-- Stream entry ids are "<seq>-0"; entries have one field, "e" = payload. The fan-out hash has
-- w = the second (TIME) and n = budgeted comments published in it.
--
-- Publishes: lines "<seq>|<payload>" of the admitted events, joined by "\n".
-- Returns: per event, its seq (an integer), -seq for a comment admitted past the budget (not
-- published), or the refusal: "banned", "muted", "slow_mode".

local history_len = tonumber(ARGV[3])
local now = tonumber(ARGV[6])
local slow_ms = tonumber(redis.call('HGET', KEYS[3], 'slow_mode_s') or '0') * 1000

local function seq_of(entry_id)
  return tonumber(string.match(entry_id, '^(%d+)'))
end

local function next_seq()
  local seq = redis.call('INCR', KEYS[1])
  if seq == 1 then
    -- the counter was lost (expired or evicted): continue after what the streams still hold
    local last = 0
    for _, key in ipairs({KEYS[2], KEYS[7]}) do
      local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
      if #newest > 0 then last = math.max(last, seq_of(newest[1][1])) end
    end
    if last > 0 then
      seq = last + 1
      redis.call('SET', KEYS[1], seq)
    else
      redis.call('HDEL', KEYS[3], 'history_floor')
    end
  end
  return seq
end

local budget = tonumber(ARGV[7])
local window, fanned = 0, 0
if budget > 0 then
  window = tonumber(redis.call('TIME')[1])
  local current = redis.call('HMGET', KEYS[8], 'w', 'n')
  if tonumber(current[1] or '-1') == window then fanned = tonumber(current[2] or '0') end
end
local fanned_before = fanned

local results, lines = {}, {}
for i = 8, #ARGV, 3 do
  local user, budgeted, payload = ARGV[i], ARGV[i + 1] ~= '', ARGV[i + 2]
  local refusal = nil
  if user ~= '' then
    if redis.call('SISMEMBER', KEYS[5], user) == 1 then
      refusal = 'banned'
    elseif tonumber(redis.call('HGET', KEYS[4], user) or '0') > now then
      refusal = 'muted'
    elseif slow_ms > 0 and now - tonumber(redis.call('HGET', KEYS[6], user) or '0') < slow_ms then
      refusal = 'slow_mode'
    end
  end
  if refusal then
    results[#results + 1] = refusal
  else
    local seq = next_seq()
    if user ~= '' then
      redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[4], seq .. '-0', 'e', payload)
      if slow_ms > 0 then redis.call('HSET', KEYS[6], user, now) end
    else
      if redis.call('XLEN', KEYS[2]) >= history_len then
        local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
        redis.call('HSET', KEYS[3], 'history_floor', seq_of(oldest[1][1]))
      end
      redis.call('XADD', KEYS[2], 'MAXLEN', history_len, seq .. '-0', 'e', payload)
    end
    if budgeted and budget > 0 and fanned >= budget then
      results[#results + 1] = -seq
    else
      if budgeted and budget > 0 then fanned = fanned + 1 end
      results[#results + 1] = seq
      lines[#lines + 1] = seq .. '|' .. payload
    end
  end
end
if fanned ~= fanned_before then
  redis.call('HSET', KEYS[8], 'w', window, 'n', fanned)
  redis.call('PEXPIRE', KEYS[8], 5000)
end
local admitted = false  -- (comments kept back by the budget included: they are in the chat stream)
for _, result in ipairs(results) do
  if type(result) == 'number' then admitted = true end
end
if admitted then
  for _, key in ipairs({KEYS[1], KEYS[2], KEYS[6], KEYS[7]}) do
    redis.call('PEXPIRE', key, ARGV[5])
  end
end
if #lines > 0 then
  redis.call(ARGV[2], ARGV[1], table.concat(lines, '\n'))
end
return results
