-- Adds a committed event to its conversation's recent-history stream.
-- KEYS[1]: the stream. ARGV: offset, prev when the stream is new ("none"
-- for a conversation's first event, "?" otherwise), max entries,
-- partition, event bytes, idle TTL in ms.
-- Entry ids are "<offset>-1" ("0-0" is not a valid id), so an event already added (or older than the
-- newest entry) is skipped: re-adding a replayed event is a no-op.
-- Returns 1 when added, 0 when skipped.
local offset = tonumber(ARGV[1])
local prev = ARGV[2]
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest > 0 then
  local newest_offset = tonumber(string.match(newest[1][1], '^(%d+)'))
  if newest_offset >= offset then
    return 0
  end
  -- The stream already holds the conversation's events in order up to
  -- here, so the newest entry is this event's predecessor.
  prev = tostring(newest_offset)
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[1] .. '-1',
  'prev', prev, 'partition', ARGV[4], 'event', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
