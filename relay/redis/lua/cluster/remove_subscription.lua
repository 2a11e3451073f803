-- Forget one subscription, whichever incarnation of the node recorded it.
-- KEYS: none. ARGV[1] prefix, ARGV[2] app_id, ARGV[3] channel, ARGV[4] socket_id.
-- Returns 1 when it was the channel's last subscription anywhere (channel_vacated), else 0.
local p, app, channel, socket = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local owner = redis.call("HGET", channel_key(p, app, channel, "subs"), socket)
if not owner then
  return 0
end
return drop_subscription(p, app, channel, socket, owner)
