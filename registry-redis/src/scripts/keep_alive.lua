-- KEYS: revision, changes, index, deadlines, owners, nodes... ARGV: ttl ms, maxlen, owner.
-- Pushes the deadline of every node this client still holds; a node the store lost is
-- cleaned up (its removal recorded, so watchers see it) and returned, to be put again, as is
-- a node another client holds now (left as it is: the put will wait for it).
-- Returns { rebased, missing nodes }.
check_types()
local now = now_ms()
local ttl = tonumber(ARGV[1])
local missing, renew, gone = {}, {}, {}
for i = 6, #KEYS do
  local k = KEYS[i]
  local holder = redis.call('HGET', KEYS[5], k)
  if holder == ARGV[3] and redis.call('EXISTS', k) == 1 and redis.call('ZSCORE', KEYS[4], k) then
    table.insert(renew, k)
  else
    if (not holder) or holder == ARGV[3] then table.insert(gone, k) end
    table.insert(missing, k)
  end
end
local rebased = remove(gone, ARGV[2])
for _, k in ipairs(renew) do
  redis.call('ZADD', KEYS[4], now + ttl, k)
  redis.call('PEXPIRE', k, ttl * 3 + 60000)
end
return { rebased, missing }
