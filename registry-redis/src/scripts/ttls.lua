-- KEYS: index, owners, leases. ARGV: prefix.
-- Returns { key1, ms left 1, key2, ms left 2, ... } for the indexed nodes under the prefix
-- whose lease exists (0 when its deadline has passed): one deadline read per lease.
local now = now_ms()
local out = {}
local left_of = {}
local keys = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. ARGV[1], '[' .. ARGV[1] .. '\255')
for _, k in ipairs(keys) do
  local holder = redis.call('HGET', KEYS[2], k)
  if holder then
    if left_of[holder] == nil then
      local d = redis.call('ZSCORE', KEYS[3], holder)
      left_of[holder] = d and math.max(tonumber(d) - now, 0) or false
    end
    if left_of[holder] then
      table.insert(out, k)
      table.insert(out, left_of[holder])
    end
  end
end
return out
