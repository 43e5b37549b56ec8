-- KEYS: revision, changes, index, deadlines, owners, nodes... ARGV: maxlen, owner.
-- Deletes the nodes this client holds, or nobody does (no holder, or expired).
local now = now_ms()
local rev, n = nil, 0
for i = 6, #KEYS do
  local k = KEYS[i]
  local holder = redis.call('HGET', KEYS[5], k)
  if (not holder) or holder == ARGV[2] or not alive(k, now) then
    rev, n = remove(k, rev, n, ARGV[1])
  end
end
return n
