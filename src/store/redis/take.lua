-- Takes the oldest job of the shared queues of the given kinds for an
-- instance to run: out of its queue, `runner` set, among the instance's
-- live jobs, in one atomic step, so that two instances never take the same
-- job and a job is either taken or cancelled, never both. An instance
-- whose lease is gone takes nothing.
--
-- ARGV: prefix, instance, kind...
-- Answers {id, gid of its stored state}, or nil when there is none.
local prefix, instance = ARGV[1], ARGV[2]
if redis.call('EXISTS', prefix .. 'instance:' .. instance) == 0 then
  return false
end
local best, best_score, best_queue
for i = 3, #ARGV do
  local queue = prefix .. 'queue:' .. ARGV[i]
  local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
  if head[1] and (best_score == nil or tonumber(head[2]) < best_score) then
    best, best_score, best_queue = head[1], tonumber(head[2]), queue
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
redis.call('HSET', job, 'runner', instance)
redis.call('SADD', prefix .. 'runs:' .. instance, best)
return {best, tonumber(redis.call('HGET', job, 'gid'))}
