-- KEYS: revision, changes, index, leases, owners, key. ARGV: maxlen, '1' and the value to
-- write, or '0' to delete.
-- An administrator's write (a service's overrides record, a tool): the key is written with no
-- holder (no lease, no expiry) whatever client held it, or deleted, and watchers hear of it.
-- Returns { rebased } (see `record`).
check_types()
local key = KEYS[6]
if ARGV[2] ~= '1' then
  local rebased = remove({ key }, ARGV[1])
  return { rebased }
end
local value = ARGV[3]
local old = redis.pcall('GET', key)
local holder = redis.call('HGET', KEYS[5], key)
local indexed = redis.call('ZSCORE', KEYS[3], key)
local rebased = {}
if old ~= value or not indexed or holder then
  rebased = record({ { 'put', key, value } }, ARGV[1])
end
if holder then
  redis.pcall('SREM', LEASE_SET .. holder, key)
  redis.call('HDEL', KEYS[5], key)
end
if old ~= value then redis.call('SET', key, value) end
redis.call('ZADD', KEYS[3], 0, key)
return { rebased }
