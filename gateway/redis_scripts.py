"""The Redis store's Lua scripts: every change that touches more than one key.

Each runs atomically on one node; in a cluster every script's KEYS share one hash tag
(redis_keys), so one user's rotation, logout or revocation is one script on one slot,
and two replicas racing the same rotation cannot both win.
"""

# KEYS: family, user index. ARGV: subject, digest, now, client, user agent, ttl ms, family id
CREATE = """
redis.call('HSET', KEYS[1], 'sub', ARGV[1], 'cur', ARGV[2], 'prev', '', 'rot', '0',
           'created', ARGV[3], 'last', ARGV[3], 'client', ARGV[4], 'ua', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[6]) / 1000, ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return 1
"""

# KEYS: family, dead marker, user index.
# ARGV: presented, successor, now, grace s, ttl ms, client, user agent, dead ms, family id
ROTATE = """
local f = redis.call('HMGET', KEYS[1], 'cur', 'prev', 'rot')
if not f[1] then return {'missing', '0'} end
if f[1] == ARGV[1] then
  redis.call('HSET', KEYS[1], 'cur', ARGV[2], 'prev', ARGV[1], 'rot', ARGV[3], 'last', ARGV[3],
             'client', ARGV[6], 'ua', ARGV[7])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('ZADD', KEYS[3], tonumber(ARGV[3]) + tonumber(ARGV[5]) / 1000, ARGV[9])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  return {'rotated', ARGV[3]}
end
if f[2] == ARGV[1] and tonumber(ARGV[3]) - tonumber(f[3]) <= tonumber(ARGV[4]) then
  return {'grace', f[3]}
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[9])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[8])
return {'reuse', '0'}
"""

# KEYS: family, dead marker, user index, [deny marker]. ARGV: ms, family id
END = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
if KEYS[4] then redis.call('SET', KEYS[4], '1', 'PX', ARGV[1]) end
return 1
"""

# KEYS: user index, cut-off. ARGV: now, ms, the user's key prefix (same hash tag: same slot)
REVOKE_USER = """
local n = 0
for _, fid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  n = n + redis.call('DEL', ARGV[3] .. 'fam:' .. fid)
  redis.call('SET', ARGV[3] .. 'dead:' .. fid, '1', 'PX', ARGV[2])
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1])
return n
"""

# KEYS: failure counters. ARGV: limit per key, then the window in ms.
# Returns the longest wait in ms when throttled (nothing counted), else counts the
# attempt on every key and returns 0: check and count in one atomic step.
ATTEMPT = """
local wait = 0
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= tonumber(ARGV[i]) then
    local ttl = redis.call('PTTL', key)
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[#KEYS + 1]) end
end
return 0
"""

# KEYS: pair, username, client counters. ARGV[1]: "1" after a success (the pair's earlier
# failures are forgiven). The attempt counted in advance is taken back.
TAKE_BACK = """
if ARGV[1] == '1' then redis.call('DEL', KEYS[1]) end
for i = 1, 3 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
return 1
"""


# OpenID Connect records, each one key. KEYS: the key. Get-and-delete (GETDEL before 6.2).
TAKE = """
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
return v
"""

# KEYS: the counter. ARGV: window ms
BUMP = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""

# KEYS: the index. ARGV: family, subject, ttl ms
INDEX = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
