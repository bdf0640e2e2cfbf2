-- Forgets ended jobs everywhere: a job's hash, listing entry and
-- idempotency key go, and a `removed` entry on the events stream tells
-- every instance's mirror. Forgets the job named, if any, then the oldest
-- ended jobs beyond the most the service keeps and those whose retention
-- ran out, whichever instance ended them (it may be gone).
-- ARGV: prefix, the stream's approximate length limit, the most ended jobs
--       kept, the id of a job to forget ('' for none), how long an ended
--       job is kept (ms).
-- Answers how many jobs it forgot.
local prefix = ARGV[1]

local function forget(id)
  local job = prefix .. 'job:' .. id
  redis.call('ZREM', prefix .. 'ended', id)
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
  redis.call('XADD', prefix .. 'events', 'MAXLEN', '~', ARGV[2], gid .. '-0', 'id', id, 'removed', '1')
  return 1
end

local count = 0
if ARGV[4] ~= '' then
  count = count + forget(ARGV[4])
end
local kept = tonumber(ARGV[3])
while redis.call('ZCARD', prefix .. 'ended') > kept do
  count = count + forget(redis.call('ZPOPMIN', prefix .. 'ended')[1])
end
local now = redis.call('TIME')
local ended_before = now[1] * 1000 + math.floor(now[2] / 1000) - tonumber(ARGV[5])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', prefix .. 'ended', '-inf', '(' .. ended_before)) do
  count = count + forget(id)
end
return count
