-- KEYS: index, deadlines. ARGV: prefix.
-- Returns { key1, ms left 1, key2, ms left 2, ... } for the indexed nodes under the prefix
-- that have a deadline (0 when it has passed).
local now = now_ms()
local out = {}
local keys = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. ARGV[1], '[' .. ARGV[1] .. '\255')
for _, k in ipairs(keys) do
  local d = redis.call('ZSCORE', KEYS[2], k)
  if d then
    local left = tonumber(d) - now
    if left < 0 then left = 0 end
    table.insert(out, k)
    table.insert(out, left)
  end
end
return out
