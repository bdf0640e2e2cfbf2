-- The only write of a job's state: a compare-and-set on the stored `seq`
-- and "not terminal", then the next server-wide event id (gid), the job's
-- hash, its place in the listing, and the change on the events stream, in
-- one atomic step. A retried write of the state already stored succeeds.
--
-- ARGV: prefix, id, follows, seq, status, terminal (1/0), json, kind,
--       secrets ('' for none), the stream's approximate length limit.
-- Answers {1, gid} when stored, {0, stored seq (-1: no job), terminal}.
local prefix, id = ARGV[1], ARGV[2]
local follows, seq = tonumber(ARGV[3]), tonumber(ARGV[4])
local job = prefix .. 'job:' .. id
local stored = redis.call('HMGET', job, 'seq', 'terminal', 'json', 'gid')
if stored[1] then
  local stored_seq = tonumber(stored[1])
  if stored_seq == seq and stored[3] == ARGV[7] then
    return {1, tonumber(stored[4])}
  end
  if follows == 0 or stored_seq ~= follows or stored[2] == '1' then
    return {0, stored_seq, tonumber(stored[2])}
  end
elseif follows ~= 0 then
  return {0, -1, 0}
end
local gid = redis.call('INCR', prefix .. 'gid')
redis.call('HSET', job, 'seq', seq, 'status', ARGV[5], 'terminal', ARGV[6],
  'json', ARGV[7], 'gid', gid, 'kind', ARGV[8])
if ARGV[9] ~= '' then
  redis.call('HSET', job, 'secrets', ARGV[9])
end
if follows == 0 then
  redis.call('ZADD', prefix .. 'jobs', gid, id)
end
redis.call('XADD', prefix .. 'events', 'MAXLEN', '~', ARGV[10], gid .. '-0',
  'id', id, 'seq', seq, 'status', ARGV[5], 'kind', ARGV[8], 'json', ARGV[7])
return {1, gid}
