-- KEYS: revision, changes, index, leases, owners, this lease's node set, nodes...
-- ARGV: maxlen, lease id, client (the prefix of this client's lease ids), close ('1': the
-- lease ends too when no node is left on it), ttl ms and the server's replication id (see
-- `adopt_history`).
-- Deletes the nodes this client holds, or nobody does (no holder, or not alive).
-- Returns { rebased, removals recorded }.
check_types(KEYS[6])
local now = now_ms()
adopt_history(KEYS[4], ARGV[6], ARGV[5], now)
local gone = {}
for i = 7, #KEYS do
  local k = KEYS[i]
  local holder = redis.call('HGET', KEYS[5], k)
  if (not holder) or of_client(holder, ARGV[3]) or not alive(k, now) then
    table.insert(gone, k)
  end
end
local rebased, n = remove(gone, ARGV[1])
if ARGV[4] == '1' and redis.call('SCARD', KEYS[6]) == 0 then
  redis.call('ZREM', KEYS[4], ARGV[2])
end
return { rebased, n }
