-- Move due retries to ready.
-- KEYS[1] retry, KEYS[2] ready. ARGV[1] now (ms), ARGV[2] batch.
-- Returns the ms of the next retry still waiting, or -1.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, blob in ipairs(due) do
  redis.call('ZREM', KEYS[1], blob)
  redis.call('RPUSH', KEYS[2], blob)
end
local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if next[2] then return tonumber(next[2]) end
return -1
