-- Genloom's queue in Redis: the scheduling policy of queue/scheduler.py, run atomically inside
-- Redis so any number of API replicas and workers share one line per model.
--
-- KEYS[1] is the key prefix; every other key is derived from it (one Redis, not a cluster).
-- ARGV[1] the operation, ARGV[2] the policy as JSON, ARGV[3] the caller's clock (seconds), then
-- the operation's arguments. Floats are written with 17 significant digits so they round-trip
-- exactly: the order must be the one the Python scheduler computes, tie for tie.
--
-- Per model m: a hash of counters and passes (st), for each class and tier a sorted set of its
-- eligible entries by arrival (o), one per tenant (n) and the set of tenants with entries (ts),
-- a sorted set of entries in retry backoff by not_before (d), and the places held by
-- reservations (h). Per job: a hash (j). Running jobs: a sorted set of lease deadlines.

local P = KEYS[1]
local op = ARGV[1]
local policy = cjson.decode(ARGV[2])
local now = tonumber(ARGV[3])
local CLASSES = {'realtime', 'async'}
local TIERS = {'premium', 'standard', 'free'}

local function f(x) return string.format('%.17g', x) end
local function num(key, field) return tonumber(redis.call('HGET', key, field) or '0') end
local function st(m) return P .. 'm:' .. m .. ':st' end
local function k_oldest(m, c, t) return P .. 'm:' .. m .. ':o:' .. c .. ':' .. t end
local function k_tenant(m, c, t, n) return P .. 'm:' .. m .. ':n:' .. c .. ':' .. t .. ':' .. n end
local function k_tenants(m, c, t) return P .. 'm:' .. m .. ':ts:' .. c .. ':' .. t end
local function k_deferred(m) return P .. 'm:' .. m .. ':d' end
local function k_held(m, c) return P .. 'm:' .. m .. ':h:' .. c end
local function k_held_tenant(m, c, n) return P .. 'm:' .. m .. ':h:' .. c .. ':' .. n end
local function k_job(id) return P .. 'j:' .. id end
local K_LEASES = P .. 'leases'
local K_DEAD = P .. 'dead'
local K_MODELS = P .. 'models'
local function member(e) return string.format('%012d', e.seq) .. e.id end

local FIELDS = {'m', 'c', 't', 'n', 'cost', 'rows', 'at', 'nb', 'seq', 'st', 'rp', 'own', 'dl', 'x'}

local function load(id)
  local v = redis.call('HMGET', k_job(id), unpack(FIELDS))
  if not v[1] then return nil end
  local e = {id = id}
  for i, name in ipairs(FIELDS) do e[name] = v[i] end
  e.cost, e.rows, e.at, e.nb, e.seq = tonumber(e.cost), tonumber(e.rows), tonumber(e.at), tonumber(e.nb), tonumber(e.seq)
  e.dl = tonumber(e.dl or '0')
  return e
end

local function held(key)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. f(now))
  return redis.call('ZCARD', key)
end

-- Admission: the class's queue and the tenant's share, counting places held by reservations.
local function refuse(m, c, n)
  local limit = policy.max_queued[c]
  if num(st(m), 'd:' .. c) + held(k_held(m, c)) >= limit then return {'full', limit} end
  local tenant_limit = policy.tenant_limit[c]
  if num(st(m), 'td:' .. c .. ':' .. n) + held(k_held_tenant(m, c, n)) >= tenant_limit then
    return {'tenant_full', tenant_limit}
  end
  return nil
end

-- An eligible entry joins its tier's and tenant's lines; a tier or tenant back from idle starts
-- at the current virtual time, so idling banks no credit.
local function enqueue(m, e)
  local c, t, n, S = e.c, e.t, e.n, st(m)
  local mem = member(e)
  redis.call('ZADD', k_oldest(m, c, t), f(e.at), mem)
  redis.call('ZADD', k_tenant(m, c, t, n), f(e.at), mem)
  redis.call('HINCRBY', S, 'cnt:' .. c, 1)
  if redis.call('HINCRBY', S, 'cnt:' .. c .. ':' .. t, 1) == 1 then
    redis.call('HSET', S, 'p:' .. c .. ':' .. t, f(math.max(num(S, 'p:' .. c .. ':' .. t), num(S, 'vt:' .. c))))
  end
  if redis.call('HINCRBY', S, 'cnt:' .. c .. ':' .. t .. ':' .. n, 1) == 1 then
    local tp = 'tp:' .. c .. ':' .. t .. ':' .. n
    redis.call('HSET', S, tp, f(math.max(num(S, tp), num(S, 'vt:' .. c .. ':' .. t))))
    redis.call('SADD', k_tenants(m, c, t), n)
  end
  redis.call('HSET', k_job(e.id), 'st', 'wait')
