--[[
load: set an org's balance from Postgres iff Redis has none (after a restart without persistence),
and with it the spend of the current billing month, so the monthly budget checked by reserve holds
across the restart.

KEYS[1] org hash {bal, held, m<monthStart>}
ARGV[1] balance (nanodollars)
ARGV[2] the current billing month's field, "m<monthStart>", or "" for none
ARGV[3] that month's spend from the Postgres ledger (nanodollars)

Returns 1 when set, 0 when a balance was already there (it is left alone, and so is the month's
spend: Redis's own count includes settles Postgres has not seen yet).
]]
if redis.call('HSETNX', KEYS[1], 'bal', ARGV[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'held', 0)
if ARGV[2] ~= '' then redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3]) end
return 1
