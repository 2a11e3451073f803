-- Forget lost nodes whose leftovers every part of the calling node has taken over (a node that came
-- back meanwhile is kept). KEYS[1] the node id set. ARGV[1] P, ARGV[2...] node ids. Returns how many.
local p = ARGV[1]
local forgotten = 0
for i = 2, #ARGV do
  if redis.call("EXISTS", alive_key(p, ARGV[i])) == 0 then
    forgotten = forgotten + redis.call("SREM", node_ids_key(p), ARGV[i])
  end
end
return forgotten
