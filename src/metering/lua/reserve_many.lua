--[[
reserve_many: hold up to n holds of one amount for calls not yet made (a gateway's hold pool,
src/metering/hold-pool.ts), under the same rule as reserve: balance − held covers each of them,
and the month's spend + held stays within the monthly budget. A pool takes at most 1/share of the
free balance, so an org near its last credits is admitted call by call (reserve.lua), exactly.

KEYS[1] org hash    {bal, held, m<monthStart>}
KEYS[2] holds hash  holdId -> amount
KEYS[3] expiry zset "orgId\nholdId" scored by expiry (ms), reclaimed like any call's hold
ARGV[1] amount of each hold (nanodollars, an integer string)
ARGV[2] expiry time (ms since epoch)
ARGV[3] share: the holds granted together stay within (balance − held) / share
ARGV[4] the org's monthly budget, or -1 for none
ARGV[5] the billing month's field in the org hash, "m<monthStart>"
ARGV[6] orgId (the expiry members' prefix)
ARGV[7..] hold ids, fresh (never a request id)

Returns {status, granted}: status -1 not loaded (the caller loads the balance and admits call by
call meanwhile), 1 otherwise; granted holds are the first `granted` ids.
]]
local o = redis.call('HMGET', KEYS[1], 'bal', 'held', ARGV[5])
if not o[1] then return {-1, 0} end
local free = tonumber(o[1]) - tonumber(o[2] or '0')
local amount = tonumber(ARGV[1])
if amount <= 0 then return {1, 0} end
local n = #ARGV - 6
local granted = math.min(n, math.floor(free / tonumber(ARGV[3]) / amount))
local budget = tonumber(ARGV[4])
if budget >= 0 then
  local room = budget - tonumber(o[3] or '0') - tonumber(o[2] or '0')
  granted = math.min(granted, math.floor(room / amount))
end
if granted <= 0 then return {1, 0} end
local holds, expiry = {}, {}
for i = 1, granted do
  local id = ARGV[6 + i]
  holds[#holds + 1] = id
  holds[#holds + 1] = ARGV[1]
  expiry[#expiry + 1] = ARGV[2]
  expiry[#expiry + 1] = ARGV[6] .. '\n' .. id
end
redis.call('HSET', KEYS[2], unpack(holds))
redis.call('ZADD', KEYS[3], unpack(expiry))
-- An integer printed as one ("%d"), not with Lua's "%.14g", which writes 1e14 and above with an exponent.
redis.call('HINCRBY', KEYS[1], 'held', string.format('%d', granted * amount))
return {1, granted}
