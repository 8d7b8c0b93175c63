--[[
reclaim: release the holds and BYO trial slots of one shard whose expiry passed (their gateway
died mid-call).

KEYS[1] expiry zset of the shard  "orgId\nrequestId" scored by expiry (ms since epoch), or
        "orgId\nhpb:<batch>:<n>" for a batch of pooled holds "hp:<batch>:<n>:1..n" (reserve_many.lua)
ARGV[1] now (ms since epoch)
ARGV[2] key prefix of the shard, e.g. "pg:{pg:3}:" (the org's holds and trial keys are derived
        from it; they share the shard's hash tag, so they live in the same cluster slot as KEYS[1])
ARGV[3] most expiry entries to process in one call (a script blocks its Redis node while it runs)

Returns {processed, released}: expiry entries removed (when it equals ARGV[3] there may be more),
and holds and slots released (an entry whose hold is gone, as after purgeOrg, releases nothing).
A later settle of a reclaimed request still debits once: its done marker is set by settle only.
A reclaimed trial slot is given back, as for a call that failed: the late end counts nothing.
]]
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local released = 0
for _, member in ipairs(expired) do
  local sep = string.find(member, '\n', 1, true)
  if sep then
    local org = string.sub(member, 1, sep - 1)
    local rid = string.sub(member, sep + 1)
    local holds = ARGV[2] .. 'h:' .. org
    -- A pooled batch's entry ("hpb:<batch>:<n>") stands for its holds "hp:<batch>:<n>:1..n".
    local ids = {rid}
    if string.sub(rid, 1, 4) == 'hpb:' then
      local head = 'hp:' .. string.sub(rid, 5) .. ':'
      local n = tonumber(string.match(rid, ':(%d+)$')) or 0
      ids = {}
      for i = 1, n do ids[i] = head .. i end
    end
    for _, id in ipairs(ids) do
      local hold = redis.call('HGET', holds, id)
      if hold then
        redis.call('HDEL', holds, id)
        -- 0 - x, not -x: a hold of 0 would give -0, which HINCRBY rejects mid-script.
        redis.call('HINCRBY', ARGV[2] .. 'o:' .. org, 'held', 0 - tonumber(hold))
        released = released + 1
      end
    end
    local slots = ARGV[2] .. 'ti:' .. org
    local plan = redis.call('HGET', slots, rid)
    if plan then
      redis.call('HDEL', slots, rid)
      local inflight = redis.call('HINCRBY', ARGV[2] .. 'tf:' .. org, plan, -1)
      if inflight <= 0 then
        redis.call('HDEL', ARGV[2] .. 'tf:' .. org, plan)
        if tonumber(redis.call('HGET', ARGV[2] .. 'tr:' .. org, plan) or '0') == 0 then
          redis.call('SREM', ARGV[2] .. 'tp:' .. org, plan)
        end
      end
      released = released + 1
    end
  end
  redis.call('ZREM', KEYS[1], member)
end
return {#expired, released}
