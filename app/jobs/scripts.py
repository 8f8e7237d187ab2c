"""Lua scripts: every job state transition is one atomic script run inside Redis.

Conventions: KEYS[1] is the job hash. Timestamps are unix seconds (float strings) passed by the
caller. Terminal transitions drop the job from the active set and set the retention expiry on the
job's keys (passed as the remaining KEYS).
"""

from app.keys import JOB_EVENTS

# Run right after a script bumps a job's version: wakes the job's watchers (app.jobs.events) with
# '<job id> <state>', so a watcher learns that the job ended without a read of its own.
_PUBLISH = (
    f"redis.call('PUBLISH', '{JOB_EVENTS}', "
    "redis.call('HGET', KEYS[1], 'id') .. ' ' .. (redis.call('HGET', KEYS[1], 'state') or ''))"
)

# The specs of the tasks StartJob named travel in the job's dispatch list (entries '<host>/<id>\\1<spec>')
# and reach the tasks hash as each chunk is published (app/jobs/dispatch_scripts.py), so CREATE costs
# Redis a few list pushes, whatever the number of tasks. A script that must see every task first calls
# materialize(job, tasks, dispatch list): it stores the specs of the chunks not yet published (once).
MATERIALIZE = """
local function materialize(job, tasks, list)
  if redis.call('HGET', job, 'specs_complete') ~= '0' then return end
  local cursor = tonumber(redis.call('HGET', job, 'dispatched') or '0')
  for _, chunk in ipairs(redis.call('LRANGE', list, cursor, -1)) do
    for task_id, spec in string.gmatch(chunk, '[^/\\n]*/([^\\1\\n]*)\\1([^\\n]*)') do
      redis.call('HSETNX', tasks, task_id, spec)
    end
  end
  redis.call('HSET', job, 'specs_complete', '1')
end
"""

# KEYS: job, jobs-by-time, active, idempotency (or ""), tasks, hosts, sources, dispatch list,
#       dispatch lock, dispatch-pending set
# ARGV: job_id, fields JSON, created_at, (unused), task count, tasks per host (JSON object host -> n),
#       sources (JSON list of [host, JSON list of globs]), dispatch token (or ''), dispatch lease ms,
#       then the tasks' dispatch entries ('<host>/<id>\1<spec JSON>') in chunks
# Records the job, its tasks (in its dispatch list, each with its spec: see MATERIALIZE) and what it
# publishes (the tasks' chunks, then one chunk of the source hosts' planning tasks), and hands the
# dispatch lease to the caller's token, all at once. A chunk is entries separated by line breaks.
CREATE = """
if KEYS[4] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing then return {0, existing} end
  redis.call('SET', KEYS[4], ARGV[1])
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, ARGV[1]} end
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
for i = 10, #ARGV do redis.call('RPUSH', KEYS[8], ARGV[i]) end
for host, count in pairs(cjson.decode(ARGV[6])) do redis.call('HINCRBY', KEYS[6], host .. ':total', count) end
redis.call('HSET', KEYS[1], 'tasks_total', ARGV[5])
local hosts, planners = 0, {}
for _, source in ipairs(cjson.decode(ARGV[7])) do
  redis.call('HSET', KEYS[7], source[1], source[2])
  hosts = hosts + 1
  planners[hosts] = '@' .. source[1]
end
if hosts > 0 then redis.call('RPUSH', KEYS[8], table.concat(planners, '\\n')) end
redis.call('HSET', KEYS[1], 'hosts_to_plan', hosts, 'has_sources', hosts > 0 and '1' or '0', 'dispatched', 0,
  'specs_complete', #ARGV >= 10 and '0' or '1')
if redis.call('EXISTS', KEYS[8]) == 1 then
  redis.call('SADD', KEYS[10], ARGV[1])
  if ARGV[8] ~= '' then redis.call('SET', KEYS[9], ARGV[8], 'PX', ARGV[9]) end
else
  redis.call('HSET', KEYS[1], 'enqueued', '1')
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return {1, ARGV[1]}
"""

