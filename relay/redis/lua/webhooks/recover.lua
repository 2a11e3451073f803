-- Put a node's in-flight deliveries back at the head of ready, in order.
-- KEYS[1] in_flight:<node>, KEYS[2] ready, KEYS[3] nodes, KEYS[4] the node's heartbeat key. ARGV[1] node,
-- ARGV[2] "1" to skip the liveness check (a node handing back its own).
-- Returns how many, or -1 if the node is alive.
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do moved = moved + 1 end
redis.call('SREM', KEYS[3], ARGV[1])
return moved
