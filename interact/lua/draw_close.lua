-- Close a draw whose close time came, once, whichever process asks: apply the exclusions,
-- reveal the seed, draw the winners, all in this one script. Before the close time nothing
-- changes; closed before: nothing to do.
-- Exclusions, per entrant in entry order (the first rule that applies is the one recorded):
-- "banned" (in the room's ban set), "muted" (muted until after now), "not_present"
-- (present_at_close and not seen within ARGV[2] ms of now), "watch_time" (first to last seen
-- shorter than min_watch_ms), then "address_limit" (more than ARGV[1] of the entrants still
-- eligible came from one client address: the later ones).
-- Winners (docs/draws.md; interact/draw_verify.py is the same in Python): the eligible users
-- sorted by their bytes (a zset of equal scores: memcmp order), then for k = 0 .. n-1 with
-- n = min(winners, eligible), j = k + int(SHA-256("<seed>:<k>"), 16) mod (eligible - k), swap
-- pool[k] and pool[j]; the winners are pool[0 .. n-1].
-- KEYS[1] the draw's hash   KEYS[2] entrants in entry order (list)   KEYS[3] entrant -> address (hash)
-- KEYS[4] first seen (zset)   KEYS[5] last seen (zset)   KEYS[6] eligible (zset, score 0)
-- KEYS[7] excluded: user -> rule (hash)   KEYS[8] winners in draw order (list)
-- KEYS[9] winner -> place, 1.. (hash)   KEYS[10] the room's banned users (set)
-- KEYS[11] the room's mutes (hash: user -> muted until ms)
-- ARGV[1] most entrants per client address (0: no limit)   ARGV[2] presence grace ms
-- ARGV[3] "early" (a host closes it now, before its close time) or ""
-- Returns {"later", closes_at_ms} | {"state", state} | a refusal (draw_not_found) |
--   {"closed", seed, claim_by_ms, entrants, eligible, banned, muted, address_limit,
--    not_present, watch_time, winner...}
local function int(n) return string.format('%.0f', n) end
local band, bxor, bnot, rshift, ror, tobit = bit.band, bit.bxor, bit.bnot, bit.rshift, bit.ror, bit.tobit

local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

-- SHA-256 of a string, as 64 lowercase hex digits (Lua 5.1 and the bit library Redis ships).
local function sha256_hex(msg)
  local len = #msg
  local bits = len * 8
  msg = msg .. '\128' .. string.rep('\0', (55 - len) % 64)
  local high, low = math.floor(bits / 4294967296), bits % 4294967296
  for _, word in ipairs({high, low}) do
    msg = msg .. string.char(math.floor(word / 16777216) % 256, math.floor(word / 65536) % 256,
      math.floor(word / 256) % 256, word % 256)
  end
  local h = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}
  local w = {}
  for chunk = 1, #msg, 64 do
    for i = 1, 16 do
      local a, b, c, d = string.byte(msg, chunk + (i - 1) * 4, chunk + (i - 1) * 4 + 3)
      w[i] = tobit(a * 16777216 + b * 65536 + c * 256 + d)
    end
    for i = 17, 64 do
      local x, y = w[i - 15], w[i - 2]
      local s0 = bxor(ror(x, 7), ror(x, 18), rshift(x, 3))
      local s1 = bxor(ror(y, 17), ror(y, 19), rshift(y, 10))
      w[i] = tobit(w[i - 16] + s0 + w[i - 7] + s1)
    end
    local a, b, c, d, e, f, g, hh = h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]
    for i = 1, 64 do
      local S1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
      local ch = bxor(band(e, f), band(bnot(e), g))
      local t1 = hh + S1 + ch + K[i] + w[i]
      local S0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
      local maj = bxor(band(a, b), band(a, c), band(b, c))
      hh, g, f, e, d, c, b = g, f, e, tobit(d + t1), c, b, a
      a = tobit(t1 + S0 + maj)
    end
    h[1], h[2], h[3], h[4] = tobit(h[1] + a), tobit(h[2] + b), tobit(h[3] + c), tobit(h[4] + d)
    h[5], h[6], h[7], h[8] = tobit(h[5] + e), tobit(h[6] + f), tobit(h[7] + g), tobit(h[8] + hh)
  end
  local out = {}
  for i = 1, 8 do out[i] = bit.tohex(h[i], 8) end
  return table.concat(out)
