--[[
trial_end: end a BYO trial call. Confirms its slot (the upstream answered: one model response of
the plan, for good) or releases it (the call failed or was refused: the limit is given back, and a
plan left with nothing confirmed or in flight stops counting), and appends the call's usage event,
in one step, so a retried end neither counts twice nor loses the usage record.

KEYS[1] set of the org's plans that count
KEYS[2] hash planId -> confirmed responses
KEYS[3] hash planId -> responses in flight
KEYS[4] hash requestId -> planId, the slots in flight
KEYS[5] expiry zset of the shard
KEYS[6] ledger stream of the shard
ARGV[1] requestId
ARGV[2] 1 to confirm, 0 to release
ARGV[3] ledger event (JSON)
ARGV[4] expiry zset member

Returns 1 when the slot was ended here, 0 when there was none (already ended, or reclaimed after
its TTL: then nothing is counted). The event is appended either way; the flusher writes it once.
]]
local plan = redis.call('HGET', KEYS[4], ARGV[1])
local ended = 0
if plan then
  redis.call('HDEL', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[4])
  local inflight = redis.call('HINCRBY', KEYS[3], plan, -1)
  if inflight <= 0 then redis.call('HDEL', KEYS[3], plan) end
  if ARGV[2] == '1' then
    redis.call('HINCRBY', KEYS[2], plan, 1)
  elseif inflight <= 0 and tonumber(redis.call('HGET', KEYS[2], plan) or '0') == 0 then
    redis.call('SREM', KEYS[1], plan)
  end
  ended = 1
end
redis.call('XADD', KEYS[6], '*', 'e', ARGV[3], 'b', '')
return ended
