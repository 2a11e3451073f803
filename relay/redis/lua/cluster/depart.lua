-- A connection of a user on a recovering channel ended: remember where it stood, unless the user still has
-- another connection on the channel on a live node (then that one's position is what a return starts from).
-- KEYS: none. ARGV[1] prefix, ARGV[2] app_id, ARGV[3] channel, ARGV[4] user_id, ARGV[5] the newest event id
--   that connection provably received, ARGV[6] its socket_id, ARGV[7] how long to remember, in milliseconds.
-- The time is Redis' own, so the node that reads it (recover.lua) measures the absence on the same clock.
-- Returns 1 when the departure was recorded, 0 when the user is still there.
local p, app, channel, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local at = channel_key(p, app, channel, "at:" .. user)
redis.call("HDEL", at, ARGV[6])
for _, value in ipairs(redis.call("HVALS", at)) do
  if is_alive(p, split(value, 3)[2]) then
    return 0
  end
end
local value = ARGV[5] .. SEP .. ARGV[6] .. SEP .. string.format("%d", now_ms())
redis.call("SET", channel_key(p, app, channel, "left:" .. user), value, "PX", ARGV[7])
return 1
