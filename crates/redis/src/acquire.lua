-- Counts one more connection of a tenant on one gateway, if the tenant then
-- has at most ARGV[3] across all gateways.
--
-- KEYS[1]  the tenant's hash: field = gateway id, value = "count:expires_ms"
-- ARGV[1]  this gateway's id
-- ARGV[2]  this gateway's count for the tenant after the new connection
-- ARGV[3]  the tenant's maximum
-- ARGV[4]  lease, milliseconds: how long the entry counts unless refreshed
-- Returns  1 when counted, 0 when the tenant is at its maximum.
--
-- A gateway that stops refreshing (it crashed) stops counting when its
-- lease runs out; entries past their lease are removed here.
if redis.replicate_commands then
    redis.replicate_commands()
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local others = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
    local gateway = entries[i]
    local count, expires = string.match(entries[i + 1], '^(%d+):(%d+)$')
    if count == nil or tonumber(expires) <= now then
        redis.call('HDEL', KEYS[1], gateway)
    elseif gateway ~= ARGV[1] then
        others = others + tonumber(count)
    end
end

local mine = tonumber(ARGV[2])
if others + mine > tonumber(ARGV[3]) then
    return 0
end

local lease = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d', mine, now + lease))
if redis.call('PTTL', KEYS[1]) < lease then
    redis.call('PEXPIRE', KEYS[1], lease)
end
return 1
