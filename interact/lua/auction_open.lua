-- Open an auction (or put back one a Redis lost, from its record: ARGV[13] = "restore").
-- Opening again answers as the first time did and changes nothing.
-- KEYS[1] the auction's hash   KEYS[2] the room's open tools (set)   KEYS[3] bidders' highest bids (zset)
-- KEYS[4] users offered it (set)
-- ARGV[1] auction id   ARGV[2] room id   ARGV[3] product JSON   ARGV[4] start cents
-- ARGV[5] increment cents   ARGV[6] reserve cents (0: none)   ARGV[7] buy-it-now cents (0: none)
-- ARGV[8] snipe ms   ARGV[9] most extension ms   ARGV[10] duration ms   ARGV[11] hold ms
-- ARGV[12] offer_next (1/0)   ARGV[13] "" (new) or "restore", then for a restore:
-- ARGV[14] opened at ms   ARGV[15] original end ms   ARGV[16] end ms   ARGV[17] state
-- ARGV[18] leader ("" none)   ARGV[19] leading amount   ARGV[20] bid seq   ARGV[21] bids
-- ARGV[22] offer user   ARGV[23] offer amount   ARGV[24] offer pay by ms   ARGV[25...] users offered it
-- Returns {"opened" | "exists", opened_at_ms, ends_at_ms}
if redis.call('EXISTS', KEYS[1]) == 1 then
  local t = redis.call('HMGET', KEYS[1], 'opened_at', 'ends_at')
  return {'exists', tonumber(t[1]), tonumber(t[2])}
end
local now = now_ms()
local fields = {
  'id', ARGV[1], 'room_id', ARGV[2], 'product', ARGV[3], 'start', ARGV[4], 'inc', ARGV[5],
  'reserve', ARGV[6], 'buy_now', ARGV[7], 'snipe_ms', ARGV[8], 'max_ext_ms', ARGV[9],
  'duration_ms', ARGV[10], 'hold_ms', ARGV[11], 'offer_next', ARGV[12],
}
local opened, orig_end, ends
if ARGV[13] == 'restore' then
  opened, orig_end, ends = tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
  local more = {
    'state', ARGV[17], 'leader', ARGV[18], 'amount', ARGV[19], 'bid_seq', ARGV[20], 'bids', ARGV[21],
    'offer_user', ARGV[22], 'offer_amount', ARGV[23], 'pay_by', ARGV[24], 'restored_at', now,
  }
  for _, v in ipairs(more) do fields[#fields + 1] = v end
  if ARGV[18] ~= '' then redis.call('ZADD', KEYS[3], tonumber(ARGV[19]), ARGV[18]) end
  for i = 25, #ARGV do redis.call('SADD', KEYS[4], ARGV[i]) end
else
  opened = now
  orig_end = now + tonumber(ARGV[10])
  ends = orig_end
  local more = {'state', 'open', 'leader', '', 'amount', 0, 'bid_seq', 0, 'bids', 0,
    'offer_user', '', 'offer_amount', 0, 'pay_by', 0}
  for _, v in ipairs(more) do fields[#fields + 1] = v end
end
for _, v in ipairs({'opened_at', opened, 'orig_ends_at', orig_end, 'ends_at', ends}) do
  fields[#fields + 1] = v
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('SADD', KEYS[2], ARGV[1])
return {'opened', opened, ends}
