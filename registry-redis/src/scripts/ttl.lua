-- KEYS: deadlines. ARGV: node. Returns ms left, or -1.
local d = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not d then return -1 end
local left = tonumber(d) - now_ms()
if left < 0 then return 0 end
return left
