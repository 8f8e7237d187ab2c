"""Lua scripts of the dispatch: a job's messages reach the broker exactly once (app/jobs/dispatch.py).

The broker is the same Redis: kombu's Redis transport delivers a message by LPUSHing it onto the
queue's list. A chunk of a job's messages is LPUSHed here in one script, together with the job's
``dispatched`` cursor, so a chunk is either published and counted or neither — whoever dies, whenever.
"""

from app.jobs.scripts import MATERIALIZE

# KEYS: job, dispatch list.
# -> {state, cursor, the chunk of entries at the cursor (nil when all are published)}, or {''} when the
# job is gone. A chunk is entries separated by line breaks (app.keys.job_dispatch).
DISPATCH_READ = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {''} end
local cursor = tonumber(redis.call('HGET', KEYS[1], 'dispatched') or '0')
return {state, tostring(cursor), redis.call('LINDEX', KEYS[2], cursor)}
"""

# KEYS: job, dispatch list, dispatch lock, celery ids, dispatch-pending set, tasks, then one queue list
# per message.  ARGV: job_id, token, cursor, chunks consumed, lease ms, then pairs (message payload,
# celery id). Publishes the chunk's messages only while the caller's token holds the lease, the job is
# open and the cursor is where the caller read it; stores the specs the chunk carries (its tasks are
# in the tasks hash before any of them can run: see scripts.MATERIALIZE); then advances the cursor
# and renews the lease.
# -> {'ok', 'new cursor/chunks'} | {'lost', state} | {'closed', state} | {'moved', cursor} | {'gone', ''}
DISPATCH_PUBLISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('SREM', KEYS[5], ARGV[1])
  return {'gone', ''}
end
if redis.call('GET', KEYS[3]) ~= ARGV[2] then return {'lost', state} end
if state ~= 'PENDING' and state ~= 'RUNNING' then
  redis.call('SREM', KEYS[5], ARGV[1])
  return {'closed', state}
end
local cursor = tonumber(redis.call('HGET', KEYS[1], 'dispatched') or '0')
if cursor ~= tonumber(ARGV[3]) then return {'moved', tostring(cursor)} end
local chunk = redis.call('LINDEX', KEYS[2], cursor)
if chunk then
  for task_id, spec in string.gmatch(chunk, '[^/\\n]*/([^\\1\\n]*)\\1([^\\n]*)') do
    redis.call('HSETNX', KEYS[6], task_id, spec)
  end
end
local ids = {}
for i = 6, #ARGV, 2 do
  redis.call('LPUSH', KEYS[6 + #ids + 1], ARGV[i])
  ids[#ids + 1] = ARGV[i + 1]
end
if #ids > 0 then redis.call('SADD', KEYS[4], unpack(ids)) end
cursor = cursor + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'dispatched', cursor)
redis.call('PEXPIRE', KEYS[3], ARGV[5])
local total = redis.call('LLEN', KEYS[2])
if cursor >= total then
  redis.call('SREM', KEYS[5], ARGV[1])
  redis.call('HSET', KEYS[1], 'enqueued', '1', 'specs_complete', '1')
end
return {'ok', cursor .. '/' .. total}
"""

# KEYS: job, dispatch list, dispatch lock, dispatch-pending set.  ARGV: token, job_id
# Gives the lease back, unless entries arrived meanwhile on an open job (then 0: the holder goes on,
# so an entry appended while the holder finished is never left without a dispatcher). -> 1 | 0
DISPATCH_RELEASE = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 1 end
local state = redis.call('HGET', KEYS[1], 'state')
local cursor = tonumber(redis.call('HGET', KEYS[1], 'dispatched') or '0')
if (state == 'PENDING' or state == 'RUNNING') and cursor < redis.call('LLEN', KEYS[2]) then return 0 end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], ARGV[2])
return 1
"""

# KEYS: dispatch lock.  ARGV: token.  Drops the lease if the token still holds it, whatever is left.
DISPATCH_DROP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: job, tasks, dispatch list.  Stores the specs of every task not yet published (app.jobs.scripts).
MATERIALIZE_ALL = MATERIALIZE + "materialize(KEYS[1], KEYS[2], KEYS[3]) return 1"
