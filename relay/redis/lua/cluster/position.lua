-- Where one connection of a user stands on a recovering channel, for a subscribe of the same user on another
-- node while this connection is still here (maybe dead, not noticed yet; maybe another tab).
-- KEYS: none. ARGV[1] prefix, ARGV[2] owner, ARGV[3] app_id, ARGV[4] channel, ARGV[5] user_id,
--   ARGV[6] socket_id, ARGV[7] the newest event id it provably received, ARGV[8] ttl in milliseconds.
-- Returns 1.
local p, owner, app, channel, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = channel_key(p, app, channel, "at:" .. user)
redis.call("HSET", key, ARGV[6], ARGV[7] .. SEP .. owner .. SEP .. string.format("%d", now_ms()))
redis.call("PEXPIRE", key, ARGV[8])
return 1
