-- KEYS: revision, changes, index, deadlines, owners, node. ARGV: value, ttl ms, maxlen, owner.
-- Returns { 'ok' } when written (or unchanged), { 'held', holder } when another client's live
-- node is there (left as it is).
local now = now_ms()
local ttl = tonumber(ARGV[2])
local holder = redis.call('HGET', KEYS[5], KEYS[6])
if holder and holder ~= ARGV[4] and alive(KEYS[6], now) then
  return { 'held', holder }
end
redis.call('HSET', KEYS[5], KEYS[6], ARGV[4])
local old = redis.call('GET', KEYS[6])
redis.call('SET', KEYS[6], ARGV[1], 'PX', ttl * 3 + 60000)
redis.call('ZADD', KEYS[4], now + ttl, KEYS[6])
local added = redis.call('ZADD', KEYS[3], 0, KEYS[6])
if old == ARGV[1] and added == 0 then
  return { 'ok' }
end
local rev = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], rev .. '-1', 'op', 'put', 'key', KEYS[6], 'value', ARGV[1])
return { 'ok' }
