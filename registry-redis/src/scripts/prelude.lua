-- Shared by every script (prepended to each). KEYS[1..5] of the scripts that take the
-- bookkeeping keys: revision, changes, index, leases, owners.
--
-- All or nothing: a writing script first reads and checks (the bookkeeping keys hold their
-- types, the stream takes the next revision), then writes; none of its writes can fail, so
-- a failed script has written nothing. (A write to another lease's node set, a key the
-- script computes, goes through `pcall`: it cannot fail the script half way.)

-- Revisions the scripts write stay below 10^15: at most 15 digits, exact as Lua numbers.
local MAX_REV = 1e15
-- A lease's node set is this prefix followed by the lease id.
local LEASE_SET = 'rpc-registry:lease:'
-- The replication id of the server the lease deadlines were last counted on.
local HISTORY = 'rpc-registry:history'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The deadline (ms, server clock) of lease `id`, nil when there is no such lease.
local function deadline(id)
  local d = redis.call('ZSCORE', KEYS[4], id)
  return d and tonumber(d)
end

-- Whether `holder` (a lease id, or false: no holder) keeps a node alive at `now` (a lease
-- whose deadline passed less than `past` ms ago still does, see `slack`). A node without a
-- holder was written by a tool and has no expiry.
local function holder_alive(holder, now, past)
  if not holder then return true end
  local d = deadline(holder)
  return d ~= nil and d + (past or 0) > now
end

-- Whether `replid` (the replication id of this server, as the client read it; '' when it
-- could not) is not the one the lease deadlines were last counted on: a failover or a
-- restart happened since.
local function new_history(replid)
  return replid ~= '' and redis.pcall('GET', HISTORY) ~= replid
end

-- How long past its deadline a lease still counts alive, for a script that only reads:
-- `grace` ms on a new history (the first writing script adopts it, see `adopt_history`), 0
-- otherwise.
local function slack(replid, grace)
  if new_history(replid) then return tonumber(grace) end
  return 0
end

-- On a new history, gives every lease in `leases` whose deadline passed less than `grace` ms
-- ago, or comes within `grace` ms, a deadline `grace` ms from now, and records the history:
-- clients that could not reach any primary during a failover (or a restart) keep their
-- nodes, as etcd extends leases on a leader change. A lease that expired longer ago stays
-- expired. (Writes only where nothing can fail: `leases` is a sorted set, checked before.)
local function adopt_history(leases, replid, grace, now)
  if not new_history(replid) then return end
  grace = tonumber(grace)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, now - grace, now + grace)) do
    redis.call('ZADD', leases, 'GT', now + grace, id)
  end
  redis.call('SET', HISTORY, replid)
end

-- Whether node `k` is alive: it holds a value and its lease has not expired.
local function alive(k, now)
  return redis.call('EXISTS', k) == 1 and holder_alive(redis.call('HGET', KEYS[5], k), now, 0)
end