end

-- A hex number (any length) mod m (m < 2^48: every step stays exact in a double).
local function hex_mod(hex, m)
  local r = 0
  for i = 1, #hex do r = (r * 16 + tonumber(string.sub(hex, i, i), 16)) % m end
  return r
end

if redis.call('EXISTS', KEYS[1]) == 0 then return refuse('draw_not_found') end
local d = redis.call('HMGET', KEYS[1], 'state', 'closes_at', 'seed', 'winners', 'present_at_close',
  'min_watch_ms', 'claim_ms', 'entrants')
if d[1] ~= 'open' then return {'state', d[1]} end
local now = now_ms()
if now < tonumber(d[2]) then
  if ARGV[3] ~= 'early' then return {'later', tonumber(d[2])} end
  redis.call('HSET', KEYS[1], 'closes_at', now)
end
local seed, wanted, present, min_watch = d[3], tonumber(d[4]), d[5] == '1', tonumber(d[6])
local per_ip, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
local counts = {banned = 0, muted = 0, address_limit = 0, not_present = 0, watch_time = 0}
local by_ip = {}
local entries = redis.call('LRANGE', KEYS[2], 0, -1)
for _, user in ipairs(entries) do
  local rule = nil
  if redis.call('SISMEMBER', KEYS[10], user) == 1 then
    rule = 'banned'
  else
    local muted = redis.call('HGET', KEYS[11], user)
    if muted and tonumber(muted) and tonumber(muted) > now then rule = 'muted' end
  end
  if not rule and present then
    local last = redis.call('ZSCORE', KEYS[5], user)
    if not last or tonumber(last) < now - grace then rule = 'not_present' end
  end
  if not rule and min_watch > 0 then
    local first, last = redis.call('ZSCORE', KEYS[4], user), redis.call('ZSCORE', KEYS[5], user)
    if not first or not last or tonumber(last) - tonumber(first) < min_watch then rule = 'watch_time' end
  end
  if not rule and per_ip > 0 then
    local ip = redis.call('HGET', KEYS[3], user) or ''
    by_ip[ip] = (by_ip[ip] or 0) + 1
    if by_ip[ip] > per_ip then rule = 'address_limit' end
  end
  if rule then
    redis.call('HSET', KEYS[7], user, rule)
    counts[rule] = counts[rule] + 1
  else
    redis.call('ZADD', KEYS[6], 0, user)
  end
end
local pool = redis.call('ZRANGE', KEYS[6], 0, -1)
local n = math.min(wanted, #pool)
for k = 0, n - 1 do
  local j = k + hex_mod(sha256_hex(seed .. ':' .. int(k)), #pool - k)
  pool[k + 1], pool[j + 1] = pool[j + 1], pool[k + 1]
end
local out = {'closed', seed, '', int(#entries), int(#pool), int(counts.banned), int(counts.muted),
  int(counts.address_limit), int(counts.not_present), int(counts.watch_time)}
for k = 1, n do
  redis.call('RPUSH', KEYS[8], pool[k])
  redis.call('HSET', KEYS[9], pool[k], k)
  out[#out + 1] = pool[k]
end
local claim_by = now + tonumber(d[7])
out[3] = int(claim_by)
redis.call('HSET', KEYS[1], 'state', 'closed', 'closed_at', now, 'claim_by', claim_by,
  'eligible', #pool, 'excluded', cjson.encode(counts))
return out
