-- Claim due held leaves (ZREM makes exactly one node see each) and return those whose token is still the
-- pending one: a join since then deleted it, a later leave replaced it.
-- KEYS[1] leaves. ARGV[1] until (ms), ARGV[2] batch, ARGV[3] prefix of leave:<hold key>.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local released = {}
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local hold = cjson.decode(member)
  local key = ARGV[3] .. hold['key']
  if redis.call('GET', key) == hold['token'] then
    redis.call('DEL', key)
    table.insert(released, member)
  end
end
return released
