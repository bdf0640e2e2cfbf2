-- The only write of a job's state: a compare-and-set on the stored `seq`
-- and "not terminal", fenced by instance leases, then the next server-wide
-- event id (gid), the job's hash, its place in the listing and in its
-- instance's set of live jobs, and the change on the events stream, in one
-- atomic step. A retried write of the state already stored succeeds, and
-- so does the runner's retry of a progress state it has already gone past
-- (a batch of writes sent again after a lost answer); a terminal state
-- must follow the stored one.
--
-- A job's first state may name an idempotency key: the key then names the
-- job, unless it already names another, which refuses the whole write. A
-- job that joins the shared queue is refused when the queue, or its
-- owner's share of it, is full. A terminal state joins the ended jobs, by
-- when it ended, which the service keeps up to a most.
--
-- A normal write comes from the instance that runs the job (`runner`),
-- and only while that instance's lease is alive: an instance paused past
-- its lease is refused. A write for a lost instance (the reaper's) passes
-- only while that instance's lease is gone and it still runs the job.
--
-- ARGV: prefix, id, follows, seq, status, terminal (1/0), json, kind,
--       secrets ('' for none), the stream's approximate length limit,
--       writer instance, lost instance ('' for a normal write), and for a
--       first state '1' when the job waits in the shared queue of its kind
--       (no instance runs it until one takes it) rather than run by the
--       writer, and for a first state its idempotency key's name ('' for
--       none), the most jobs the shared queue holds, its owner's queued
--       jobs' set ('' for none) and the most jobs that set holds ('' for no
--       limit), the most ended jobs kept, its owner's running jobs'
--       set ('' for none), and when the writer published the state (its
--       clock, in microseconds since the epoch: the stream entry's `at`,
--       how stale it is when an instance applies it).
-- Answers {1, gid, ended jobs beyond the most kept} when stored; {0, stored seq (-1: no job), terminal}
-- when the stored state is not the one this follows; {0, -2, 0} when the
-- writer may not write this job (another instance runs it, or the lost
-- instance is back or ran something else); {0, -3, 0} when the idempotency
-- key names another job; {0, -4, 0} when the shared queue is full;
-- {0, -5, 0} when the owner's share of it is; {0, -6, 0} when the writer's
-- own lease has run out (it may write again once it renews it, unless
-- another instance has ended its jobs meanwhile).
local prefix, id = ARGV[1], ARGV[2]
local follows, seq = tonumber(ARGV[3]), tonumber(ARGV[4])
local writer, lost = ARGV[11], ARGV[12]
local job = prefix .. 'job:' .. id
local stored = redis.call('HMGET', job, 'seq', 'terminal', 'json', 'gid', 'runner')
if stored[1] and tonumber(stored[1]) == seq and stored[3] == ARGV[7] then
  return {1, tonumber(stored[4]), 0}
end
if lost == '' then
  if redis.call('EXISTS', prefix .. 'instance:' .. writer) == 0 then
    return {0, -6, 0}
  end
  if stored[5] and stored[5] ~= writer then
    return {0, -2, 0}
  end
else
  if redis.call('EXISTS', prefix .. 'instance:' .. lost) == 1 or stored[5] ~= lost then
    return {0, -2, 0}
  end
end
if stored[1] then
  if lost == '' and follows ~= 0 and ARGV[6] ~= '1' and stored[2] ~= '1' and tonumber(stored[1]) >= seq then
    return {1, tonumber(stored[4]), 0}
  end
  if follows == 0 or tonumber(stored[1]) ~= follows or stored[2] == '1' then
    return {0, tonumber(stored[1]), tonumber(stored[2])}
  end
elseif follows ~= 0 then
  return {0, -1, 0}
end
local queued, owner_queued = prefix .. 'queued', ARGV[16]
if follows == 0 and ARGV[13] == '1' then
  if redis.call('ZCARD', queued) >= tonumber(ARGV[15]) then
    return {0, -4, 0}
  end
  if owner_queued ~= '' and ARGV[17] ~= '' and redis.call('ZCARD', owner_queued) >= tonumber(ARGV[17]) then
    return {0, -5, 0}
  end
end
local idempotency_key = ARGV[14]
if follows == 0 and idempotency_key ~= '' then
  if not redis.call('SET', idempotency_key, id, 'NX') then
    return {0, -3, 0}
  end
  redis.call('HSET', job, 'idempotency_key', idempotency_key)
end
local gid = redis.call('INCR', prefix .. 'gid')
redis.call('HSET', job, 'seq', seq, 'status', ARGV[5], 'terminal', ARGV[6],
  'json', ARGV[7], 'gid', gid, 'kind', ARGV[8])
if ARGV[9] ~= '' then
  redis.call('HSET', job, 'secrets', ARGV[9])
end
if follows == 0 then
  redis.call('ZADD', prefix .. 'jobs', gid, id)
  if ARGV[13] == '1' then
    redis.call('ZADD', prefix .. 'queue:' .. ARGV[8], gid, id)
    redis.call('ZADD', queued, gid, id)
    if owner_queued ~= '' then
      redis.call('ZADD', owner_queued, gid, id)
      redis.call('HSET', job, 'owner_queued', owner_queued)
    end
    if ARGV[19] ~= '' then
      redis.call('HSET', job, 'owner_running', ARGV[19])
    end
  else
    redis.call('HSET', job, 'runner', writer)
    redis.call('SADD', prefix .. 'runs:' .. writer, id)
  end
end
if ARGV[6] == '1' then
  if stored[5] then
    redis.call('SREM', prefix .. 'runs:' .. stored[5], id)
  end
  redis.call('ZREM', prefix .. 'queue:' .. ARGV[8], id)
  redis.call('ZREM', queued, id)
  local of_owner = redis.call('HGET', job, 'owner_queued')
  if of_owner then
    redis.call('ZREM', of_owner, id)
  end
  local running = redis.call('HGET', job, 'owner_running')
  if running then
    redis.call('SREM', running, id)
  end
end
redis.call('XADD', prefix .. 'events', 'MAXLEN', '~', ARGV[10], gid .. '-0',
  'id', id, 'seq', seq, 'status', ARGV[5], 'kind', ARGV[8], 'json', ARGV[7], 'at', ARGV[20])
local beyond = 0
if ARGV[6] == '1' then
  local now = redis.call('TIME')
  redis.call('ZADD', prefix .. 'ended', now[1] * 1000 + math.floor(now[2] / 1000), id)
  beyond = redis.call('ZCARD', prefix .. 'ended') - tonumber(ARGV[18])
end
return {1, gid, beyond}
