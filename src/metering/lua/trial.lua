--[[
trial: hold a slot for one model response of a BYO trial org, within its limits. A slot counts
against the limits from admission on, so concurrent calls cannot overshoot them; trial_end.lua
confirms it (the upstream answered) or releases it (the call failed), and reclaim.lua releases it
when its gateway died mid-call.

KEYS[1] set of the org's plans that count: a confirmed or an in-flight response
KEYS[2] hash planId -> confirmed responses
KEYS[3] hash planId -> responses in flight
KEYS[4] hash requestId -> planId, the slots in flight
KEYS[5] expiry zset of the shard "orgId\nrequestId" scored by expiry (ms), shared with the holds
KEYS[6] org hash: its field `tl` says the confirmed counts were loaded from Postgres (trial_load.lua)
ARGV[1] planId
ARGV[2] most distinct plans
ARGV[3] most responses per plan (confirmed + in flight)
ARGV[4] requestId
ARGV[5] expiry time of the slot (ms since epoch)
ARGV[6] expiry zset member

Returns 0 admitted (a slot is held; also for a repeat of a held request: idempotent), 1 too many
plans, 2 too many responses in this plan, -1 not loaded (Redis lost the counters: the caller loads
them from usage_records and retries, as for balances; a missing count is never read as 0).
]]
if redis.call('HEXISTS', KEYS[4], ARGV[4]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[6], 'tl') == 0 then return -1 end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 1
end
local used = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') + tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if used >= tonumber(ARGV[3]) then return 2 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('HSET', KEYS[4], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[6])
return 0
