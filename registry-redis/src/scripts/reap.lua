-- KEYS: revision, changes, index, leases, owners. ARGV: maxlen, batch, ttl ms and the
-- server's replication id (see `adopt_history`).
-- Removes the nodes of leases whose deadline passed, at most `batch` per call (the next call
-- goes on), recording each removal, and ends a lease once no node is left on it. Returns
-- { rebased, current revision, revision of the first entry still in the stream ('0': none),
-- reaped }.
check_types()
local now = now_ms()
adopt_history(KEYS[4], ARGV[4], ARGV[3], now)
local budget = tonumber(ARGV[2])
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, budget)
local gone, strays, ended = {}, {}, {}
for _, lease in ipairs(expired) do
  if budget <= 0 then break end
  local set = LEASE_SET .. lease
  local total = redis.pcall('SCARD', set)
  if type(total) ~= 'number' then
    -- Not a set (written by someone else): the lease is forgotten, the key left as it is.
    table.insert(ended, lease)
  else
    local take = math.min(total, budget)
    if take > 0 then
      for _, k in ipairs(redis.call('SRANDMEMBER', set, take)) do
        if redis.call('HGET', KEYS[5], k) == lease then
          table.insert(gone, k)
        else
          table.insert(strays, { set, k })
        end
      end
    end
    budget = budget - take
    if take >= total then table.insert(ended, lease) end
  end
end
local rebased, n = remove(gone, ARGV[1])
for _, s in ipairs(strays) do redis.call('SREM', s[1], s[2]) end
for _, lease in ipairs(ended) do redis.call('ZREM', KEYS[4], lease) end
return { rebased, current_revision(), first_revision(), n }
