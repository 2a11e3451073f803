-- Count one connection of an app fewer on this owner.
-- KEYS: none. ARGV[1] prefix, ARGV[2] owner, ARGV[3] app_id.
-- Returns this owner's remaining connections of the app.
local p, owner, app = ARGV[1], ARGV[2], ARGV[3]
local key = node_key(p, owner, "conns")
local left = redis.call("HINCRBY", key, app, -1)
if left <= 0 then
  redis.call("HDEL", key, app)
  return 0
end
return left
