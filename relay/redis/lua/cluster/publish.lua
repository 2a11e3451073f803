-- Publish a batch of envelopes: one PUBLISH per (channel, payload) pair, in order.
-- KEYS: none. ARGV[1] prefix (unused; every script gets it), then pairs ARGV[i], ARGV[i+1] =
--   pub/sub channel, payload. Returns the number of PUBLISHes.
-- Why a script: redis-py spends most of a PUBLISH's client-side time on the command's own reply and
-- bookkeeping; one script call per batch has one reply, which roughly doubles what a node can publish.
for i = 2, #ARGV, 2 do
  redis.call("PUBLISH", ARGV[i], ARGV[i + 1])
end
return (#ARGV - 1) / 2
