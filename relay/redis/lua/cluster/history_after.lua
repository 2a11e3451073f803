-- On a Redis Cluster, the second half of recover.lua, on the shard serving the channel's history stream
-- (its one key; the prefix is not used): what the user left.lua found missed.
-- KEYS: none. ARGV[1] prefix (unused), ARGV[2] the history key, ARGV[3] recovery window in milliseconds,
--   then, when the user is returning, ARGV[4] the id it left at, ARGV[5] that socket_id, ARGV[6] its age ms.
-- Returns what missed() in common.lua returns.
local id, age = ARGV[4], tonumber(ARGV[6])
return missed(ARGV[2], tonumber(ARGV[3]), id, ARGV[5], age)
