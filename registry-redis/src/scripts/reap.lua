-- KEYS: revision, changes, index, deadlines, owners. ARGV: maxlen, batch.
-- Removes nodes whose deadline passed. Returns { rebased, current revision, revision of the
-- first entry still in the stream ('0': none), reaped }.
check_types()
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[2]))
local rebased, n = remove(expired, ARGV[1])
return { rebased, current_revision(), first_revision(), n }
