-- Record presence connections as held by this owner (one from a live client, or many when
-- re-writing the node's state after an outage); an entry of an earlier incarnation is taken over.
-- KEYS: none. ARGV[1] prefix, ARGV[2] owner, then groups of five ARGV[i..i+4] =
--   app_id, channel, socket_id, user_id, user_info as JSON.
-- Returns one flag per group: 1 when that connection is the user's first on the channel anywhere
-- (member_added), 2 when it is and a sweep had announced the user's removal (the user is back); or -1
-- (for the whole call, nothing written) when this owner's heartbeat has expired.
local p, owner = ARGV[1], ARGV[2]
if not is_alive(p, owner) then
  return -1
end
local own_index = node_key(p, owner, "members")
local flags = {}
for i = 3, #ARGV, 5 do
  local app, channel, socket, user, info = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local msocks = channel_key(p, app, channel, "msocks")
  local entry = app .. SEP .. channel .. SEP .. socket .. SEP .. user
  local previous = redis.call("HGET", msocks, socket)
  local first = 0
  if previous then
    -- The node subscribes a socket to a channel once, so the same socket never brings another user.
    local fields = split(previous, 2)
    if fields[2] == user and fields[1] ~= owner then
      redis.call("SREM", node_key(p, fields[1], "members"), entry)
      redis.call("HSET", msocks, socket, owner .. SEP .. user)
      redis.call("SADD", own_index, entry)
    end
  else
    redis.call("HSET", msocks, socket, owner .. SEP .. user)
    redis.call("SADD", own_index, entry)
    if redis.call("HINCRBY", channel_key(p, app, channel, "ucount"), user, 1) == 1 then
      redis.call("HSET", channel_key(p, app, channel, "info"), user, info)
      redis.call("ZADD", channel_key(p, app, channel, "order"), redis.call("INCR", p .. ":seq"), user)
      first = 1 + redis.call("HDEL", channel_key(p, app, channel, "gone"), user)
    end
  end
  flags[#flags + 1] = first
end
return flags
