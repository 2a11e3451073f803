-- A subscribe to a recovering channel on one Redis: is the user returning, and what did it miss
-- (docs/recovery.md)? Both halves in one call (on a Redis Cluster: left.lua, then history_after.lua).
-- KEYS: none. ARGV[1] prefix, ARGV[2] app_id, ARGV[3] channel, ARGV[4] user_id, ARGV[5] recovery window in
--   milliseconds, ARGV[6] a position the caller's node knows ("" or "<event id>\0<socket_id>\0<age ms>"),
--   ARGV[7] the subscribing socket_id.
-- Returns what missed() in common.lua returns.
local p, app, channel, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local id, socket, age = where_left(p, app, channel, user, ARGV[6], ARGV[7])
return missed(channel_key(p, app, channel, "history"), tonumber(ARGV[5]), id, socket, age)
