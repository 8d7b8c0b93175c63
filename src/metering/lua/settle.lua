--[[
settle: end a call. Releases its hold, debits its cost and appends its ledger event, in one step,
so a debit is never applied without its event nor its event without the debit.

KEYS[1] org hash    {bal, held}
KEYS[2] holds hash  requestId -> amount
KEYS[3] expiry zset
KEYS[4] done marker of requestId
KEYS[5] ledger stream of the shard
ARGV[1] requestId
ARGV[2] cost (nanodollars, >= 0)
ARGV[3] ledger event (JSON)
ARGV[4] expiry zset member
ARGV[5] done marker TTL (seconds)
ARGV[6] the field of the billing month the call was admitted in, "m<monthStart>"
ARGV[7] the org's auto-recharge threshold, or -1 for none

Settle always succeeds once the balance is loaded, even when the cost exceeds the hold: the balance
may then go below zero, by at most this call's excess over its hold. A cost of 0 debits nothing but
still appends the event: it is the call's usage record.
Returns {status, balance, rebuy}: status 0 settled, 1 duplicate (already settled; nothing
changed), -1 not loaded (Redis lost the balance since the reserve: load it and retry). rebuy is 1
for the one settle that took the balance below the auto-recharge threshold while no recharge was
pending: it sets the org's `rebuy` flag, so concurrent settles crossing the line request one.

Performance: one HMGET reads the balance, the holds total and the month's spend, and one HSET
writes all three (this was two HGETs and three HINCRBYs). The new values are computed in Lua and
written with '%d': the amounts are safe integers (checked before they are sent, and balances stay
below 2^53 nanodollars, $9M), which Lua's doubles hold exactly, and '%d' writes them in full where
a plain Lua number would become "1.2e+15".
]]
local o = redis.call('HMGET', KEYS[1], 'bal', 'held', ARGV[6])
if redis.call('EXISTS', KEYS[4]) == 1 then return {1, tonumber(o[1] or '0')} end
if not o[1] then return {-1, 0} end
local bal = tonumber(o[1])
local fields = {}
local hold = redis.call('HGET', KEYS[2], ARGV[1])
if hold then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[4])
  fields[#fields + 1] = 'held'
  fields[#fields + 1] = string.format('%d', tonumber(o[2] or '0') - tonumber(hold))
end
local cost = tonumber(ARGV[2])
if cost > 0 then
  bal = bal - cost
  fields[#fields + 1] = 'bal'
  fields[#fields + 1] = string.format('%d', bal)
  fields[#fields + 1] = ARGV[6]
  fields[#fields + 1] = string.format('%d', tonumber(o[3] or '0') + cost)
end
-- One HSET for the hold released, the debit and the month's spend (three HINCRBYs before).
if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
redis.call('XADD', KEYS[5], '*', 'e', ARGV[3], 'b', string.format('%d', bal))
redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[5])
local rebuy = 0
local threshold = tonumber(ARGV[7])
if threshold >= 0 and bal < threshold then
  rebuy = redis.call('HSETNX', KEYS[1], 'rebuy', ARGV[1])
end
return {0, bal, rebuy}
