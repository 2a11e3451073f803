#!lua flags=allow-cross-slot-keys
-- Publish a batch of envelopes on a Redis Cluster primary: one SPUBLISH per (channel, payload) pair, in order.
-- The flag lets one call publish to channels of several slots, all served by the primary it is sent to
-- (the publisher groups them by primary); a channel whose slot moved away fails the call with "non
-- local key", which ends the session like MOVED (relay/redis/topology.py).
-- KEYS: none. ARGV[1] prefix (unused; laid out as lua/cluster/publish.lua), then pairs ARGV[i], ARGV[i+1] =
--   shard channel, payload. Returns the number of SPUBLISHes.
for i = 2, #ARGV, 2 do
  redis.call("SPUBLISH", ARGV[i], ARGV[i + 1])
end
return (#ARGV - 1) / 2
