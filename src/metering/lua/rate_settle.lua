--[[
rate_settle: corrects the token count of the window a call was admitted in by (actual - estimated)
tokens, so a window counts the tokens used, not the estimates. Not money: it runs next to the
settle (pipelined, not inside settle.lua), and a window that already ended is left alone (the
correction is then dropped: the next window does not pay for the previous one's estimates).

KEYS[1] rate hash of the org
KEYS[2] rate hash of the api key
ARGV[1] the window start the call was admitted in (ms)
ARGV[2] actual - estimated tokens (usually negative: estimates are high)

Returns how many scopes were corrected.
]]
local n = 0
for i = 1, 2 do
  if redis.call('HGET', KEYS[i], 'w') == ARGV[1] then
    redis.call('HINCRBY', KEYS[i], 't', ARGV[2])
    n = n + 1
  end
end
return n
