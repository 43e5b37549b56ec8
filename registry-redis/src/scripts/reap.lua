-- KEYS: revision, changes, index, deadlines, owners. ARGV: maxlen, batch.
-- Returns { current revision, first revision still in the stream (0: empty), reaped }.
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[2]))
local rev, n = nil, 0
for _, k in ipairs(expired) do rev, n = remove(k, rev, n, ARGV[1]) end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local first_rev = 0
if #first > 0 then first_rev = tonumber(string.match(first[1][1], '^(%d+)')) end
return { tonumber(redis.call('GET', KEYS[1]) or '0'), first_rev, n }
