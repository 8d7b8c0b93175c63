--[[
rate_lib: the rate-limit step shared by reserve.lua and rate.lua. It is not a script of its own:
redis-store.ts prepends it to those two when it loads them, so the check and the count happen in
the same atomic script as the reserve (no extra round trip) and the algorithm exists once.

Fixed windows of one minute, aligned to the epoch minute. Each scope (the org, the api key) with a
limit has a hash {w: window start (ms), r: requests, t: tokens} in its shard's hash tag; a hash of
an older window counts as empty and is overwritten. A call is admitted iff every limit that is set
has room: r + 1 <= rpm and t + tokens <= tpm; then, and only then, both scopes count it, so
concurrent calls through any number of gateways never pass a limit within a window.

rate_admit(rkeys, lim, window, window_ms, reset_ms, tokens)
  rkeys   {org hash, key hash}
  lim     {org rpm, org tpm, key rpm, key tpm}, -1 for no limit
  window  start of the current window (ms); reset_ms: ms until it ends
  tokens  the call's token estimate
Returns admitted (boolean) and the header state {req limit, req remaining, req reset ms, tok limit,
tok remaining, tok reset ms}: for each kind, the scope with the least room (limit -1: none set).
]]
local function rate_admit(rkeys, lim, window, window_ms, reset_ms, tokens)
  local used = {}
  local ok = true
  for i = 1, 2 do
    local rpm, tpm = lim[2 * i - 1], lim[2 * i]
    if rpm >= 0 or tpm >= 0 then
      local v = redis.call('HMGET', rkeys[i], 'w', 'r', 't')
      local w = tonumber(v[1]) or -1
      -- {requests, tokens, window, new window?}. A gateway whose clock runs behind another's joins
      -- the later window it finds rather than resetting it: a scope's windows only move forward,
      -- so clock skew between instances shifts a boundary but never lets a window count twice.
      local u = {0, 0, window, true}
      if w >= window then u = {tonumber(v[2]) or 0, tonumber(v[3]) or 0, w, false} end
      used[i] = u
      if (rpm >= 0 and u[1] + 1 > rpm) or (tpm >= 0 and u[2] + tokens > tpm) then ok = false end
    end
  end
  local state = {-1, 0, reset_ms, -1, 0, reset_ms}
  for i = 1, 2 do
    local u = used[i]
    if u then
      if ok then
        u[1] = u[1] + 1
        u[2] = u[2] + tokens
        -- '%d', not a Lua number: Lua would write a large count as 1.2e+15.
        redis.call('HSET', rkeys[i], 'w', string.format('%d', u[3]), 'r', string.format('%d', u[1]),
          't', string.format('%d', u[2]))
        -- A new window: the hash goes away a window after this one ends, unless used again.
        if u[4] then redis.call('PEXPIREAT', rkeys[i], u[3] + 2 * window_ms) end
      end
      local rpm, tpm = lim[2 * i - 1], lim[2 * i]
      local reset = reset_ms + u[3] - window
      if rpm >= 0 and (state[1] < 0 or rpm - u[1] < state[2]) then
        state[1] = rpm
        state[2] = rpm - u[1]
        state[3] = reset
      end
      if tpm >= 0 and (state[4] < 0 or tpm - u[2] < state[5]) then
        state[4] = tpm
        state[5] = tpm - u[2]
        state[6] = reset
      end
    end
  end
  return ok, state
end

