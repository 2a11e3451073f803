-- On a Redis Cluster, the first half of recover.lua, on the state shard: where the subscribing user left the
-- recovering channel from (where_left() in common.lua). The history, on the channel's shard, is read next
-- (history_after.lua).
-- KEYS: none. ARGV[1] prefix, ARGV[2] app_id, ARGV[3] channel, ARGV[4] user_id, ARGV[5] a position the
--   caller's node knows ("" or "<event id>\0<socket_id>\0<age ms>"), ARGV[6] the subscribing socket_id.
-- Returns {} (nobody to recover) or {id, socket_id, age ms}.
local id, socket, age = where_left(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
if not id then
  return {}
end
return {id, socket, string.format("%d", age)}
