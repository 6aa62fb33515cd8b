"""The Lua scripts of the job queue: every write that depends on who holds a job is one script.

``service.jobs`` passes every key name in ``KEYS`` (these scripts know none) and calls them with
``EVAL``. Redis runs a script atomically, so a check and the writes it guards cannot interleave
with another worker's takeover.

**Fencing.** A worker holds a job through one *delivery*: the stream entry is pending to its
consumer name with the delivery count it claimed (XREADGROUP: 1; XAUTOCLAIM: n + 1). A worker
that stalled past its lease (a long GC pause, SIGSTOP, a network partition) may have lost the
entry to another worker, which then owns the next delivery. Every state write (running, done,
retry, dead letter, the result) first checks that the writer still owns the delivery it
claimed, ``(consumer, deliveries)``, so a stale writer changes nothing: it cannot set a done job
back to running nor store a second result. Redis' own clock (``TIME``) stamps heartbeats, so
workers on machines with skewed clocks agree on who is alive.
"""

from __future__ import annotations

# owns(stream, group, entry, consumer, deliveries): the entry is pending to this consumer, at
# this delivery. Acknowledged (finished) or taken-over entries fail it.
_OWNS = """
local function owns(stream, group, entry, consumer, deliveries)
  local p = redis.call('XPENDING', stream, group, entry, entry, 1)
  return #p == 1 and p[1][2] == consumer and tonumber(p[1][4]) == tonumber(deliveries)
end
"""

# Atomic "add unless full": the length check and the XADD must not interleave with another submit.
# KEYS: stream, job.  ARGV: max_queued, job id.
ENQUEUE = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
local entry = redis.call('XADD', KEYS[1], '*', 'id', ARGV[2])
redis.call('HSET', KEYS[2], 'entry', entry)
return entry
"""

# Idempotency: the job an idempotency key names, or claim the key for a new job.
# KEYS: idem.  ARGV: value ("job_id fingerprint"), ttl seconds.  Returns the existing value or nil.
IDEMPOTENT = """
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return false
"""

# Extend only the leases this consumer still holds: a blind XCLAIM would steal back an entry
# that another worker took over after this one stalled. JUSTID does not count a delivery.
# KEYS: stream.  ARGV: group, consumer, deliveries, entry...  (deliveries[i] = ARGV[2 + 2i])
# Returns the entries still held.
EXTEND = _OWNS + """
local held = {}
for i = 3, #ARGV, 2 do
  if owns(KEYS[1], ARGV[1], ARGV[i], ARGV[2], ARGV[i + 1]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    held[#held + 1] = ARGV[i]
  end
end
return held
"""

# The start of an attempt. KEYS: stream, job.  ARGV: group, entry, consumer, deliveries, now,
# model_version.  Returns {1, created} when marked, {0} when the delivery is lost, {-1} when the
# job's record is gone.
MARK_RUNNING = _OWNS + """
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return {0} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {-1} end
redis.call('HSET', KEYS[2], 'status', 'running', 'started', ARGV[5], 'attempts', ARGV[4],
           'worker', ARGV[3], 'model_version', ARGV[6])
return {1, redis.call('HGET', KEYS[2], 'created') or ''}
"""

# Finish a job: store its result (done) or dead-letter it (failed), expire its record, drop its
# frames, acknowledge and delete its entry. KEYS: stream, job, input, result, dead.
# ARGV: group, entry, consumer, deliveries, now, ttl, status, error (the record's), model_version,
#       result, dead-letter maxlen, error (the dead letter's).  Returns 1, or 0 when the delivery is lost.
FINISH = _OWNS + """
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
local ttl = tonumber(ARGV[6])
if ARGV[7] == 'done' then
  redis.call('SET', KEYS[4], ARGV[10], 'EX', ttl)
  redis.call('HSET', KEYS[2], 'status', 'done', 'finished', ARGV[5], 'error', '', 'model_version', ARGV[9])
else
  local id = redis.call('HGET', KEYS[2], 'id') or ''
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[11], '*', 'id', id, 'entry', ARGV[2],
             'attempts', ARGV[4], 'error', ARGV[12])
  redis.call('HSET', KEYS[2], 'status', 'failed', 'finished', ARGV[5], 'error', ARGV[8])
end
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('DEL', KEYS[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# A failed attempt to be retried after its lease. KEYS: stream, job.
# ARGV: group, entry, consumer, deliveries, error.  Returns 1, or 0 when the delivery is lost.
RETRY = _OWNS + """
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
redis.call('HSET', KEYS[2], 'status', 'queued', 'error', ARGV[5])
return 1
"""

# Heartbeats: one sorted set, member = worker name, score = expiry (ms, Redis clock); expired
# members are removed as live workers beat. KEYS: alive, info.  ARGV: name, ttl ms, info JSON.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('SET', KEYS[2], ARGV[3], 'PX', tonumber(ARGV[2]))
return now
"""

# Live workers: O(log n). KEYS: alive.
ALIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], now, '+inf')
"""

# Forget consumers that are dead (no live heartbeat) and hold nothing. One with pending entries
# is kept until live workers have taken those over (XGROUP DELCONSUMER would drop them).
# KEYS: stream, alive.  ARGV: group.  Returns the names removed.
SWEEP_CONSUMERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local removed = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  local expiry = tonumber(redis.call('ZSCORE', KEYS[2], info['name']) or '0')
  if tonumber(info['pending']) == 0 and expiry < now then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed[#removed + 1] = info['name']
  end
end
return removed
"""
