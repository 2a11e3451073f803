-- Remove what dead owners (heartbeat expired) still hold, at most ARGV[2] entries per call so one
-- call never blocks Redis for long; callers repeat while the first returned value is 1. Each entry is
-- removed by exactly one call, so each lost member and emptied channel is reported exactly once in
-- the cluster, whichever live nodes sweep and however often. Entries taken over by a newer
-- incarnation of the same node are skipped.
-- KEYS: none. ARGV[1] prefix, ARGV[2] entry budget, ARGV[3] the caller's own owner (never swept here).
-- Returns {more, {app_id, channel, user_id, ...} members lost, {app_id, channel, ...} channels emptied}.
local p, budget, self_owner = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local lost_members, lost_channels = {}, {}
for _, owner in ipairs(redis.call("SMEMBERS", p .. ":nodes")) do
  if owner ~= self_owner and not is_alive(p, owner) then
    -- Its connections stop counting now (add_connection skips dead owners anyway).
    redis.call("DEL", node_key(p, owner, "conns"))
    local entries = redis.call("SPOP", node_key(p, owner, "members"), budget)
    for _, entry in ipairs(entries) do
      local f = split(entry, 4)
      local app, channel, socket, user = f[1], f[2], f[3], f[4]
      local msocks = channel_key(p, app, channel, "msocks")
      if redis.call("HGET", msocks, socket) == owner .. SEP .. user then
        redis.call("HDEL", msocks, socket)
        if drop_user_connection(p, app, channel, user) == 1 then
          local gone = channel_key(p, app, channel, "gone")
          redis.call("HSET", gone, user, 1)
          redis.call("PEXPIRE", gone, GONE_TTL_MS)
          lost_members[#lost_members + 1] = app
          lost_members[#lost_members + 1] = channel
          lost_members[#lost_members + 1] = user
        end
      end
    end
    budget = budget - #entries
    if budget > 0 then
      entries = redis.call("SPOP", node_key(p, owner, "subs"), budget)
      for _, entry in ipairs(entries) do
        local f = split(entry, 3)
        local app, channel, socket = f[1], f[2], f[3]
        if redis.call("HGET", channel_key(p, app, channel, "subs"), socket) == owner then
          if drop_subscription(p, app, channel, socket, owner) == 1 then
            lost_channels[#lost_channels + 1] = app
            lost_channels[#lost_channels + 1] = channel
          end
        end
      end
      budget = budget - #entries
    end
    if budget <= 0 then
      return {1, lost_members, lost_channels}
    end
    -- Both indexes are empty now: the owner is gone for good (incarnations are never reused).
    redis.call("SREM", p .. ":nodes", owner)
  end
end
return {0, lost_members, lost_channels}
