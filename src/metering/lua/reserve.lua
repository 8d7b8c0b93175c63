--[[
reserve: admit a call iff the org's free balance covers its estimate and its rate limits have room,
and hold that much. Loaded with rate_lib.lua prepended (rate_admit).

KEYS[1] org hash    {bal, held, m<monthStart>: that billing month's spend}   (nanodollars)
KEYS[2] holds hash  requestId -> amount
KEYS[3] expiry zset "orgId\nrequestId" scored by expiry (ms), for reclaiming a dead gateway's holds
KEYS[4] done marker of requestId (exists once the call was settled)
KEYS[5] rate hash of the org   (rate_lib.lua)
KEYS[6] rate hash of the api key
ARGV[1] requestId
ARGV[2] amount to hold
ARGV[3] expiry time (ms since epoch)
ARGV[4] expiry zset member
ARGV[5] the org's monthly budget, or -1 for none
ARGV[6] the billing month's field in the org hash, "m<monthStart>"
ARGV[7] rate window start (ms)       ARGV[8] ms until it ends     ARGV[9] window length (ms)
ARGV[10..13] org rpm, org tpm, key rpm, key tpm (-1: no limit)
ARGV[14] the call's token estimate
ARGV[7..14] are sent only when the org or the key has a limit; without them there is no rate step.
ARGV[5..6] may be left out too when there is neither a budget nor a rate step, and KEYS[5..6] when
there is no rate step: every key and argument is a Lua string made and collected per call, ~1,400
instructions of Redis's each (callgrind), a fifth of what this script costs Redis in all.

Returns {status, balance, held, <six numbers of rate state, see rate_lib.lua>}: status 1 admitted
(also for a repeat of an admitted or settled request: idempotent, counted once), 0 refused
(balance - held < amount), 2 refused (month's spend + held + amount would pass the monthly budget:
holds count, so concurrent calls cannot overshoot it), 3 refused by a rate limit (nothing held or
counted), -1 not loaded (the org has no balance here yet: the caller loads it from Postgres and
retries; a missing balance is never read as 0). Credits are checked before rates: a call that
could not be paid for is refused as such, and counts nothing.

Performance: one HMGET reads the balance, the holds and the month's spend (this was three HGETs);
without a rate step, an admitted call's hold is made by the HSETNX that also tells a repeat.
The writes stay HINCRBYs: a value computed in Lua would need a tonumber (strtod) of each field
and a string.format to write it back, which callgrind measured as dearer than the redis.calls it
saves (settle.lua keeps its HINCRBYs for the same reason).
]]
local o = ARGV[6] and redis.call('HMGET', KEYS[1], 'bal', 'held', ARGV[6])
  or redis.call('HMGET', KEYS[1], 'bal', 'held')
if not o[1] then return {-1, 0, 0} end
local bal = tonumber(o[1])
local held_now = tonumber(o[2] or '0')
if redis.call('EXISTS', KEYS[4]) == 1 then return {1, bal, held_now} end
local rated = #ARGV > 6
-- A repeat of a held request is admitted again, holding and counting nothing more. Without a rate
-- step that is found by the HSETNX that makes the hold (one redis.call instead of an HEXISTS and an
-- HSET); a refusal, or a rate step that must not count a repeat, looks first.
local function repeated() return redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 end
if rated and repeated() then return {1, bal, held_now} end
local amount = tonumber(ARGV[2])
if bal - held_now < amount then
  if not rated and repeated() then return {1, bal, held_now} end
  return {0, bal, held_now}
end
local budget = tonumber(ARGV[5] or '-1')
if budget >= 0 and tonumber(o[3] or '0') + held_now + amount > budget then
  if not rated and repeated() then return {1, bal, held_now} end
  return {2, bal, held_now}
end
local reply = {1, bal, 0}
-- The rate arguments are sent only when a limit is set: without them this step costs nothing
-- (each tonumber of an argument is a strtod, measurable at this script's scale).
if rated then
  local lim = {tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])}
  local ok, state = rate_admit({KEYS[5], KEYS[6]}, lim, tonumber(ARGV[7]), tonumber(ARGV[9]),
    tonumber(ARGV[8]), tonumber(ARGV[14]))
  for i = 1, 6 do reply[3 + i] = state[i] end
  if not ok then
    reply[1] = 3
    reply[3] = held_now
    return reply
  end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
elseif redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then
  return {1, bal, held_now}
end
-- ARGV[2] as sent, not `amount`: a Lua number passed to redis.call is formatted with "%.14g".
reply[3] = redis.call('HINCRBY', KEYS[1], 'held', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return reply
