-- KEYS: revision, changes, index, leases, owners, this lease's node set, node.
-- ARGV: value, ttl ms, maxlen, lease id, client (the prefix of this client's lease ids),
-- the server's replication id (see `adopt_history`).
-- Returns { rebased, 'ok', '' } when written (or unchanged), { {}, 'held', holder } when
-- another client's live node is there (left as it is), { {}, 'expired', '' } when this
-- lease's deadline passed (nothing written: the client takes a new lease and puts every
-- node again). `rebased`: see `record`.
check_types(KEYS[6])
local node, lease, client = KEYS[7], ARGV[4], ARGV[5]
local now = now_ms()
adopt_history(KEYS[4], ARGV[6], ARGV[2], now)
local mine = deadline(lease)
if mine and mine <= now then
  return { {}, 'expired', '' }
end
local holder = redis.call('HGET', KEYS[5], node)
local exists = redis.call('EXISTS', node) == 1
if exists and holder and not of_client(holder, client) and holder_alive(holder, now, 0) then
  return { {}, 'held', holder }
end
-- A node key of another type is replaced (SET takes any key).
local old = redis.pcall('GET', node)
local indexed = redis.call('ZSCORE', KEYS[3], node)
-- Watchers hear of it unless it was already there, alive, with this value.
local live = exists and holder == lease and mine ~= nil
local rebased = {}
if old ~= ARGV[1] or not indexed or not live then
  rebased = record({ { 'put', node, ARGV[1] } }, ARGV[3])
end
if holder and holder ~= lease then redis.pcall('SREM', LEASE_SET .. holder, node) end
redis.call('HSET', KEYS[5], node, lease)
if old ~= ARGV[1] then redis.call('SET', node, ARGV[1]) end
redis.call('SADD', KEYS[6], node)
redis.call('ZADD', KEYS[4], 'GT', now + tonumber(ARGV[2]), lease)
redis.call('ZADD', KEYS[3], 0, node)
return { rebased, 'ok', '' }
