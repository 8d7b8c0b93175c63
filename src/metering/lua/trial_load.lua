--[[
trial_load: set a BYO trial org's confirmed responses per plan from Postgres (usage_records) after
Redis lost them, as load.lua does for balances, and mark them loaded so trial.lua admits again.

KEYS[1] set of the org's plans that count
KEYS[2] hash planId -> confirmed responses
KEYS[3] org hash (field `tl`: loaded)
ARGV    planId, confirmed, planId, confirmed, ...

A count already here is raised to Postgres's, never lowered: Redis's own count includes responses
the flusher has not written yet. Returns 1 when this call marked the org loaded, 0 when it already was.
]]
for i = 1, #ARGV, 2 do
  local plan = ARGV[i]
  local confirmed = tonumber(ARGV[i + 1])
  if confirmed > tonumber(redis.call('HGET', KEYS[2], plan) or '0') then
    redis.call('HSET', KEYS[2], plan, confirmed)
  end
  if confirmed > 0 then redis.call('SADD', KEYS[1], plan) end
end
return redis.call('HSETNX', KEYS[3], 'tl', 1)
