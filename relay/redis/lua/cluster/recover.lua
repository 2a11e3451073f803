-- A subscribe to a recovering channel: is the user returning, and what did it miss (docs/recovery.md)?
-- KEYS: none. ARGV[1] prefix, ARGV[2] app_id, ARGV[3] channel, ARGV[4] user_id, ARGV[5] recovery window in
--   milliseconds, ARGV[6] a position the caller's node knows ("" or "<event id>\0<socket_id>\0<age ms>"),
--   ARGV[7] the subscribing socket_id.
-- Where the user left from, first found: its departure (depart.lua; taken, so a later subscribe is a fresh
-- start), ARGV[6], or the least position of its other connections on the channel (position.lua): one held
-- by a node that died counts as a departure (taken), one on a live node as a connection still there.
-- Returns, with the history's newest id as read (the same moment as the events):
--   {"fresh", last_id}                       nobody to recover
--   {"gap", last_id, reason}                 "window": back too late; "history": missed events are gone
--   {"replay", last_id, previous id, previous socket_id, id, payload, id, payload, ...}
local p, app, channel, user, window, known = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local key = channel_key(p, app, channel, "history")
local last_id = last_history_id(key)
local left = channel_key(p, app, channel, "left:" .. user)
local departure = redis.call("GET", left)
local id, socket, age
if departure then
  redis.call("DEL", left)
  local f = split(departure, 3)
  id, socket, age = f[1], f[2], now_ms() - tonumber(f[3])
elseif known ~= "" then
  local f = split(known, 3)
  id, socket, age = f[1], f[2], tonumber(f[3])
else
  local at = channel_key(p, app, channel, "at:" .. user)
  local entries = redis.call("HGETALL", at)
  local best
  for i = 1, #entries, 2 do
    local f = split(entries[i + 1], 3)
    if entries[i] ~= ARGV[7] and (not best or id_before(f[1], best[1])) then
      best = {f[1], entries[i], f[2], f[3]}
    end
  end
  if not best then
    return {"fresh", last_id}
  end
  id, socket, age = best[1], best[2], 0
  if not is_alive(p, best[3]) then
    redis.call("HDEL", at, socket)
    age = now_ms() - tonumber(best[4])
  end
end
if age > window then
  return {"gap", last_id, "window"}
end
local reply = {"replay", last_id, id, socket}
if id == last_id then
  return reply
end
local first = redis.call("XRANGE", key, "-", "+", "COUNT", 1)[1]
if not first then
  return {"gap", last_id, "history"} -- events came after `id`, and the whole history is gone since
end
local first_epoch, first_seq = string.match(first[1], "^(%d+)-(%d+)$")
local epoch, seq = string.match(id, "^(%d+)-(%d+)$")
local next_seq = tonumber(seq) + 1
if id == "0-0" then -- the connection came before the history existed: all of it is new to it
  epoch, next_seq = first_epoch, 1
end
-- Seqs have no holes, so the history still holds every event after `id` when its first is no later.
if first_epoch ~= epoch or tonumber(first_seq) > next_seq then
  return {"gap", last_id, "history"}
end
for _, entry in ipairs(redis.call("XRANGE", key, epoch .. "-" .. string.format("%d", next_seq), "+")) do
  reply[#reply + 1] = entry[1]
  reply[#reply + 1] = entry[2][2]
end
return reply
