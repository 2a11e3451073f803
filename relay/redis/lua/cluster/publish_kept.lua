-- Publish a batch of events of recovering channels, each appended to its channel's history in the same
-- call, so the history's order is the delivery order on every node (docs/recovery.md, "Several nodes").
-- KEYS: none. ARGV[1] prefix, then groups of six ARGV[i..i+5] = pub/sub channel, payload (a wire.py
--   envelope), app_id, channel, events kept (approximately: MAXLEN ~), history ttl in milliseconds.
-- Each event is published as "\2", the length of its id, its id, then the payload (wire.py, KEPT_VERSION).
-- Returns the number of events.
local p = ARGV[1]
for i = 2, #ARGV, 6 do
  local key = channel_key(p, ARGV[i + 2], ARGV[i + 3], "history")
  local id = next_history_id(key)
  redis.call("XADD", key, "MAXLEN", "~", ARGV[i + 4], id, "e", ARGV[i + 1])
  redis.call("PEXPIRE", key, ARGV[i + 5])
  redis.call("PUBLISH", ARGV[i], string.char(2, #id) .. id .. ARGV[i + 1])
end
return (#ARGV - 1) / 6
