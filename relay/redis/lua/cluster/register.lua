-- Register a node incarnation and start its heartbeat.
-- KEYS: none. ARGV[1] prefix, ARGV[2] owner, ARGV[3] heartbeat TTL in milliseconds.
-- Returns 1.
local p, owner, ttl = ARGV[1], ARGV[2], ARGV[3]
redis.call("SADD", p .. ":nodes", owner)
redis.call("SET", node_key(p, owner, "alive"), "1", "PX", ttl)
return 1
