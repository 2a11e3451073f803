-- A presence channel's members in join order, read atomically.
-- KEYS: none. ARGV[1] prefix, ARGV[2] app_id, ARGV[3] channel.
-- Returns a flat list: user_id, user_info JSON, user_id, user_info JSON, ...
local p, app, channel = ARGV[1], ARGV[2], ARGV[3]
local users = redis.call("ZRANGE", channel_key(p, app, channel, "order"), 0, -1)
if #users == 0 then
  return {}
end
local infos = redis.call("HMGET", channel_key(p, app, channel, "info"), unpack(users))
local flat = {}
for i, user in ipairs(users) do
  flat[#flat + 1] = user
  flat[#flat + 1] = infos[i] or "null"
end
return flat
