-- Publish a batch of events of recovering channels, each appended to its channel's history in the same
-- call, so the history's order is the delivery order on every node (docs/recovery.md, "Several nodes").
-- One Redis; on a Redis Cluster spublish_kept.lua.
-- KEYS: none. ARGV[1] prefix, then groups of six ARGV[i..i+5] = pub/sub channel, payload (a wire.py
--   envelope), app_id, channel, events kept (approximately: MAXLEN ~), history ttl in milliseconds.
-- Returns the number of events.
local p = ARGV[1]
local histories, keys = {}, {}
for i = 2, #ARGV, 6 do
  local key = keys[ARGV[i]] -- built once per channel in a burst
  if not key then
    key = channel_key(p, ARGV[i + 2], ARGV[i + 3], "history")
    keys[ARGV[i]] = key
  end
  local id = keep(histories, key, ARGV[i + 4], ARGV[i + 5], ARGV[i + 1])
  redis.call("PUBLISH", ARGV[i], kept_message(id, ARGV[i + 1]))
end
expire_histories(histories)
return (#ARGV - 1) / 6
