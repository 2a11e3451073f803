-- A node stopping gracefully ends its record at once (the others then take over what it left).
-- KEYS[1] the node's alive key. ARGV[1] P, ARGV[2] node id, ARGV[3] its current incarnation (a newer
-- record, written by another process with the same node id, is left alone). Returns 1 if ended.
if redis.call("GET", alive_key(ARGV[1], ARGV[2])) == ARGV[3] then
  return redis.call("DEL", alive_key(ARGV[1], ARGV[2]))
end
return 0
