-- Asks whichever instance runs a job to cancel it: the request is kept in
-- the job's hash, where an instance that takes the job from the queue at
-- that moment finds it, and published to every instance.
-- ARGV: prefix, id, the request (JSON: the job's id and who asked).
-- Answers how many instances received it.
local prefix, id = ARGV[1], ARGV[2]
local job = prefix .. 'job:' .. id
if redis.call('EXISTS', job) == 1 and redis.call('HGET', job, 'terminal') ~= '1' then
  redis.call('HSET', job, 'cancel', ARGV[3])
end
return redis.call('PUBLISH', prefix .. 'cancel', ARGV[3])
