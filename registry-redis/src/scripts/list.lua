-- KEYS: revision, changes, index, leases, owners. ARGV: prefix, ttl ms, the server's
-- replication id (see `slack`).
-- Returns { revision, key1, value1, key2, value2, ... } for the live nodes under the prefix
-- (a value, and a lease whose deadline has not passed, or no holder at all); the revision is
-- `current_revision()`. An indexed key that is not a string is skipped.
local now = now_ms()
local grace = slack(ARGV[3], ARGV[2])
local out = { current_revision() }
local live = {}
local keys = redis.call('ZRANGEBYLEX', KEYS[3], '[' .. ARGV[1], '[' .. ARGV[1] .. '\255')
for _, k in ipairs(keys) do
  local holder = redis.call('HGET', KEYS[5], k)
  local ok = true
  if holder then
    if live[holder] == nil then live[holder] = holder_alive(holder, now, grace) end
    ok = live[holder]
  end
  if ok then
    local v = redis.pcall('GET', k)
    if type(v) == 'string' then
      table.insert(out, k)
      table.insert(out, v)
    end
  end
end
return out
