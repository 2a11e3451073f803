-- Forget one presence connection, whichever incarnation of the node recorded it.
-- KEYS: none. ARGV[1] prefix, ARGV[2] app_id, ARGV[3] channel, ARGV[4] socket_id, ARGV[5] user_id.
-- Returns 1 when it was the user's last connection on the channel anywhere (member_removed), else 0.
local p, app, channel, socket, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local msocks = channel_key(p, app, channel, "msocks")
local previous = redis.call("HGET", msocks, socket)
if not previous then
  return 0
end
local fields = split(previous, 2)
if fields[2] ~= user then
  return 0
end
redis.call("HDEL", msocks, socket)
redis.call("SREM", node_key(p, fields[1], "members"), app .. SEP .. channel .. SEP .. socket .. SEP .. user)
return drop_user_connection(p, app, channel, user)
