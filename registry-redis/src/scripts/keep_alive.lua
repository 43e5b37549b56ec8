-- KEYS: leases, this lease's node set. ARGV: lease id, ttl ms.
-- Pushes the lease's deadline: the same few commands whatever the number of nodes on it.
-- Returns the number of nodes attached to the lease, or -1 when the lease is gone or its
-- deadline passed (nothing written: the client takes a new lease and puts every node again).
local d = redis.call('ZSCORE', KEYS[1], ARGV[1])
local now = now_ms()
if not d or tonumber(d) <= now then return -1 end
local n = redis.call('SCARD', KEYS[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return n
