-- Put a node's in-flight deliveries back at the head of ready, in order.
-- KEYS[1] in_flight:<node>, KEYS[2] ready, KEYS[3] the node's liveness record (lua/liveness/common.lua).
-- ARGV[1] "1" to skip the liveness check (a node handing back its own).
-- Returns how many, or -1 if the node is alive.
if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do moved = moved + 1 end
return moved
