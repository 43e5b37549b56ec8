-- KEYS: revision, changes, index, deadlines, owners, node. ARGV: value, ttl ms, maxlen, owner.
-- Returns { rebased, 'ok', '' } when written (or unchanged), { rebased, 'held', holder } when
-- another client's live node is there (left as it is). `rebased`: see `record`.
check_types()
local node = KEYS[6]
local now = now_ms()
local ttl = tonumber(ARGV[2])
local holder = redis.call('HGET', KEYS[5], node)
if holder and holder ~= ARGV[4] and alive(node, now) then
  return { {}, 'held', holder }
end
-- A node key of another type is replaced (SET takes any key).
local old = redis.pcall('GET', node)
local indexed = redis.call('ZSCORE', KEYS[3], node)
local rebased = {}
if old ~= ARGV[1] or not indexed then
  rebased = record({ { 'put', node, ARGV[1] } }, ARGV[3])
end
redis.call('HSET', KEYS[5], node, ARGV[4])
redis.call('SET', node, ARGV[1], 'PX', ttl * 3 + 60000)
redis.call('ZADD', KEYS[4], now + ttl, node)
redis.call('ZADD', KEYS[3], 0, node)
return { rebased, 'ok', '' }
