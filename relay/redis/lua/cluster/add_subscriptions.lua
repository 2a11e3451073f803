-- Record subscriptions as held by this owner (one from a live client, or many when re-writing the
-- node's state after an outage). A subscription held by an earlier incarnation of the node is taken
-- over, so sweeping that incarnation later leaves it alone.
-- KEYS: none. ARGV[1] prefix, ARGV[2] owner, then triples ARGV[i..i+2] = app_id, channel, socket_id.
-- Returns one flag per triple: 1 when that subscription made the channel occupied cluster-wide;
-- or -1 (for the whole call, nothing written) when this owner's heartbeat has expired.
local p, owner = ARGV[1], ARGV[2]
if not is_alive(p, owner) then
  return -1
end
local own_index = node_key(p, owner, "subs")
local flags = {}
for i = 3, #ARGV, 3 do
  local app, channel, socket = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local subs = channel_key(p, app, channel, "subs")
  local entry = app .. SEP .. channel .. SEP .. socket
  local previous = redis.call("HGET", subs, socket)
  local first = 0
  if previous then
    if previous ~= owner then
      redis.call("SREM", node_key(p, previous, "subs"), entry)
    end
  elseif redis.call("HLEN", subs) == 0 then
    first = 1
  end
  redis.call("HSET", subs, socket, owner)
  redis.call("SADD", own_index, entry)
  redis.call("ZADD", app_key(p, app, "channels"), 0, channel)
  flags[#flags + 1] = first
end
return flags
