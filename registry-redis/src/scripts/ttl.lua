-- KEYS: owners, leases. ARGV: node. Returns ms left of the node's lease, or -1 (no lease).
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if not holder then return -1 end
local d = redis.call('ZSCORE', KEYS[2], holder)
if not d then return -1 end
local left = tonumber(d) - now_ms()
if left < 0 then return 0 end
return left