-- Whether lease id `holder` belongs to the client whose lease ids start with `client`.
local function of_client(holder, client)
  return holder and string.sub(holder, 1, #client) == client
end

-- The revision `s` holds (a string of at most 15 digits), nil when it holds none.
local function as_rev(s)
  if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$') then return nil end
  return tonumber(s)
end

-- The revision part of a stream entry id, as a string.
local function id_rev(id)
  return string.match(id, '^(%d+)-') or '0'
end

local function check_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    error({ err = 'ERR ' .. key .. ' holds a ' .. t .. ', not a ' .. want
      .. ': nothing was written; delete it to let the registry write again' })
  end
end

-- Fails the script, before it wrote anything, when a bookkeeping key (or `lease_set`, this
-- client's node set, when given) holds another type. (The counter is not checked: one that
-- holds no revision is re-based by `record`.)
local function check_types(lease_set)
  local want = { 'stream', 'zset', 'zset', 'hash' }
  for i = 2, 5 do check_type(KEYS[i], want[i - 1]) end
  if lease_set then check_type(lease_set, 'set') end
end

-- `redis.call(...)` for a read of a bookkeeping key that comes before the script's first
-- write: when it fails (the key holds another type), the script fails with the message of
-- `check_types` (or the read's own), nothing written. A script whose reads check every key it
-- writes this way needs no `check_types` of its own on the common path.
local function read(lease_set, ...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply['err'] then
    check_types(lease_set)
    return error(reply)
  end
  return reply
end

-- The revision the store is at, as a string: the counter's, or the revision of the stream's
-- last entry when that is higher (the counter was lost, or a stray entry was added).
local function current_revision()
  local counter = as_rev(redis.pcall('GET', KEYS[1])) or 0
  local top = redis.pcall('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if type(top) ~= 'table' or not top[1] then return string.format('%d', counter) end
  local last = id_rev(top[1][1])
  if not as_rev(last) then return last end
  return string.format('%d', math.max(counter, tonumber(last)))
end

-- The revision of the stream's first entry, as a string ('0': none).
local function first_revision()
  local first = redis.pcall('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if type(first) ~= 'table' or not first[1] then return '0' end
  return id_rev(first[1][1])
end

-- The counter's value for a report: what it held, bounded.
local function shown(raw)
  if raw == false then return 'nothing' end
  if type(raw) ~= 'string' then return 'a ' .. redis.call('TYPE', KEYS[1])['ok'] end
  return string.sub(raw, 1, 40)
end

-- Records `changes` ({ op, key[, value] } each) in the stream under the next revision, as
-- the script's first write: the first XADD is the check that the stream takes the revision.
-- When it does not (the counter was lost or set back, or a stray entry has a larger id), the
-- counter is re-based above the stream's last id (the last one ever given, even if that entry
-- was deleted); when no revision fits above that id, the stream is restarted. Returns what
-- was re-based: {} or { what, counter before, revision now, stream's last id }.
local function record(changes, maxlen)
  if #changes == 0 then return {} end
  local raw = redis.pcall('GET', KEYS[1])
  local counter = as_rev(raw)
  if counter and counter + 1 >= MAX_REV then counter = nil end
  local rev = (counter or 0) + 1
  local function xadd(call, n)
    local c = changes[n]
    local id = string.format('%d-%d', rev, n)
    if c[3] then
      return call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, id, 'op', c[1], 'key', c[2], 'value', c[3])
    end
    return call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, id, 'op', c[1], 'key', c[2])
  end
  local report = {}
  local added = xadd(redis.pcall, 1)
  if type(added) == 'table' and added['err'] then
    -- Not a stream (when the script did not check the types up front), or the stream's last
    -- id is at or above the one tried.
    check_type(KEYS[2], 'stream')
    local info = redis.call('XINFO', 'STREAM', KEYS[2])
    local last_id = '0-0'
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then last_id = info[i + 1] end
    end
    local last = as_rev(id_rev(last_id))
    if last and last + 1 < MAX_REV then
      rev = last + 1
      report = { 'behind', shown(raw), string.format('%d', rev), last_id }
    else
      redis.call('DEL', KEYS[2])
      report = { 'restarted', shown(raw), string.format('%d', rev), last_id }
    end
    xadd(redis.call, 1)
  elseif raw and not counter then
    report = { 'junk', shown(raw), string.format('%d', rev), '' }
  end
  for n = 2, #changes do xadd(redis.call, n) end
  redis.call('SET', KEYS[1], string.format('%d', rev))
  return report
end

-- Removes the nodes `ks` with their index and owner entries and their place in their
-- lease's node set, recording those the registry could see (the node or its index entry was
-- there). Returns what `record` re-based, and the number recorded.
local function remove(ks, maxlen)
  local changes, seen, holders = {}, {}, {}
  for _, k in ipairs(ks) do
    if not seen[k] then
      if redis.call('EXISTS', k) == 1 or redis.call('ZSCORE', KEYS[3], k) then
        table.insert(changes, { 'del', k })
      end
      holders[k] = redis.call('HGET', KEYS[5], k)
    end
    seen[k] = true
  end
  local rebased = record(changes, maxlen)
  for k, holder in pairs(holders) do
    redis.call('DEL', k)
    redis.call('ZREM', KEYS[3], k)
    redis.call('HDEL', KEYS[5], k)
    if holder then redis.pcall('SREM', LEASE_SET .. holder, k) end
  end
  return rebased, #changes
end
