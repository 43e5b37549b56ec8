-- KEYS: revision, changes, index, leases, owners, this lease's node set, node.
-- ARGV: value, ttl ms, maxlen, lease id, client (the prefix of this client's lease ids),
-- the server's replication id (see `adopt_history`).
-- Returns { rebased, 'ok', '' } when written (or unchanged), { {}, 'held', holder } when
-- another client's live node is there (left as it is), { {}, 'expired', '' } when this
-- lease's deadline passed (nothing written: the client takes a new lease and puts every
-- node again). `rebased`: see `record`.
local node, lease, client = KEYS[7], ARGV[4], ARGV[5]
local now = now_ms()
if new_history(ARGV[6]) then
  -- Rare (after a failover or a restart): adopting writes, so every type is checked first.
  check_types(KEYS[6])
  adopt_history(KEYS[4], ARGV[6], ARGV[2], now)
end
-- Each key the script may write is read before the first write (see `read`): the leases,
-- owners and index, this lease's node set; the stream is the first write itself (`record`).
local mine = read(KEYS[6], 'ZSCORE', KEYS[4], lease)
mine = mine and tonumber(mine)
if mine and mine <= now then
  return { {}, 'expired', '' }
end
local holder = read(KEYS[6], 'HGET', KEYS[5], node)
local indexed = read(KEYS[6], 'ZSCORE', KEYS[3], node)
local member = read(KEYS[6], 'SISMEMBER', KEYS[6], node) == 1
-- A node key of another type exists and is replaced (SET takes any key).
local old = redis.pcall('GET', node)
local exists = old ~= false
if exists and holder and not of_client(holder, client) and holder_alive(holder, now, 0) then
  return { {}, 'held', holder }
end
-- Watchers hear of it unless it was already there, alive, with this value.
local live = exists and holder == lease and mine ~= nil
local rebased = {}
if old ~= ARGV[1] or not indexed or not live then
  rebased = record({ { 'put', node, ARGV[1] } }, ARGV[3])
end
if holder ~= lease then
  if holder then redis.pcall('SREM', LEASE_SET .. holder, node) end
  redis.call('HSET', KEYS[5], node, lease)
end
if old ~= ARGV[1] then redis.call('SET', node, ARGV[1]) end
if not member then redis.call('SADD', KEYS[6], node) end
redis.call('ZADD', KEYS[4], 'GT', now + tonumber(ARGV[2]), lease)
if not indexed then redis.call('ZADD', KEYS[3], 0, node) end
return { rebased, 'ok', '' }
