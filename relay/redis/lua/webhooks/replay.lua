-- Queue dead letters again; a letter is replayed only by the caller that removed it, so two operators
-- cannot double it.
-- KEYS[1] dead:<app>, KEYS[2] ready. ARGV pairs (DeadLetter JSON, Delivery JSON to queue).
-- Returns how many were replayed.
local replayed = 0
for i = 1, #ARGV, 2 do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i + 1])
    replayed = replayed + 1
  end
end
return replayed
