-- Queue deliveries up to the limit (ready plus retry), in order.
-- KEYS[1] ready, KEYS[2] retry. ARGV[1] limit (deliveries), ARGV[2..] Delivery JSON.
-- Returns how many were queued; the rest would pass the limit.
local queued = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
local limit = tonumber(ARGV[1])
local accepted = 0
for i = 2, #ARGV do
  if queued >= limit then break end
  redis.call('RPUSH', KEYS[1], ARGV[i])
  queued = queued + 1
  accepted = accepted + 1
end
return accepted
