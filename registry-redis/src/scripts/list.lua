-- KEYS: revision, index, deadlines. ARGV: prefix.
-- Returns { revision, key1, value1, key2, value2, ... } for live nodes under the prefix.
local now = now_ms()
local out = { redis.call('GET', KEYS[1]) or '0' }
local keys = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. ARGV[1], '[' .. ARGV[1] .. '\255')
for _, k in ipairs(keys) do
  local d = redis.call('ZSCORE', KEYS[3], k)
  if d and tonumber(d) > now then
    local v = redis.call('GET', k)
    if v then
      table.insert(out, k)
      table.insert(out, v)
    end
  end
end
return out