end

local function dequeue(m, e)
  local c, t, n, S = e.c, e.t, e.n, st(m)
  local mem = member(e)
  redis.call('ZREM', k_oldest(m, c, t), mem)
  redis.call('ZREM', k_tenant(m, c, t, n), mem)
  redis.call('HINCRBY', S, 'cnt:' .. c, -1)
  redis.call('HINCRBY', S, 'cnt:' .. c .. ':' .. t, -1)
  if redis.call('HINCRBY', S, 'cnt:' .. c .. ':' .. t .. ':' .. n, -1) == 0 then
    redis.call('HDEL', S, 'cnt:' .. c .. ':' .. t .. ':' .. n)
    redis.call('SREM', k_tenants(m, c, t), n)
  end
end

local function forget(m, e)
  local S = st(m)
  redis.call('HINCRBY', S, 'd:' .. e.c, -1)
  if redis.call('HINCRBY', S, 'td:' .. e.c .. ':' .. e.n, -1) == 0 then
    redis.call('HDEL', S, 'td:' .. e.c .. ':' .. e.n)
  end
end

-- Add without admission checks (a new seq, like Scheduler.add).
local function add(m, e)
  local S = st(m)
  e.seq = redis.call('INCR', P .. 'seq')
  redis.call('HSET', k_job(e.id), 'seq', e.seq, 'at', f(e.at), 'nb', f(e.nb))
  redis.call('HINCRBY', S, 'd:' .. e.c, 1)
  redis.call('HINCRBY', S, 'td:' .. e.c .. ':' .. e.n, 1)
  redis.call('SADD', K_MODELS, m)
  if e.nb > now then
    redis.call('ZADD', k_deferred(m), f(e.nb), member(e))
    redis.call('HSET', k_job(e.id), 'st', 'defer')
  else
    enqueue(m, e)
  end
end

local function promote(m)
  local due = redis.call('ZRANGEBYSCORE', k_deferred(m), '-inf', f(now))
  for _, mem in ipairs(due) do
    redis.call('ZREM', k_deferred(m), mem)
    local e = load(string.sub(mem, 13))
    if e then enqueue(m, e) end
  end
end

local function head(key)
  local h = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(h[2]), tonumber(string.sub(h[1], 1, 12)), string.sub(h[1], 13)
end

local function less(a, b)  -- lexicographic comparison of equal-length lists of numbers
  for i = 1, #a do
    if a[i] ~= b[i] then return a[i] < b[i] end
  end
  return false
end

-- Scheduler._pick_in_class: aged entries first (earliest deadline), else the tier with the
-- lowest pass (ties: heavier weight, then older head), then its tenant with the lowest pass
-- (ties: older head), then that tenant's oldest entry.
local function pick_in_class(m, c)
  local S = st(m)
  local aged, aged_id, best, best_tier = nil, nil, nil, nil
  for _, t in ipairs(TIERS) do
    if num(S, 'cnt:' .. c .. ':' .. t) > 0 then
      local at, seq, id = head(k_oldest(m, c, t))
      local max_wait = policy.tiers[t].max_wait_s
      if now - at >= max_wait then
        local key = {at + max_wait, at, seq}
        if aged == nil or less(key, aged) then aged, aged_id = key, id end
      end
      local key = {num(S, 'p:' .. c .. ':' .. t), -policy.tiers[t].weight, at, seq}
      if best == nil or less(key, best) then best, best_tier = key, t end
    end
  end
  if aged_id then return aged_id, false end
  local chosen, chosen_id = nil, nil
  for _, n in ipairs(redis.call('SMEMBERS', k_tenants(m, c, best_tier))) do
    local at, seq, id = head(k_tenant(m, c, best_tier, n))
    local key = {num(S, 'tp:' .. c .. ':' .. best_tier .. ':' .. n), at, seq}
    if chosen == nil or less(key, chosen) then chosen, chosen_id = key, id end
  end
  return chosen_id, true
end

local function pick(m)
  promote(m)
  local S = st(m)
  for _, c in ipairs(CLASSES) do
    if num(S, 'cnt:' .. c) > 0 then return pick_in_class(m, c) end
  end
  return nil, nil
end

