-- Occupied channels of an app whose names start with a prefix, with their subscription counts.
-- KEYS: none. ARGV[1] prefix, ARGV[2] app_id, ARGV[3] channel name prefix ("" for all).
-- Returns a flat list: channel, subscription_count, channel, subscription_count, ...
local p, app, name_prefix = ARGV[1], ARGV[2], ARGV[3]
local low, high = "-", "+"
if name_prefix ~= "" then
  -- Channel names are ASCII, so every name with the prefix sorts below prefix .. "\255".
  low, high = "[" .. name_prefix, "(" .. name_prefix .. "\255"
end
local index = app_key(p, app, "channels")
local flat = {}
for _, channel in ipairs(redis.call("ZRANGEBYLEX", index, low, high)) do
  local count = redis.call("HLEN", channel_key(p, app, channel, "subs"))
  if count > 0 then
    flat[#flat + 1] = channel
    flat[#flat + 1] = count
  end
end
return flat
