-- One beat: keep this node's incarnation alive, and name the nodes whose record expired.
-- KEYS[1] the node's alive key, KEYS[2] the node id set. ARGV[1] P, ARGV[2] node id, ARGV[3] its current
-- incarnation, ARGV[4] node_timeout in milliseconds, ARGV[5] the incarnation to take if this one expired.
-- Returns {1 if the current incarnation had expired (the node was presumed dead and now runs as
-- ARGV[5]) else 0, {node id, ...} of other nodes whose record is gone}.
local p, node, owner, ttl, next_owner = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = alive_key(p, node)
local evicted = 0
if redis.call("GET", key) == owner then
  redis.call("PEXPIRE", key, ttl)
else
  evicted = 1
  redis.call("SET", key, next_owner, "PX", ttl)
end
local ids = node_ids_key(p)
redis.call("SADD", ids, node)  -- again on every beat: a Redis that lost its data learns of us at once
local lost = {}
for _, other in ipairs(redis.call("SMEMBERS", ids)) do
  if other ~= node and redis.call("EXISTS", alive_key(p, other)) == 0 then
    lost[#lost + 1] = other
  end
end
return {evicted, lost}
