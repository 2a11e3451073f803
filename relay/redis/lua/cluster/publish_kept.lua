-- Publish a batch of events of recovering channels, each appended to its channel's history in the same
-- call, so the history's order is the delivery order on every node (docs/recovery.md, "Several nodes").
-- KEYS: none. ARGV[1] prefix, then groups of six ARGV[i..i+5] = pub/sub channel, payload (a wire.py
--   envelope), app_id, channel, events kept (approximately: MAXLEN ~), history ttl in milliseconds.
-- Each event is published as "\2", the length of its id, its id, then the payload (wire.py, KEPT_VERSION).
-- Returns the number of events.
local p = ARGV[1]
-- Per pub/sub channel in this batch: {history key, epoch, last seq, ttl}, so a burst on one channel reads
-- its history's last id once and sets its expiry once.
local histories = {}
for i = 2, #ARGV, 6 do
  local history = histories[ARGV[i]]
  if not history then
    local key = channel_key(p, ARGV[i + 2], ARGV[i + 3], "history")
    local epoch, seq = string.match(next_history_id(key), "^(%d+)-(%d+)$")
    history = {key, epoch, tonumber(seq) - 1, ARGV[i + 5]}
    histories[ARGV[i]] = history
  end
  local seq = history[3] + 1
  history[3] = seq
  local id = history[2] .. "-" .. string.format("%d", seq)
  redis.call("XADD", history[1], "MAXLEN", "~", ARGV[i + 4], id, "e", ARGV[i + 1])
  redis.call("PUBLISH", ARGV[i], string.char(2, #id) .. id .. ARGV[i + 1])
end
for _, history in pairs(histories) do
  redis.call("PEXPIRE", history[1], history[4])
end
return (#ARGV - 1) / 6
