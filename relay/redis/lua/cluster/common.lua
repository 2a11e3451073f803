-- Helpers prepended to every other script in this folder (relay/redis/scripts.py joins them).
-- KEYS: none. ARGV[1] of every script is the key prefix P; all keys derive from it inside the
-- scripts. On a Redis Cluster P is the hash tag "{prefix}", so every key is in one slot and a script,
-- sent to the primary serving that slot, touches that slot only (docs/scaling.md).
--
-- Key layout. An "owner" is one incarnation of a node: "<node_id>.<n>"; n grows each time the node
-- re-registers after an outage, so entries written before and after an outage can be told apart.
-- An owner is alive while its node's liveness record (lua/liveness/common.lua, written by the node's
-- heartbeat alone) names it.
--   P:nodes                            SET    owners that may still hold entries
--   P:node:<node_id>:alive             STRING the node's liveness record: its current owner (lua/liveness)
--   P:node:<owner>:conns               HASH   app_id -> open connections held by that owner
--   P:node:<owner>:subs                SET    "app\0channel\0socket_id" held by that owner
--   P:node:<owner>:members             SET    "app\0channel\0socket_id\0user_id" held by that owner
--   P:app:<app>:channels               ZSET   occupied channel names, score 0 (for prefix ranges)
--   P:app:<app>:ch:<channel>:subs      HASH   socket_id -> owner
--   P:app:<app>:ch:<channel>:msocks    HASH   socket_id -> owner "\0" user_id (presence)
--   P:app:<app>:ch:<channel>:ucount    HASH   user_id -> that user's connections on the channel
--   P:app:<app>:ch:<channel>:info      HASH   user_id -> user_info as JSON
--   P:app:<app>:ch:<channel>:order     ZSET   user_id scored by join sequence (member order)
--   P:app:<app>:ch:<channel>:gone      HASH   user_id -> 1: members whose removal a sweep announced (kept
--                                             GONE_TTL_MS, so their return is announced as a new join)
--   P:app:<app>:ch:<channel>:history   STREAM a recovering channel's recent events (docs/recovery.md), ids
--                                             "<epoch>-<seq>": epoch the ms time the stream was created, seq
--                                             1, 2, 3... with no holes; MAXLEN ~ and PEXPIRE bound it. On a
--                                             Redis Cluster "{<shard channel>}:history" instead, in the shard
--                                             channel's slot (spublish_kept.lua, history_after.lua)
--   P:app:<app>:ch:<channel>:left:<user>  STRING where that user's last connection on the channel stood when it
--                                             ended: "<event id>\0<socket_id>\0<ms time>" (PX = gap memory)
--   P:app:<app>:ch:<channel>:at:<user>    HASH   socket_id -> "<event id>\0<owner>\0<ms time>": where each of that
--                                             user's connections on the channel stands (its last answered ping)
--   P:seq                              STRING join sequence counter
--   P:app:<app>:cache:<channel>        STRING a cache channel's last event (PX = its TTL)
-- Channel names never contain ':' or NUL (docs/protocol.md section 4), so keys and entries are unambiguous.

local SEP = "\0"
local GONE_TTL_MS = 86400000

local function node_key(p, owner, what)
  return p .. ":node:" .. owner .. ":" .. what
end

local function app_key(p, app, what)
  return p .. ":app:" .. app .. ":" .. what
end

local function channel_key(p, app, channel, what)
  return p .. ":app:" .. app .. ":ch:" .. channel .. ":" .. what
end

local function is_alive(p, owner)
  local node = string.match(owner, "^(.*)%.%d+$")
  return node ~= nil and redis.call("GET", node_key(p, node, "alive")) == owner
end

