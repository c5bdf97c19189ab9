-- Cancel a hold: its units go back to the sale at once.
--
-- KEYS: the sale's keys (lib.lua)
-- ARGV[1] hold id   ARGV[2] user id
-- Returns: {code, quantity}: "cancelled"; or "hold_not_found" "not_your_hold"
--   "already_confirmed" "in_team"

local hold_id, user = ARGV[1], ARGV[2]
local rec = redis.call('HGET', HOLDS, hold_id)
if not rec then
  local order = redis.call('HGET', ORDERS, hold_id)
  if order and cjson.decode(order).user == user then return {'already_confirmed', 0} end
  return {'hold_not_found', 0}
end
local qty, _, _, team, _, owner = parse_hold(rec)
if owner ~= user then return {'not_your_hold', 0} end
if team ~= '' then return {'in_team', 0} end
release(hold_id, qty, owner)
return {'cancelled', qty}
