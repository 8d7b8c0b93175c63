--[[
reserve: admit a call iff the org's free balance covers its estimate, and hold that much.

KEYS[1] org hash    {bal, held, m<monthStart>: that billing month's spend}   (nanodollars)
KEYS[2] holds hash  requestId -> amount
KEYS[3] expiry zset "orgId\nrequestId" scored by expiry (ms), for reclaiming a dead gateway's holds
KEYS[4] done marker of requestId (exists once the call was settled)
ARGV[1] requestId
ARGV[2] amount to hold
ARGV[3] expiry time (ms since epoch)
ARGV[4] expiry zset member
ARGV[5] the org's monthly budget, or -1 for none
ARGV[6] the billing month's field in the org hash, "m<monthStart>"

Returns {status, balance, held}: status 1 admitted (also for a repeat of an admitted or settled
request: idempotent), 0 refused (balance - held < amount), 2 refused (month's spend + held + amount
would pass the monthly budget: holds count, so concurrent calls cannot overshoot it), -1 not loaded (the org has no balance
here yet: the caller loads it from Postgres and retries; a missing balance is never read as 0).
]]
local held_now = redis.call('HGET', KEYS[1], 'held')
local bal = redis.call('HGET', KEYS[1], 'bal')
if not bal then return {-1, 0, 0} end
bal = tonumber(bal)
held_now = tonumber(held_now or '0')
if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return {1, bal, held_now}
end
local amount = tonumber(ARGV[2])
if bal - held_now < amount then return {0, bal, held_now} end
local budget = tonumber(ARGV[5])
if budget >= 0 and tonumber(redis.call('HGET', KEYS[1], ARGV[6]) or '0') + held_now + amount > budget then
  return {2, bal, held_now}
end
redis.call('HSET', KEYS[2], ARGV[1], amount)
held_now = redis.call('HINCRBY', KEYS[1], 'held', amount)
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return {1, bal, held_now}
