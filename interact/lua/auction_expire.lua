-- An offer whose pay-by time came lapses, once: with offer_next, the highest bidder who has had
-- no offer and whose highest bid reaches the reserve is offered it at that bid; when none is
-- left (or offer_next is off) the auction is unsold. Before the pay-by time nothing changes.
-- KEYS[1] the auction's hash   KEYS[2] bidders' highest bids (zset)   KEYS[3] users offered it (set)
-- KEYS[4] the room's open tools (set)
-- Returns {"later", pay_by_ms} | {"offered", user, amount, pay_by_ms} | {"unsold"} |
--   {"state", state} (not offered: nothing to do) | a refusal (auction_not_found)
if redis.call('EXISTS', KEYS[1]) == 0 then return refuse('auction_not_found') end
local a = redis.call('HMGET', KEYS[1], 'state', 'pay_by', 'reserve', 'hold_ms', 'offer_next', 'id')
local state, pay_by, reserve = a[1], tonumber(a[2]), tonumber(a[3])
if state ~= 'offered' then return {'state', state} end
local now = now_ms()
if now < pay_by then return {'later', pay_by} end
if a[5] == '1' then
  local ranked = redis.call('ZREVRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  for i = 1, #ranked, 2 do
    local user, bid = ranked[i], tonumber(ranked[i + 1])
    if bid < reserve then break end
    if redis.call('SISMEMBER', KEYS[3], user) == 0 then
      local by = now + tonumber(a[4])
      redis.call('HSET', KEYS[1], 'offer_user', user, 'offer_amount', bid, 'pay_by', by)
      redis.call('SADD', KEYS[3], user)
      return {'offered', user, bid, by}
    end
  end
end
redis.call('HSET', KEYS[1], 'state', 'unsold', 'offer_user', '', 'offer_amount', 0, 'pay_by', 0)
redis.call('SREM', KEYS[4], a[6])
return {'unsold'}
