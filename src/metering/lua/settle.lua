--[[
settle: end a call. Releases its hold, debits its cost and appends its ledger event, in one step,
so a debit is never applied without its event nor its event without the debit.

KEYS[1] org hash    {bal, held}
KEYS[2] holds hash  requestId -> amount
KEYS[3] expiry zset
KEYS[4] done marker of requestId
KEYS[5] ledger stream of the shard
ARGV[1] the call's hold: its requestId, or the id of the pooled hold it was admitted with
ARGV[2] cost (nanodollars, >= 0)
ARGV[3] ledger event (JSON)
ARGV[4] expiry zset member of the hold; empty for a pooled hold whose batch has others left
ARGV[5] done marker TTL (seconds)
ARGV[6] the field of the billing month the call was admitted in, "m<monthStart>"
ARGV[7] minus the cost ("-<ARGV[2]>"), for HINCRBY
ARGV[8] the org's auto-recharge threshold; ARGV[8..10] are sent only when the org has one
ARGV[9] now (ms since epoch), to tell whether a pending recharge's lease has ended
ARGV[10] when the lease this settle may take ends (ms since epoch)

Settle always succeeds once the balance is loaded, even when the cost exceeds the hold: the balance
may then go below zero, by at most this call's excess over its hold. A cost of 0 debits nothing but
still appends the event: it is the call's usage record.
Returns {status, balance, rebuy}: status 0 settled, 1 duplicate (already settled; nothing
changed), -1 not loaded (Redis lost the balance since the reserve: load it and retry). rebuy is 1
for the one settle that took the balance below the auto-recharge threshold while no recharge was
pending: it sets the org's `rebuy` lease (its end, ms), so concurrent settles crossing the line
request one; a lease whose end passed (its gateway died during the payment) is taken again.
]]
-- A hold as HINCRBY takes its negation. Holds are the client's integer strings; one written by
-- an older reserve went through Lua's "%.14g", which prints 1e14 and above with an exponent.
local function negated(hold)
  if string.find(hold, 'e', 1, true) then return string.format('%d', 0 - tonumber(hold)) end
  return '-' .. hold
end
local hold = redis.call('HGET', KEYS[2], ARGV[1])
local bal
if hold then
  -- Only a reserve that found the balance and no done marker makes a hold, and only settle (which
  -- sets the marker), release or reclaim take it away: while it is there the call is unsettled and
  -- the balance is loaded, so neither needs a look of its own (two redis.calls less per call).
  redis.call('HDEL', KEYS[2], ARGV[1])
  if hold ~= '0' then redis.call('HINCRBY', KEYS[1], 'held', negated(hold)) end
  if ARGV[4] ~= '' then redis.call('ZREM', KEYS[3], ARGV[4]) end
else
  bal = redis.call('HGET', KEYS[1], 'bal')
  if redis.call('EXISTS', KEYS[4]) == 1 then return {1, tonumber(bal or '0')} end
  if not bal then return {-1, 0} end
end
if ARGV[2] ~= '0' then
  -- The amounts go to HINCRBY as the client's strings: a Lua number passed to redis.call is
  -- formatted with "%.14g" (glibc's float printer, visible in a profile of this script).
  bal = redis.call('HINCRBY', KEYS[1], 'bal', ARGV[7])
  redis.call('HINCRBY', KEYS[1], ARGV[6], ARGV[2])
else
  bal = tonumber(bal or redis.call('HGET', KEYS[1], 'bal'))
end
redis.call('XADD', KEYS[5], '*', 'e', ARGV[3], 'b', bal)
redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[5])
local rebuy = 0
local threshold = tonumber(ARGV[8] or '-1')
if threshold >= 0 and bal < threshold then
  -- A flag from before leases (a request id) reads as an ended lease.
  local lease = tonumber(redis.call('HGET', KEYS[1], 'rebuy') or '-1') or -1
  if lease < tonumber(ARGV[9]) then
    redis.call('HSET', KEYS[1], 'rebuy', ARGV[10])
    rebuy = 1
  end
end
return {0, bal, rebuy}
