-- KEYS: owners, this lease's node set, nodes... ARGV: lease id.
-- Compares what the client believes its lease holds with the store, when a heartbeat found
-- the counts differ or the client met a new primary. Returns { missing, unexpected }: the
-- given nodes the lease does not hold (not attached to it, no value, or another holder), and
-- the nodes attached to it that were not given.
local given, missing, unexpected = {}, {}, {}
for i = 3, #KEYS do
  local k = KEYS[i]
  given[k] = true
  if redis.call('SISMEMBER', KEYS[2], k) == 0 or redis.call('EXISTS', k) == 0
      or redis.call('HGET', KEYS[1], k) ~= ARGV[1] then
    table.insert(missing, k)
  end
end
for _, k in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if not given[k] then table.insert(unexpected, k) end
end
return { missing, unexpected }
