-- KEYS: revision, changes, index, deadlines, owners, nodes... ARGV: maxlen, owner.
-- Deletes the nodes this client holds, or nobody does (no holder, or expired).
-- Returns { rebased, removals recorded }.
check_types()
local now = now_ms()
local gone = {}
for i = 6, #KEYS do
  local k = KEYS[i]
  local holder = redis.call('HGET', KEYS[5], k)
  if (not holder) or holder == ARGV[2] or not alive(k, now) then
    table.insert(gone, k)
  end
end
local rebased, n = remove(gone, ARGV[1])
return { rebased, n }
