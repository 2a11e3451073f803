-- Forget lost nodes that left nothing behind: no incarnation in the cluster state's owner set
-- (lua/cluster/common.lua, P:nodes) and no in-flight webhook deliveries (P:webhooks:in_flight:<node>,
-- relay/webhooks/redis_store.py). A node that came back meanwhile is kept, and so is one that some part
-- of some node still has to take over, whichever node's parts asked.
-- KEYS[1] the node id set. ARGV[1] P, ARGV[2] the calling node's id, ARGV[3...] lost node ids.
-- Returns how many were forgotten.
local p = ARGV[1]
local holders = {}
for _, owner in ipairs(redis.call("SMEMBERS", p .. ":nodes")) do
  local node = string.match(owner, "^(.*)%.%d+$")
  if node then
    holders[node] = true
  end
end
local forgotten = 0
for i = 3, #ARGV do
  local node = ARGV[i]
  if not holders[node]
    and redis.call("EXISTS", alive_key(p, node)) == 0
    and redis.call("LLEN", p .. ":webhooks:in_flight:" .. node) == 0 then
    forgotten = forgotten + redis.call("SREM", node_ids_key(p), node)
  end
end
return forgotten
