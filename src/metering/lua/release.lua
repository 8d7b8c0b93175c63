--[[
release: void the hold of a call that never started. No debit, no ledger event; idempotent.

KEYS[1] org hash    {bal, held}
KEYS[2] holds hash  requestId -> amount
KEYS[3] expiry zset
ARGV[1] requestId
ARGV[2] expiry zset member; empty for a pooled hold (its batch's entry is left to reclaim)

Returns the amount released (0 when there was no hold).
]]
local hold = redis.call('HGET', KEYS[2], ARGV[1])
if not hold then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
-- 0 - x, not -x: a hold of 0 would give -0, which HINCRBY rejects mid-script.
redis.call('HINCRBY', KEYS[1], 'held', 0 - tonumber(hold))
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[3], ARGV[2]) end
return tonumber(hold)
