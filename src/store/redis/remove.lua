-- Forgets an ended job everywhere: its hash, listing entry and idempotency
-- key go, and a `removed` entry on the events stream tells every
-- instance's mirror.
-- ARGV: prefix, id, the stream's approximate length limit.
local prefix, id = ARGV[1], ARGV[2]
local job = prefix .. 'job:' .. id
if redis.call('EXISTS', job) == 0 then
  return 0
end
local last = tonumber(redis.call('HGET', job, 'gid'))
local idempotency_key = redis.call('HGET', job, 'idempotency_key')
if idempotency_key and redis.call('GET', idempotency_key) == id then
  redis.call('DEL', idempotency_key)
end
redis.call('DEL', job)
redis.call('ZREM', prefix .. 'jobs', id)
local forgotten = tonumber(redis.call('GET', prefix .. 'forgotten') or '0')
if last > forgotten then
  redis.call('SET', prefix .. 'forgotten', last)
end
local gid = redis.call('INCR', prefix .. 'gid')
redis.call('XADD', prefix .. 'events', 'MAXLEN', '~', ARGV[3], gid .. '-0', 'id', id, 'removed', '1')
return gid