# KEYS: job, tasks, hosts, dispatch list, dispatch-pending set.  ARGV: now, then triples task_id, host,
# spec JSON. Atomically, for the whole request: a known id registered for another host is a conflict
# ({state, 'conflict', id, registered host, ...}); new ids on a job that takes no more tasks are
# refused ({state, 'closed', new ids...}); otherwise the new ids are registered and appended to the
# job's dispatch list ({state, 'ok', ids...}). Returns {''} for an unknown job.
REGISTER_TASKS = MATERIALIZE + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {''} end
materialize(KEYS[1], KEYS[2], KEYS[4])
local conflicts = {}
local new = {}
for i = 2, #ARGV, 3 do
  local known = redis.call('HGET', KEYS[2], ARGV[i])
  if known then
    local host = cjson.decode(known)['host'] or ''
    if host ~= ARGV[i + 1] then
      table.insert(conflicts, ARGV[i])
      table.insert(conflicts, host)
    end
  else
    table.insert(new, i)
  end
end
if #conflicts > 0 then
  local out = {state, 'conflict'}
  for _, v in ipairs(conflicts) do table.insert(out, v) end
  return out
end
if #new > 0 and state ~= 'PENDING' and state ~= 'RUNNING' then
  local out = {state, 'closed'}
  for _, i in ipairs(new) do table.insert(out, ARGV[i]) end
  return out
end
local out, chunk = {state, 'ok'}, {}
for _, i in ipairs(new) do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2]) == 1 then
    table.insert(out, ARGV[i])
    redis.call('HINCRBY', KEYS[3], ARGV[i + 1] .. ':total', 1)
    chunk[#chunk + 1] = ARGV[i + 1] .. '/' .. ARGV[i]
    if #chunk >= 500 then redis.call('RPUSH', KEYS[4], table.concat(chunk, '\\n')); chunk = {} end
  end
end
if #chunk > 0 then redis.call('RPUSH', KEYS[4], table.concat(chunk, '\\n')) end
if #out > 2 then
  redis.call('SADD', KEYS[5], redis.call('HGET', KEYS[1], 'id'))
  redis.call('HINCRBY', KEYS[1], 'tasks_total', #out - 2)
  redis.call('HSET', KEYS[1], 'last_progress_at', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'version', 1)
""" + _PUBLISH + """
end
return out
"""

# KEYS: job, manifests, tasks, metrics, hosts, running, dispatch list, inline manifest headers.
# ARGV: task_id, payload, rows, bytes, files, now, inline manifest header digest (or ''), the header
# (base64, or '' when the caller takes it for stored: then {'header', ''} and nothing recorded if it is not)
# Returns {status, detail}: accepted (detail: manifests accepted; then the job hash, as HGETALL gives
# it), duplicate (detail: the recorded payload), late (detail: state), unknown. The task is no longer
# running in every case.
RECORD_MANIFEST = MATERIALIZE + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown', ''} end
redis.call('HDEL', KEYS[6], ARGV[1])
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then materialize(KEYS[1], KEYS[3], KEYS[7]) end
if state ~= 'PENDING' and state ~= 'RUNNING' then return {'late', state} end
if ARGV[7] ~= '' and ARGV[8] == '' and redis.call('HEXISTS', KEYS[8], ARGV[7]) == 0 then
  return {'header', ''}
end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then
  return {'duplicate', redis.call('HGET', KEYS[2], ARGV[1])}
end
if ARGV[8] ~= '' then redis.call('HSETNX', KEYS[8], ARGV[7], ARGV[8]) end
local host = ''
if redis.call('HSETNX', KEYS[3], ARGV[1], '{}') == 1 then
  redis.call('HINCRBY', KEYS[1], 'tasks_total', 1)
  redis.call('HINCRBY', KEYS[5], ':total', 1)
else
  host = cjson.decode(redis.call('HGET', KEYS[3], ARGV[1]))['host'] or ''
end
redis.call('HINCRBY', KEYS[5], host .. ':done', 1)
local accepted = redis.call('HINCRBY', KEYS[1], 'manifests', 1)
redis.call('HINCRBY', KEYS[1], 'tasks_done', 1)
redis.call('HINCRBY', KEYS[1], 'rows', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'bytes', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'files', ARGV[5])
redis.call('HSET', KEYS[1], 'state', 'RUNNING', 'last_progress_at', ARGV[6])
redis.call('HINCRBY', KEYS[1], 'version', 1)
""" + _PUBLISH + """
redis.call('HINCRBY', KEYS[4], 'manifests_total', 1)
redis.call('HINCRBY', KEYS[4], 'tasks_done_total', 1)
redis.call('HINCRBY', KEYS[4], 'rows_written_total', ARGV[3])
redis.call('HINCRBY', KEYS[4], 'bytes_written_total', ARGV[4])
redis.call('HINCRBY', KEYS[4], 'files_written_total', ARGV[5])
return {'accepted', tostring(accepted), redis.call('HGETALL', KEYS[1])}
"""

# KEYS: job, active, metrics, commit lock, then the keys to expire on a terminal transition
# ARGV: allowed states (comma separated), new state, fields JSON, now, retention seconds, lease token
# (or '': with a token, the transition happens only while the commit lock still holds that token)
# Returns {1, new state} on success, {0, current state or ''} otherwise, {0, 'LEASE_LOST'} when the
# caller's commit lease has run out.
TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, ''} end
if ARGV[6] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[6] then return {0, 'LEASE_LOST'} end
local allowed = false
for s in string.gmatch(ARGV[1], '([^,]+)') do
  if s == state then allowed = true end
end
if not allowed then return {0, state} end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
local fields = cjson.decode(ARGV[3])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('HINCRBY', KEYS[1], 'version', 1)
""" + _PUBLISH + """
if ARGV[2] == 'COMPLETED' or ARGV[2] == 'FAILED' or ARGV[2] == 'CANCELLED' then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[4])
  local job_id = redis.call('HGET', KEYS[1], 'id')
  redis.call('SREM', KEYS[2], job_id)
  redis.call('HINCRBY', KEYS[3], 'jobs_' .. string.lower(ARGV[2]) .. '_total', 1)
  for i = 5, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
