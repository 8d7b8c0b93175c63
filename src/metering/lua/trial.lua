--[[
trial: count one model response of a BYO trial org, within its limits.

KEYS[1] set of the org's plan ids
KEYS[2] hash planId -> responses
ARGV[1] planId
ARGV[2] most distinct plans
ARGV[3] most responses per plan

Returns 0 admitted (and counted), 1 too many plans, 2 too many responses in this plan.
]]
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 1
end
if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') >= tonumber(ARGV[3]) then return 2 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 0
