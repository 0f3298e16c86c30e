-- Sets one gateway's connection count for a tenant and renews its lease
-- (after a release, and periodically, so the entry outlives its lease only
-- while the gateway is alive). A count of 0 removes the entry.
--
-- KEYS[1]  the tenant's hash: field = gateway id, value = "count:expires_ms"
-- ARGV[1]  this gateway's id
-- ARGV[2]  this gateway's count for the tenant
-- ARGV[3]  lease, milliseconds
if redis.replicate_commands then
    redis.replicate_commands()
end

local mine = tonumber(ARGV[2])
if mine == 0 then
    redis.call('HDEL', KEYS[1], ARGV[1])
    return 1
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d', mine, now + lease))
if redis.call('PTTL', KEYS[1]) < lease then
    redis.call('PEXPIRE', KEYS[1], lease)
end
return 1
