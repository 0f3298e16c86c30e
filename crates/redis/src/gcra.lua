-- GCRA for one tenant, in one round trip. Time comes from the Redis server
-- (TIME), so gateways with skewed clocks agree on one timeline.
--
-- KEYS[1]  the tenant's key: its theoretical arrival time, in microseconds
-- ARGV[1]  emission interval (1 / rate), microseconds
-- ARGV[2]  tolerance (interval * burst), microseconds
-- Returns  {1, 0} when allowed, {0, retry_after_microseconds} when limited.

-- Redis < 5 must be told to replicate the writes rather than the script,
-- which calls a non-deterministic command; later versions always do.
if redis.replicate_commands then
    redis.replicate_commands()
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])

-- Absent or unreadable state is a tenant with nothing outstanding.
local arrival = tonumber(redis.call('GET', KEYS[1]))
if arrival == nil or arrival < now then
    arrival = now
end

local ahead = arrival + interval - now
if ahead > tolerance then
    return {0, ahead - tolerance}
end

-- The key lives exactly as long as it matters. '%d' because Lua would
-- write a 16-digit number in exponent form and lose the microseconds.
redis.call('SET', KEYS[1], string.format('%d', now + ahead), 'PX', math.ceil(ahead / 1000))
return {1, 0}
