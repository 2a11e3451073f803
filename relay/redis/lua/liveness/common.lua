-- Helpers prepended to every script in this folder (relay/redis/scripts.py joins them).
-- ARGV[1] of every script is the key prefix P (the hash tag "{prefix}" on a Redis Cluster, so every key
-- here is in one slot); KEYS name the caller's own keys only so a cluster client routes the call.
--
-- The one liveness record of a node (relay/redis/heartbeat.py), read by the cluster state scripts
-- (lua/cluster/common.lua, is_alive) and by the webhook queue (lua/webhooks/recover.lua):
--   P:node:<node_id>:alive   STRING the node's current incarnation "<node_id>.<n>"; expires node_timeout
--                                   after the node's last beat
--   P:node_ids               SET    node ids that may have left something behind in Redis (cluster state,
--                                   in-flight webhook deliveries); a lost one is forgotten once nothing of
--                                   it is left (forget.lua reads the owners set and the in-flight list)

local function alive_key(p, node)
  return p .. ":node:" .. node .. ":alive"
end

local function node_ids_key(p)
  return p .. ":node_ids"
end
