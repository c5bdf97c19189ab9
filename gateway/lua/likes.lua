-- Add a process's likes of one tick to a room's total, and publish the total if it is due.
--
-- The total is published at most once per ARGV[4] ms per room, whichever processes add to it,
-- judged by this shard's clock (TIME: one clock for every node): what each node receives from
-- a room's likes does not grow with the number of nodes (without it, P nodes each publishing
-- every tick make every node receive P gauges a tick). The like is always added (HINCRBY): a
-- total held back is only late, never short. A caller whose likes were not published is told
-- how long until a publish is due, and calls again then with ARGV[3] = 0 and ARGV[5] = the
-- total it got (a follow-up): that publishes the current total unless an earlier publish
-- already covered it, so the last likes of a burst reach every node within about one interval.
--
-- KEYS[1]  state hash (fields "likes"; "likes_published" and "likes_published_ms": the last
--          total published and when, by TIME, in ms)
-- ARGV[1]  channel    ARGV[2]  "PUBLISH" or "SPUBLISH"    ARGV[3]  likes to add (>= 0)
-- ARGV[4]  interval between two publishes, ms (0: publish every call)
-- ARGV[5]  a follow-up's total: published already if the last published total reaches it
--
-- Publishes: "0|{"type":"likes","total":N}" (seq 0: likes are a counter, not history).
-- Returns: {total, wait}: the room's total, and 0 if the caller's likes are published (by this
-- call or an earlier one), else the ms until a publish is due (call again then: a follow-up).

local add = tonumber(ARGV[3])
local interval = tonumber(ARGV[4])
local total
if add > 0 then
  total = redis.call('HINCRBY', KEYS[1], 'likes', add)
else
  total = tonumber(redis.call('HGET', KEYS[1], 'likes') or '0')
end
local needed = total
if add == 0 then needed = tonumber(ARGV[5]) end

local last = redis.call('HMGET', KEYS[1], 'likes_published_ms', 'likes_published')
local last_ms = tonumber(last[1] or '')
local last_total = tonumber(last[2] or '-1') or -1
-- (a published total above the total: the counter was reset since, so nothing is covered)
if last_total >= needed and last_total <= total then return {total, 0} end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
-- now < last_ms: another clock (a failover to a replica whose clock is behind): due, rather
-- than silent until this clock catches up
if last_ms == nil or now - last_ms >= interval or now < last_ms then
  redis.call(ARGV[2], ARGV[1], '0|{"type":"likes","total":' .. total .. '}')
  redis.call('HSET', KEYS[1], 'likes_published_ms', now, 'likes_published', total)
  return {total, 0}
end
return {total, last_ms + interval - now}
