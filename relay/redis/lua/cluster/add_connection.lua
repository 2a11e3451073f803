-- Count one more open connection of an app on this owner.
-- KEYS: none. ARGV[1] prefix, ARGV[2] owner, ARGV[3] app_id.
-- Returns the app's open connections summed over live owners only (a dead node's connections stop
-- counting as soon as its heartbeat expires, before any sweep), or -1 when this owner's own heartbeat
-- has expired: the node was presumed dead and must re-register before writing anything.
local p, owner, app = ARGV[1], ARGV[2], ARGV[3]
if not is_alive(p, owner) then
  return -1
end
redis.call("HINCRBY", node_key(p, owner, "conns"), app, 1)
local total = 0
for _, node in ipairs(redis.call("SMEMBERS", p .. ":nodes")) do
  if is_alive(p, node) then
    total = total + tonumber(redis.call("HGET", node_key(p, node, "conns"), app) or 0)
  end
end
return total
