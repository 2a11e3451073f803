-- Record that a node incarnation may hold entries from now on; the node's heartbeat made it alive first
-- (relay/redis/heartbeat.py).
-- KEYS: none. ARGV[1] prefix, ARGV[2] owner.
-- Returns 1, or -1 when the owner is not (or no longer) alive.
local p, owner = ARGV[1], ARGV[2]
if not is_alive(p, owner) then
  return -1
end
redis.call("SADD", p .. ":nodes", owner)
return 1
