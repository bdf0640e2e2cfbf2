-- Takes the oldest job of the shared queues of the given kinds for an
-- instance to run: out of its queue, `runner` set, among the instance's
-- live jobs, in one atomic step, so that two instances never take the same
-- job and a job is either taken or cancelled, never both. An instance
-- whose lease is gone takes nothing. With a limit on each owner's running
-- jobs, a job whose owner runs that many already waits, and the oldest job
-- of another owner is taken.
--
-- ARGV: prefix, instance, the most jobs of one owner running ('' for no
--       limit), kind...
-- Answers {id, gid of its stored state}, or nil when there is none.
local prefix, instance = ARGV[1], ARGV[2]
local per_owner = tonumber(ARGV[3])
if redis.call('EXISTS', prefix .. 'instance:' .. instance) == 0 then
  return false
end

-- The oldest job of `queue` that may run now, and its score.
local function oldest_runnable(queue)
  if per_owner == nil then
    local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
    return head[1], tonumber(head[2])
  end
  local waiting = redis.call('ZRANGE', queue, 0, -1, 'WITHSCORES')
  for i = 1, #waiting, 2 do
    local running = redis.call('HGET', prefix .. 'job:' .. waiting[i], 'owner_running')
    if not running or redis.call('SCARD', running) < per_owner then
      return waiting[i], tonumber(waiting[i + 1])
    end
  end
  return nil, nil
end

local best, best_score, best_queue
for i = 4, #ARGV do
  local queue = prefix .. 'queue:' .. ARGV[i]
  local id, score = oldest_runnable(queue)
  if id and (best_score == nil or score < best_score) then
    best, best_score, best_queue = id, score, queue
  end
end
if best == nil then
  return false
end
redis.call('ZREM', best_queue, best)
redis.call('ZREM', prefix .. 'queued', best)
local job = prefix .. 'job:' .. best
local of_owner = redis.call('HGET', job, 'owner_queued')
if of_owner then
  redis.call('ZREM', of_owner, best)
end
local running = redis.call('HGET', job, 'owner_running')
if running then
  redis.call('SADD', running, best)
end
redis.call('HSET', job, 'runner', instance)
redis.call('SADD', prefix .. 'runs:' .. instance, best)
return {best, tonumber(redis.call('HGET', job, 'gid'))}