-- Scheduler._serve: charge the tier cost/weight and the tenant cost; only a fair-share pick
-- moves virtual time.
local function serve(m, e, fair)
  dequeue(m, e)
  forget(m, e)
  local S, c, t = st(m), e.c, e.t
  local tier_pass, tenant_pass = 'p:' .. c .. ':' .. t, 'tp:' .. c .. ':' .. t .. ':' .. e.n
  if fair then
    redis.call('HSET', S, 'vt:' .. c, f(math.max(num(S, 'vt:' .. c), num(S, tier_pass))))
    redis.call('HSET', S, 'vt:' .. c .. ':' .. t, f(math.max(num(S, 'vt:' .. c .. ':' .. t), num(S, tenant_pass))))
  end
  redis.call('HSET', S, tier_pass, f(num(S, tier_pass) + e.cost / policy.tiers[t].weight))
  redis.call('HSET', S, tenant_pass, f(num(S, tenant_pass) + e.cost))
end

-- One token per job that became eligible, in a list idle workers block on (BLPOP): each token
-- wakes one worker, not all of them. Tokens nobody took are capped, so they cost at most a few
-- empty takes later.
local function wake(m)
  redis.call('RPUSH', P .. 'wake:' .. m, '1')
  redis.call('LTRIM', P .. 'wake:' .. m, -64, -1)
end

local function unqueue(e)
  if e.st == 'wait' then
    dequeue(e.m, e)
  else
    redis.call('ZREM', k_deferred(e.m), member(e))
  end
  forget(e.m, e)
end

if op == 'submit' then
  -- id, model, class, tier, tenant, cost, rows, arrived_at, not_before, payload, reply, admit, requeue
  -- ARGV[16] '1': requeue a job still marked running or dead (a retry decided elsewhere); its
  -- holder's finish and heartbeats are refused from now on.
  local id, m, c, n = ARGV[4], ARGV[5], ARGV[6], ARGV[8]
  local current = redis.call('HGET', k_job(id), 'st')
  if current then
    if ARGV[16] ~= '1' or (current ~= 'run' and current ~= 'dead') then return {'exists'} end
    redis.call('ZREM', K_LEASES, id)
    redis.call('ZREM', K_DEAD, id)
    redis.call('DEL', k_job(id))
  end
  if ARGV[15] == '1' then
    local refused = refuse(m, c, n)
    if refused then return refused end
  end
  local e = {id = id, m = m, c = c, t = ARGV[7], n = n, cost = tonumber(ARGV[9]), rows = tonumber(ARGV[10]),
             at = tonumber(ARGV[11]), nb = tonumber(ARGV[12])}
  redis.call('HSET', k_job(id), 'm', m, 'c', c, 't', e.t, 'n', n, 'cost', f(e.cost), 'rows', e.rows,
             'pl', ARGV[13], 'rp', ARGV[14], 'dl', 0)
  add(m, e)
  if e.nb <= now then wake(m) end
  return {'ok'}

elseif op == 'reserve' then
  -- model, class, tenant, reservation id, expires_at
  local m, c, n = ARGV[4], ARGV[5], ARGV[6]
  local refused = refuse(m, c, n)
  if refused then return refused end
  redis.call('ZADD', k_held(m, c), ARGV[8], ARGV[7])
  redis.call('ZADD', k_held_tenant(m, c, n), ARGV[8], ARGV[7])
  return {'ok'}

elseif op == 'release' then
  local m, c, n = ARGV[4], ARGV[5], ARGV[6]
  redis.call('ZREM', k_held(m, c), ARGV[7])
  redis.call('ZREM', k_held_tenant(m, c, n), ARGV[7])
  return {'ok'}

elseif op == 'take' then
  -- owner, lease_until, max_rows, max_async_rows, models...
  local owner, lease_until = ARGV[4], ARGV[5]
  local max_rows, max_async = tonumber(ARGV[6]), tonumber(ARGV[7])
  local taken, rows, async_rows = {}, 0, 0
  while true do
    local best, best_key = nil, nil
    for i = 8, #ARGV do
      local m = ARGV[i]
      local id, fair = pick(m)
      if id then
        local e = load(id)
        local key = {e.c == 'realtime' and 0 or 1, e.at}
        if best == nil or less(key, best_key) then best, best_key = {m, e, fair}, key end
      end
    end
    if best == nil then break end
    local m, e, fair = best[1], best[2], best[3]
    if e.c == 'async' and async_rows + e.rows > max_async then break end
    if e.rows > max_rows - rows then break end
    serve(m, e, fair)
    if e.x == '1' then
      redis.call('DEL', k_job(e.id))  -- cancelled while it waited
    else
      redis.call('HSET', k_job(e.id), 'st', 'run', 'own', owner, 'dl', e.dl + 1)
      redis.call('ZADD', K_LEASES, lease_until, e.id)
      taken[#taken + 1] = {e.id, redis.call('HGET', k_job(e.id), 'pl'), e.rp or '', e.dl + 1,
                           m, e.c, e.t, e.n, f(e.cost), e.rows}
      rows = rows + e.rows
      if e.c == 'async' then async_rows = async_rows + e.rows end
    end
  end
  -- Nothing taken: also say when the first entry in backoff becomes eligible, so the caller
  -- knows how long it may wait without another round trip.
  local due = false
  if #taken == 0 then
    for i = 8, #ARGV do
      local h = redis.call('ZRANGE', k_deferred(ARGV[i]), 0, 0, 'WITHSCORES')
      if h[2] and (not due or tonumber(h[2]) < tonumber(due)) then due = h[2] end
    end
  end
  return {taken, due}

