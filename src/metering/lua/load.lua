--[[
load: set an org's balance from Postgres iff Redis has none (after a restart without persistence).

KEYS[1] org hash {bal, held}
ARGV[1] balance (nanodollars)

Returns 1 when set, 0 when a balance was already there (it is left alone).
]]
if redis.call('HSETNX', KEYS[1], 'bal', ARGV[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'held', 0)
return 1
