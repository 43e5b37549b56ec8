-- Shared by every script (prepended to each): the server clock in ms, "remove a node and
-- record it", and "is this node alive".
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function remove(k, rev, n, maxlen)
  local existed = redis.call('DEL', k)
  local indexed = redis.call('ZREM', KEYS[3], k)
  redis.call('ZREM', KEYS[4], k)
  redis.call('HDEL', KEYS[5], k)
  if existed == 1 or indexed == 1 then
    if rev == nil then rev = redis.call('INCR', KEYS[1]) end
    n = n + 1
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, rev .. '-' .. n, 'op', 'del', 'key', k)
  end
  return rev, n
end
local function alive(k, now)
  local d = redis.call('ZSCORE', KEYS[4], k)
  return d and tonumber(d) > now and redis.call('EXISTS', k) == 1
end