-- Split s on SEP into at most n fields; the last field keeps any further SEP (user ids are free text).
local function split(s, n)
  local fields, start = {}, 1
  for _ = 1, n - 1 do
    local at = string.find(s, SEP, start, true)
    if not at then
      break
    end
    fields[#fields + 1] = string.sub(s, start, at - 1)
    start = at + 1
  end
  fields[#fields + 1] = string.sub(s, start)
  return fields
end

-- One connection of `user` left `channel`; returns 1 when it was the user's last one anywhere.
local function drop_user_connection(p, app, channel, user)
  local ucount = channel_key(p, app, channel, "ucount")
  if redis.call("HINCRBY", ucount, user, -1) > 0 then
    return 0
  end
  redis.call("HDEL", ucount, user)
  redis.call("HDEL", channel_key(p, app, channel, "info"), user)
  redis.call("ZREM", channel_key(p, app, channel, "order"), user)
  return 1
end

-- A subscription left `channel`; returns 1 when the channel has no subscription anywhere now.
local function drop_subscription(p, app, channel, socket, owner)
  local subs = channel_key(p, app, channel, "subs")
  redis.call("HDEL", subs, socket)
  redis.call("SREM", node_key(p, owner, "subs"), app .. SEP .. channel .. SEP .. socket)
  if redis.call("HLEN", subs) == 0 then
    redis.call("ZREM", app_key(p, app, "channels"), channel)
    return 1
  end
  return 0
end

local function now_ms()
  local now = redis.call("TIME")
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

-- A recovering channel's newest history id, "0-0" when it has none.
local function last_history_id(key)
  local last = redis.call("XREVRANGE", key, "+", "-", "COUNT", 1)[1]
  return last and last[1] or "0-0"
end

-- The id the channel's next event gets: the next seq of the same epoch, or a new epoch at seq 1.
local function next_history_id(key)
  local last = last_history_id(key)
  if last ~= "0-0" then
    local epoch, seq = string.match(last, "^(%d+)-(%d+)$")
    return epoch .. "-" .. string.format("%d", tonumber(seq) + 1)
  end
  return string.format("%d", now_ms()) .. "-1"
end

-- "<epoch>-<seq>" ids in history order ("0-0" first).
local function id_before(a, b)
  local a_epoch, a_seq = string.match(a, "^(%d+)-(%d+)$")
  local b_epoch, b_seq = string.match(b, "^(%d+)-(%d+)$")
  if tonumber(a_epoch) ~= tonumber(b_epoch) then
    return tonumber(a_epoch) < tonumber(b_epoch)
  end
  return tonumber(a_seq) < tonumber(b_seq)
end

-- Where `user` left `channel` from, first found (recover.lua, left.lua): its departure (depart.lua; taken,
-- so a later subscribe is a fresh start), `known` (a position the caller's node knows: "" or
-- "<event id>\0<socket_id>\0<age ms>"), or the least position of its other connections on the channel
-- (position.lua; not `socket`'s): one held by a node that died counts as a departure (taken), one on a
-- live node as a connection still there (age 0). Returns nil (nobody to recover) or id, socket_id, age ms.
local function where_left(p, app, channel, user, known, socket)
  local left = channel_key(p, app, channel, "left:" .. user)
  local departure = redis.call("GET", left)
  if departure then
    redis.call("DEL", left)
    local f = split(departure, 3)
    return f[1], f[2], now_ms() - tonumber(f[3])
  end
  if known ~= "" then
    local f = split(known, 3)
    return f[1], f[2], tonumber(f[3])
  end
  local at = channel_key(p, app, channel, "at:" .. user)
  local entries = redis.call("HGETALL", at)
  local best
  for i = 1, #entries, 2 do
    local f = split(entries[i + 1], 3)
    if entries[i] ~= socket and (not best or id_before(f[1], best[1])) then
      best = {f[1], entries[i], f[2], f[3]}
    end
  end
  if not best then
    return nil
  end
  if is_alive(p, best[3]) then
    return best[1], best[2], 0
  end
  redis.call("HDEL", at, best[2])
  return best[1], best[2], now_ms() - tonumber(best[4])
end

-- What a returning user missed, from the history stream `key` (recover.lua, history_after.lua), given where
-- it left (`id` nil: nobody to recover). Returns, with the history's newest id as read (the same moment as
-- the events):
--   {"fresh", last_id}                       nobody to recover
--   {"gap", last_id, reason}                 "window": back too late; "history": missed events are gone
--   {"replay", last_id, previous id, previous socket_id, id, payload, id, payload, ...}
local function missed(key, window, id, socket, age)
  local last_id = last_history_id(key)
  if not id then
    return {"fresh", last_id}
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
end

-- Append `payload` to the history stream `key` (publish_kept.lua, spublish_kept.lua), trimmed to about
-- `kept` entries; returns the event id it got. `histories` caches, per key in one script call,
-- {epoch, last seq, ttl}, so a burst on one channel reads its history's last id once; expire_histories()
-- then sets each one's expiry once.
local function keep(histories, key, kept, ttl, payload)
  local history = histories[key]
  if not history then
    local epoch, seq = string.match(next_history_id(key), "^(%d+)-(%d+)$")
    history = {epoch, tonumber(seq) - 1, ttl}
    histories[key] = history
  end
  local seq = history[2] + 1
  history[2] = seq
  local id = history[1] .. "-" .. string.format("%d", seq)
  redis.call("XADD", key, "MAXLEN", "~", kept, id, "e", payload)
  return id
end

local function expire_histories(histories)
  for key, history in pairs(histories) do
    redis.call("PEXPIRE", key, history[3])
  end
end

-- A kept event as published: "\2", the length of its id, its id, then the payload (wire.py, KEPT_VERSION).
local function kept_message(id, payload)
  return string.char(2, #id) .. id .. payload
end
