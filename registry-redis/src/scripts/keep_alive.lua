-- KEYS: leases, this lease's node set. ARGV: lease id, ttl ms, the server's replication id
-- (see `adopt_history`).
-- Pushes the lease's deadline: the same few commands whatever the number of nodes on it.
-- Returns the number of nodes attached to the lease, or -1 when the lease is gone or its
-- deadline passed (nothing written: the client takes a new lease and puts every node again).
local now = now_ms()
local n = redis.call('SCARD', KEYS[2])
adopt_history(KEYS[1], ARGV[3], ARGV[2], now)
local d = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not d or tonumber(d) <= now then return -1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return n
