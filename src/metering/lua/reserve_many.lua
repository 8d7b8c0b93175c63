--[[
reserve_many: hold up to n holds of one amount for calls not yet made (a gateway's hold pool,
src/metering/hold-pool.ts), under the same rule as reserve: balance − held covers each of them,
and the month's spend + held stays within the monthly budget. A pool takes at most 1/share of the
free balance, so an org near its last credits is admitted call by call (reserve.lua), exactly.

The holds granted together share one expiry entry, "orgId\nhpb:<batch>:<granted>", and are named
"hp:<batch>:<granted>:<i>" (i = 1..granted), so reclaim finds them from it; the settle of the
batch's last hold removes it when all of them were used by calls (settle.lua: its expiry member
argument); a batch with a hold given back (release.lua) keeps it until reclaim.

KEYS[1] org hash    {bal, held, m<monthStart>}
KEYS[2] holds hash  holdId -> amount
KEYS[3] expiry zset
ARGV[1] amount of each hold (nanodollars, an integer string)
ARGV[2] expiry time (ms since epoch)
ARGV[3] share: the holds granted together stay within (balance − held) / share
ARGV[4] the org's monthly budget, or -1 for none
ARGV[5] the billing month's field in the org hash, "m<monthStart>"
ARGV[6] orgId
ARGV[7] batch id (unique)
ARGV[8] holds asked for

Returns {status, granted}: status -1 not loaded (the caller loads the balance and admits call by
call meanwhile), 1 otherwise.
]]
local o = redis.call('HMGET', KEYS[1], 'bal', 'held', ARGV[5])
if not o[1] then return {-1, 0} end
local free = tonumber(o[1]) - tonumber(o[2] or '0')
local amount = tonumber(ARGV[1])
if amount <= 0 then return {1, 0} end
local granted = math.min(tonumber(ARGV[8]), math.floor(free / tonumber(ARGV[3]) / amount))
local budget = tonumber(ARGV[4])
if budget >= 0 then
  local room = budget - tonumber(o[3] or '0') - tonumber(o[2] or '0')
  granted = math.min(granted, math.floor(room / amount))
end
if granted <= 0 then return {1, 0} end
local prefix = 'hp:' .. ARGV[7] .. ':' .. granted .. ':'
local holds = {}
for i = 1, granted do
  holds[#holds + 1] = prefix .. i
  holds[#holds + 1] = ARGV[1]
end
redis.call('HSET', KEYS[2], unpack(holds))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[6] .. '\nhpb:' .. ARGV[7] .. ':' .. granted)
-- An integer printed as one ("%d"), not with Lua's "%.14g", which writes 1e14 and above with an exponent.
redis.call('HINCRBY', KEYS[1], 'held', string.format('%d', granted * amount))
return {1, granted}
