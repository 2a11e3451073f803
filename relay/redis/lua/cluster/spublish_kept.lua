#!lua flags=allow-cross-slot-keys
-- publish_kept.lua on a Redis Cluster primary: each event is appended to its channel's history stream, whose
-- key shares the shard channel's slot (relay/redis/topology.py, history_key), and SPUBLISHed, in one call.
-- The flag lets one call serve channels of several slots, all served by the primary it is sent to (the
-- publisher groups them by primary); a slot that moved away fails the call with "non local key", which
-- ends the session like MOVED.
-- KEYS: none. ARGV[1] prefix (unused), then groups of five ARGV[i..i+4] = shard channel, payload (a wire.py
--   envelope), history key, events kept (approximately: MAXLEN ~), history ttl in milliseconds.
-- Returns the number of events.
local histories = {}
for i = 2, #ARGV, 5 do
  local id = keep(histories, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 1])
  redis.call("SPUBLISH", ARGV[i], kept_message(id, ARGV[i + 1]))
end
expire_histories(histories)
return (#ARGV - 1) / 5
