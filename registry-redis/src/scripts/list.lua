-- KEYS: revision, changes, index, deadlines, owners. ARGV: prefix.
-- Returns { revision, key1, value1, key2, value2, ... } for live nodes under the prefix; the
-- revision is `current_revision()`. An indexed key that is not a string is skipped.
local now = now_ms()
local out = { current_revision() }
local keys = redis.call('ZRANGEBYLEX', KEYS[3], '[' .. ARGV[1], '[' .. ARGV[1] .. '\255')
for _, k in ipairs(keys) do
  local d = redis.call('ZSCORE', KEYS[4], k)
  if d and tonumber(d) > now then
    local v = redis.pcall('GET', k)
    if type(v) == 'string' then
      table.insert(out, k)
      table.insert(out, v)
    end
  end
end
return out