elseif op == 'remove' then
  -- id: 1 taken out of the line, 2 running (it is flagged; its worker drops it), 0 unknown
  local e = load(ARGV[4])
  if e == nil or e.st == 'dead' then return 0 end
  if e.st == 'run' then
    redis.call('HSET', k_job(e.id), 'x', '1')
    redis.call('PUBLISH', P .. 'cancel', e.id)
    return 2
  end
  unqueue(e)
  redis.call('DEL', k_job(e.id))
  return 1

elseif op == 'finish' then
  -- id, owner: the holder's job leaves the queue for good
  if redis.call('HGET', k_job(ARGV[4]), 'own') ~= ARGV[5] then return 0 end
  redis.call('DEL', k_job(ARGV[4]))
  redis.call('ZREM', K_LEASES, ARGV[4])
  return 1

elseif op == 'heartbeat' then
  -- owner, lease_until, ids...: per id 0 lost, 1 held, 2 held but cancelled
  local out = {}
  for i = 6, #ARGV do
    local v = redis.call('HMGET', k_job(ARGV[i]), 'own', 'st', 'x')
    if v[1] == ARGV[4] and v[2] == 'run' then
      redis.call('ZADD', K_LEASES, 'XX', ARGV[5], ARGV[i])
      out[#out + 1] = v[3] == '1' and 2 or 1
    else
      out[#out + 1] = 0
    end
  end
  return out

elseif op == 'reclaim' then
  -- max_deliveries, limit, lost_event: jobs whose lease ran out go back in line (arrival kept,
  -- so aging counts their wait), or to the dead letters after max_deliveries; a job with a
  -- reply stream (a client waiting) gets lost_event there instead, since its output so far
  -- cannot be taken back.
  local max_deliveries, limit, lost = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
  local expired = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', '(' .. f(now), 'LIMIT', 0, limit)
  local out = {}
  for _, id in ipairs(expired) do
    redis.call('ZREM', K_LEASES, id)
    local e = load(id)
    if e == nil then
      -- finished meanwhile
    elseif e.x == '1' then
      redis.call('DEL', k_job(id))
      out[#out + 1] = {id, 'cancelled'}
    elseif e.rp and e.rp ~= '' then
      redis.call('XADD', e.rp, 'NOMKSTREAM', 'MAXLEN', '~', 100000, '*', 'id', id, 'e', lost)
      redis.call('DEL', k_job(id))
      out[#out + 1] = {id, 'lost'}
    elseif e.dl >= max_deliveries then
      redis.call('HSET', k_job(id), 'st', 'dead', 'own', '')
      redis.call('ZADD', K_DEAD, f(now), id)
      out[#out + 1] = {id, 'dead'}
    else
      redis.call('HSET', k_job(id), 'own', '')
      e.nb = 0
      add(e.m, e)
      wake(e.m)
      out[#out + 1] = {id, 'requeued'}
    end
  end
  return out

elseif op == 'depth' then
  -- model ('' for all), class ('' for both)
  local models = ARGV[4] ~= '' and {ARGV[4]} or redis.call('SMEMBERS', K_MODELS)
  local classes = ARGV[5] ~= '' and {ARGV[5]} or CLASSES
  local total = 0
  for _, m in ipairs(models) do
    for _, c in ipairs(classes) do total = total + num(st(m), 'd:' .. c) end
  end
  return total

elseif op == 'snapshot' then
  -- model: its state hash and every waiting entry, for working out positions in Python
  local m = ARGV[4]
  local entries = {}
  local function collect(ids)
    for _, mem in ipairs(ids) do
      local e = load(string.sub(mem, 13))
      if e then
        entries[#entries + 1] = {e.id, e.c, e.t, e.n, f(e.cost), e.rows, f(e.at), f(e.nb), e.seq}
      end
    end
  end
  for _, c in ipairs(CLASSES) do
    for _, t in ipairs(TIERS) do collect(redis.call('ZRANGE', k_oldest(m, c, t), 0, -1)) end
  end
  collect(redis.call('ZRANGE', k_deferred(m), 0, -1))
  return {redis.call('HGETALL', st(m)), entries}
end
return redis.error_reply('unknown operation ' .. tostring(op))
