-- Remember where a user's last connection on a recovering channel stood when it ended.
-- KEYS: none. ARGV[1] prefix, ARGV[2] app_id, ARGV[3] channel, ARGV[4] user_id, ARGV[5] the newest event id
--   that connection provably received, ARGV[6] its socket_id, ARGV[7] how long to remember, in milliseconds.
-- The time is Redis' own, so the node that reads it (recover.lua) measures the absence on the same clock.
-- Returns 1.
local p, app, channel, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local value = ARGV[5] .. SEP .. ARGV[6] .. SEP .. string.format("%d", now_ms())
redis.call("SET", channel_key(p, app, channel, "left:" .. user), value, "PX", ARGV[7])
return 1
