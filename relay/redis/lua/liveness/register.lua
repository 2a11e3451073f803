-- Start a new incarnation of this node: earlier incarnations are dead from now on.
-- KEYS[1] the node's alive key, KEYS[2] the node id set. ARGV[1] P, ARGV[2] node id, ARGV[3] the new
-- incarnation, ARGV[4] node_timeout in milliseconds. Returns 1.
local p, node, owner, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call("SET", alive_key(p, node), owner, "PX", ttl)
redis.call("SADD", node_ids_key(p), node)
return 1
