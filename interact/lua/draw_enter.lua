-- Enter a user in a draw, once: entering again answers "again" and counts nothing twice. A
-- refusal changes nothing. The entrant's client address is kept for the close's per-address
-- rule (draw_max_entries_per_ip).
-- Rules: the draw is open and the shard's clock is before its close; a keyword draw is entered
-- only by a comment (ARGV[3] = "comment"); a signed_in draw refuses guests; at most ARGV[5]
-- entrants (0: no limit).
-- KEYS[1] the draw's hash   KEYS[2] entrants in entry order (list)   KEYS[3] entrant -> address (hash)
-- ARGV[1] user id   ARGV[2] client address   ARGV[3] "command" or "comment"   ARGV[4] guest (1/0)
-- ARGV[5] most entrants (0: no limit)
-- Returns {"entered" | "again", entrants} or a refusal: draw_not_found, draw_closed,
--   keyword_required, sign_in_required, draw_full
local user, ip, how = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', KEYS[1]) == 0 then return refuse('draw_not_found') end
local d = redis.call('HMGET', KEYS[1], 'state', 'closes_at', 'keyword', 'signed_in', 'entrants')
if d[1] ~= 'open' or now_ms() >= tonumber(d[2]) then return refuse('draw_closed') end
if how ~= 'comment' and d[3] ~= '' then return refuse('keyword_required') end
local entrants = tonumber(d[5])
if redis.call('HEXISTS', KEYS[3], user) == 1 then return {'again', entrants} end
if d[4] == '1' and ARGV[4] == '1' then return refuse('sign_in_required') end
local most = tonumber(ARGV[5])
if most > 0 and entrants >= most then return refuse('draw_full') end
redis.call('HSET', KEYS[3], user, ip)
redis.call('RPUSH', KEYS[2], user)
return {'entered', redis.call('HINCRBY', KEYS[1], 'entrants', 1)}
