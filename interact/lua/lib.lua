-- Shared helpers of the interaction tools' scripts (put in front of each script).

-- The shard's clock in ms: every deadline of a tool is decided on it, whichever process asks.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A refusal: {'err', code, detail...}; the Python side raises InteractError(code).
local function refuse(code, ...)
  return {'err', code, ...}
end
