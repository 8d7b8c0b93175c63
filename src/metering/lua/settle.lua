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
ARGV[8] now (ms since epoch), to tell whether a pending recharge's lease has ended
ARGV[9] when the lease this settle may take ends (ms since epoch)

Settle always succeeds once the balance is loaded, even when the cost exceeds the hold: the balance
may then go below zero, by at most this call's excess over its hold. A cost of 0 debits nothing but
still appends the event: it is the call's usage record.
Returns {status, balance, rebuy}: status 0 settled, 1 duplicate (already settled; nothing
changed), -1 not loaded (Redis lost the balance since the reserve: load it and retry). rebuy is 1
for the one settle that took the balance below the auto-recharge threshold while no recharge was
pending: it sets the org's `rebuy` lease (its end, ms), so concurrent settles crossing the line
request one; a lease whose end passed (its gateway died during the payment) is taken again.
]]
local bal = redis.call('HGET', KEYS[1], 'bal')
if redis.call('EXISTS', KEYS[4]) == 1 then return {1, tonumber(bal or '0')} end
if not bal then return {-1, 0} end
local hold = redis.call('HGET', KEYS[2], ARGV[1])
if hold then
  redis.call('HDEL', KEYS[2], ARGV[1])
  -- 0 - x, not -x: a hold of 0 would give -0, which HINCRBY rejects mid-script.
  redis.call('HINCRBY', KEYS[1], 'held', 0 - tonumber(hold))
  redis.call('ZREM', KEYS[3], ARGV[4])
end
local cost = tonumber(ARGV[2])
if cost > 0 then
  bal = redis.call('HINCRBY', KEYS[1], 'bal', -cost)
  redis.call('HINCRBY', KEYS[1], ARGV[6], cost)
else
  bal = tonumber(bal)
end
redis.call('XADD', KEYS[5], '*', 'e', ARGV[3], 'b', bal)
redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[5])
local rebuy = 0
local threshold = tonumber(ARGV[7])
if threshold >= 0 and bal < threshold then
  -- A flag from before leases (a request id) reads as an ended lease.
  local lease = tonumber(redis.call('HGET', KEYS[1], 'rebuy') or '-1') or -1
  if lease < tonumber(ARGV[8]) then
    redis.call('HSET', KEYS[1], 'rebuy', ARGV[9])
    rebuy = 1
  end
end
return {0, bal, rebuy}
