-- Close an auction whose end came, once, whichever process asks: the leader wins if their bid
-- reaches the reserve (the auction is offered to them, to pay within the hold time), else it is
-- unsold. Before the end (a late bid moved it) nothing changes.
-- KEYS[1] the auction's hash   KEYS[2] bidders' highest bids (zset)   KEYS[3] users offered it (set)
-- KEYS[4] the room's open tools (set)
-- Returns {"later", ends_at_ms} | {"offered", user, amount, pay_by_ms} | {"unsold"} |
--   {"state", state} (closed before: nothing to do) | a refusal (auction_not_found)
if redis.call('EXISTS', KEYS[1]) == 0 then return refuse('auction_not_found') end
local a = redis.call('HMGET', KEYS[1], 'state', 'ends_at', 'leader', 'amount', 'reserve', 'hold_ms', 'id')
local state, ends, leader, amount = a[1], tonumber(a[2]), a[3], tonumber(a[4])
if state ~= 'open' then return {'state', state} end
local now = now_ms()
if now < ends then return {'later', ends} end
if leader ~= '' and amount >= tonumber(a[5]) then
  local pay_by = now + tonumber(a[6])
  redis.call('HSET', KEYS[1], 'state', 'offered', 'closed_at', now, 'offer_user', leader,
    'offer_amount', amount, 'pay_by', pay_by)
  redis.call('SADD', KEYS[3], leader)
  return {'offered', leader, amount, pay_by}
end
redis.call('HSET', KEYS[1], 'state', 'unsold', 'closed_at', now)
redis.call('SREM', KEYS[4], a[7])
return {'unsold'}
