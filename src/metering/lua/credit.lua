--[[
credit: add credits and append the credit's ledger event, once per credit id.

KEYS[1] org hash    {bal, held}
KEYS[2] done marker of the credit id
KEYS[3] ledger stream of the shard
ARGV[1] amount (nanodollars, > 0)
ARGV[2] ledger event (JSON)
ARGV[3] done marker TTL (seconds)

Returns {status, balance, amount}: 0 credited, 1 duplicate (amount is the one first credited under
this id), -1 not loaded (load the balance from Postgres and retry).
]]
local bal = redis.call('HGET', KEYS[1], 'bal')
local first = redis.call('GET', KEYS[2])
if first then return {1, tonumber(bal or '0'), tonumber(first)} end
if not bal then return {-1, 0, 0} end
bal = redis.call('HINCRBY', KEYS[1], 'bal', tonumber(ARGV[1]))
redis.call('XADD', KEYS[3], '*', 'e', ARGV[2], 'b', bal)
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
return {0, bal, tonumber(ARGV[1])}
