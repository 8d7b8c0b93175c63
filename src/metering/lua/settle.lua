--[[
settle: end calls of one org, one after the other. For each, releases its hold, debits its cost
and appends its ledger event, in one step, so a debit is never applied without its event nor its
event without the debit. One script runs the calls of an org that one gateway settles in the same
moment (a batch of one is the single call): the script's own cost (the call into Lua, its KEYS and
ARGV tables, its reply) is paid once for them all, and so are the HINCRBYs of an org's held amount,
balance and month's spend. The result is the same as settling the calls one by one, in their order.
A hold that is not a number fails the whole script with "SETTLE_BAD_HOLD", before it wrote anything
(the client then settles the calls one by one, so only that call fails).

KEYS[1] expiry zset of the shard
KEYS[2] ledger stream of the shard
then for each call i (from 1), at KEYS[3i .. 3i+2]:
  org hash {bal, held}, holds hash (requestId -> amount), done marker of the call's requestId
ARGV[1] done marker TTL (seconds)
ARGV[2] now (ms since epoch), to tell whether a pending recharge's lease has ended
then for each call i, at ARGV[6i-3 .. 6i+2]:
  the call's hold: its requestId, or the id of the pooled hold it was admitted with
  cost (nanodollars, >= 0)
  ledger event (JSON)
  expiry zset member of the hold; empty for a pooled hold whose batch has others left
  the field of the billing month the call was admitted in, "m<monthStart>"
  the org's auto-recharge threshold and when the lease this settle may take ends (ms since epoch),
  as "<threshold>:<leaseEnd>"; empty when the org has no threshold

Settle always succeeds once the balance is loaded, even when the cost exceeds the hold: the balance
may then go below zero, by at most this call's excess over its hold. A cost of 0 debits nothing but
still appends the event: it is the call's usage record.
Returns {status, balance, rebuy} for each call, one after the other: status 0 settled, 1 duplicate
(already settled; nothing changed), -1 not loaded (Redis lost the balance since the reserve: load
it and retry). rebuy is 1 for the one settle that took the balance below the auto-recharge
threshold while no recharge was pending: it sets the org's `rebuy` lease (its end, ms), so
concurrent settles crossing the line request one; a lease whose end passed (its gateway died during
the payment) is taken again.
]]
-- First only reads: which calls settle, against which holds. A hold that is not a number (a store
-- someone else wrote to) fails the script here, before it changed anything.
local n = (#KEYS - 2) / 3
local status, cost, held = {}, {}, {}
local orgs, order = {}, {}
local settled = {} -- done markers of this script's settled calls: a repeat within it is a duplicate
local taken = {} -- holds key -> ids this script takes: a second call naming one finds it gone
for i = 1, n do
  local k, a = 3 * i, 6 * i - 3
  local org, holds, done, id = KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[a]
  local o = orgs[org]
  if not o then
    o = {held = 0, cost = 0, months = {}}
    orgs[org] = o
    order[#order + 1] = org
  end
  status[i] = 0
  local took = taken[holds]
  if not took then
    took = {}
    taken[holds] = took
  end
  local hold
  if not settled[done] and not took[id] then hold = redis.call('HGET', holds, id) end
  if settled[done] then
    status[i] = 1
  elseif hold then
    -- Only a reserve that found the balance and no done marker makes a hold, and only settle (which
    -- sets the marker), release or reclaim take it away: while it is there the call is unsettled and
    -- the balance is loaded, so neither needs a look of its own. Holds are the client's integer
    -- strings (one written by an older reserve went through Lua's "%.14g", "1e+14"); tonumber reads
    -- both.
    held[i] = tonumber(hold)
    if not held[i] then return redis.error_reply('SETTLE_BAD_HOLD ' .. id .. ' holds ' .. hold) end
    took[id] = true
  elseif redis.call('EXISTS', done) == 1 then
    status[i] = 1
  elseif not redis.call('HGET', org, 'bal') then
    status[i] = -1
  end
  if status[i] == 0 then
    settled[done] = true
    cost[i] = tonumber(ARGV[a + 1])
    o.cost = o.cost + cost[i]
    local month = ARGV[a + 4]
    o.months[month] = (o.months[month] or 0) + cost[i]
  end
end

-- Then the writes: the holds taken away,
for i = 1, n do
  if held[i] then
    local k, a = 3 * i, 6 * i - 3
    redis.call('HDEL', KEYS[k + 1], ARGV[a])
    orgs[KEYS[k]].held = orgs[KEYS[k]].held + held[i]
    if ARGV[a + 3] ~= '' then redis.call('ZREM', KEYS[1], ARGV[a + 3]) end
  end
end

-- Each org's hold, debit and month's spend in one HINCRBY each, however many of its calls settled.
-- The amounts go as integer strings: a Lua number passed to redis.call is formatted as a float.
for _, org in ipairs(order) do
  local o = orgs[org]
  if o.held ~= 0 then redis.call('HINCRBY', org, 'held', string.format('%d', -o.held)) end
  if o.cost ~= 0 then
    -- The balance before this script's debits, then after each call's, in the calls' order.
    o.bal = redis.call('HINCRBY', org, 'bal', string.format('%d', -o.cost)) + o.cost
    for month, spent in pairs(o.months) do
      if spent ~= 0 then redis.call('HINCRBY', org, month, string.format('%d', spent)) end
    end
  else
    o.bal = tonumber(redis.call('HGET', org, 'bal') or '0')
  end
end

-- Each settled call's event (with the balance after it) and done marker, and the recharge lease.
local out = {}
for i = 1, n do
  local k, a = 3 * i, 6 * i - 3
  local org = KEYS[k]
  local o = orgs[org]
  local rebuy = 0
  if status[i] == 0 then
    o.bal = o.bal - cost[i]
    redis.call('XADD', KEYS[2], '*', 'e', ARGV[a + 2], 'b', o.bal)
    redis.call('SET', KEYS[k + 2], ARGV[a + 1], 'EX', ARGV[1])
    local lease = ARGV[a + 5]
    if lease ~= '' then
      local sep = string.find(lease, ':', 1, true)
      local threshold = tonumber(string.sub(lease, 1, sep - 1))
      -- A flag from before leases (a request id) reads as an ended lease.
      if threshold >= 0 and o.bal < threshold
        and (tonumber(redis.call('HGET', org, 'rebuy') or '-1') or -1) < tonumber(ARGV[2]) then
        redis.call('HSET', org, 'rebuy', string.sub(lease, sep + 1))
        rebuy = 1
      end
    end
  end
  out[#out + 1] = status[i]
  out[#out + 1] = status[i] == -1 and 0 or o.bal
  out[#out + 1] = rebuy
end
return out