end
return {1, ARGV[2]}
"""

# KEYS: job, failures, metrics, tasks, hosts, running, dispatch list.  ARGV: task_id, reason, now
# Returns 1 when the failure is new, 0 when the task already had one or the job is finished.
TASK_FAILED = MATERIALIZE + """
redis.call('HDEL', KEYS[6], ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if not state or (state ~= 'PENDING' and state ~= 'RUNNING') then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 0 then materialize(KEYS[1], KEYS[4], KEYS[7]) end
local spec = redis.call('HGET', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[5], ((spec and cjson.decode(spec)['host']) or '') .. ':failed', 1)
redis.call('HINCRBY', KEYS[1], 'tasks_failed', 1)
redis.call('HINCRBY', KEYS[3], 'tasks_failed_total', 1)
redis.call('HSET', KEYS[1], 'last_progress_at', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'version', 1)
""" + _PUBLISH + """
return 1
"""

# KEYS: job, manifests, tasks, running, metrics.  ARGV: task_id
# A worker starts a task: {job hash as HGETALL gives it, recorded manifest or nil, task spec or nil}
# ({{}} for an unknown job). An open job's task not yet recorded is marked running on its host; a
# task whose manifest is already recorded (a redelivery or a duplicate) is counted, not run.
TASK_START = """
local job = redis.call('HGETALL', KEYS[1])
if #job == 0 then return {job} end
local manifest = redis.call('HGET', KEYS[2], ARGV[1])
local spec = redis.call('HGET', KEYS[3], ARGV[1])
if manifest then
  redis.call('HINCRBY', KEYS[5], 'tasks_repeated_total', 1)
else
  local state = redis.call('HGET', KEYS[1], 'state')
  if state == 'PENDING' or state == 'RUNNING' then
    redis.call('HSET', KEYS[4], ARGV[1], (spec and cjson.decode(spec)['host']) or '')
  end
end
return {job, manifest or false, spec or false}
"""

# KEYS: running.  ARGV: task_id.  The task stopped without an outcome (it waits for a retry).
TASK_STOPPED = "return redis.call('HDEL', KEYS[1], ARGV[1])"

# KEYS: job.  ARGV: now.  Bumps last progress of an open job; returns its state or ''.
TOUCH = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
if state == 'PENDING' or state == 'RUNNING' then
  redis.call('HSET', KEYS[1], 'last_progress_at', ARGV[1])
end
return state
"""

# KEYS: job, celery ids.  ARGV: celery id, ...
# A group hands its unstarted tasks back as messages of their own (workers/tasks.py ingest_many): their
# Celery ids join the job's, so that a cancel revokes them too; only while the job is open (a finished
# job's keys carry its retention, and its tasks would only skip). -> 1 added, 0 not open.
ADD_CELERY_IDS = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'PENDING' and state ~= 'RUNNING' then return 0 end
redis.call('SADD', KEYS[2], unpack(ARGV))
return 1
"""

# KEYS: job, files.  ARGV: retention seconds, path, path, ...
# Journals files. Once the job has finished (its hash expires), the journal expires with it; a late
# attempt journaling after that gets the retention, so no journal outlives its job for good.
JOURNAL_FILE = """
redis.call('SADD', KEYS[2], unpack(ARGV, 2))
local ttl = redis.call('TTL', KEYS[1])
if ttl == -2 then ttl = tonumber(ARGV[1]) end
if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
return 1
"""

# KEYS: lock.  ARGV: token.  Deletes the lock only if we still hold it.
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lock.  ARGV: token, lease milliseconds.  Extends the lease only if we still hold it: 1, else 0.
RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: job, tasks, hosts, plans, dispatch list, dispatch-pending set.
# ARGV: now, host, plan JSON, then pairs task_id, spec JSON
# Registers one host's plan exactly once (first plan wins): its tasks (appended to the job's dispatch
# list), its count towards the job's tasks, and one host fewer to plan.
# Returns {'registered'|'already'|'closed'|'unknown', state}.
REGISTER_PLAN = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown', ''} end
if redis.call('HEXISTS', KEYS[4], ARGV[2]) == 1 then return {'already', state} end
if state ~= 'PENDING' and state ~= 'RUNNING' then return {'closed', state} end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
local added = 0
local chunk = {}
for i = 4, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    added = added + 1
    chunk[#chunk + 1] = ARGV[2] .. '/' .. ARGV[i]
  end
end
if added > 0 then
  redis.call('RPUSH', KEYS[5], table.concat(chunk, '\\n'))
  redis.call('SADD', KEYS[6], redis.call('HGET', KEYS[1], 'id'))
end
redis.call('HINCRBY', KEYS[3], ARGV[2] .. ':total', added)
redis.call('HINCRBY', KEYS[1], 'tasks_total', added)
redis.call('HINCRBY', KEYS[1], 'hosts_to_plan', -1)
redis.call('HSET', KEYS[1], 'last_progress_at', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'version', 1)
""" + _PUBLISH + """
return {'registered', state}
"""

# KEYS: job, job fields, the table's field-id counter.
# ARGV: floor (the lowest id to hand out), counter ttl seconds, max id, then pairs: path (JSON list of
# names), spec JSON {"type": t, "parent": an existing field id (number) or a new field's path (string)}
# Reserves a field id per new column path, first writer wins: a known path returns what it holds,
# whatever this caller's type (the caller reconciles). New ids come from the table's counter (shared by
# every job on the table), never below floor. Parents come before their children in ARGV.
# Returns {'ok', stored JSON per pair...}, {'closed', state}, {'unknown'} or {'overflow'}.
RESERVE_FIELDS = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown'} end
if state ~= 'PENDING' and state ~= 'RUNNING' then return {'closed', state} end
local out = {'ok'}
for i = 4, #ARGV, 2 do
  local stored = redis.call('HGET', KEYS[2], ARGV[i])
  if not stored then
    local spec = cjson.decode(ARGV[i + 1])
    local parent = spec['parent']
    if type(parent) == 'string' then
      parent = cjson.decode(redis.call('HGET', KEYS[2], parent))['id']
    end
    local id = math.max(tonumber(redis.call('GET', KEYS[3]) or '0'), tonumber(ARGV[1]))
    if id > tonumber(ARGV[3]) then return {'overflow'} end
    redis.call('SET', KEYS[3], tostring(id + 1), 'EX', ARGV[2])
    stored = cjson.encode({id = id, type = spec['type'], parent = parent})
    redis.call('HSET', KEYS[2], ARGV[i], stored)
  end
  table.insert(out, stored)
end
return out
"""
