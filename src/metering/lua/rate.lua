--[[
rate: the rate-limit step alone, for BYO calls (they hold no credits, so they run no reserve).
Loaded with rate_lib.lua prepended. Run only when the org or the key has a limit set, so a BYO
call without limits still makes no Redis round trip at admission.

KEYS[1] rate hash of the org
KEYS[2] rate hash of the api key
ARGV[1] rate window start (ms)       ARGV[2] ms until it ends     ARGV[3] window length (ms)
ARGV[4..7] org rpm, org tpm, key rpm, key tpm (-1: no limit)
ARGV[8] the call's token estimate

Returns {admitted 1|0, <six numbers of rate state, see rate_lib.lua>}.
]]
local ok, state = rate_admit({KEYS[1], KEYS[2]},
  {tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])},
  tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[2]), tonumber(ARGV[8]))
local reply = {ok and 1 or 0}
for i = 1, 6 do reply[1 + i] = state[i] end
return reply
