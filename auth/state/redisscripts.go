package state

import "github.com/redis/go-redis/v9"

// The scripts run each check-and-count atomically on the server, timed by
// the server's clock (TIME), so that imapgates whose clocks differ agree.
// Every key they write expires by itself.

// luaNow is the server's time in milliseconds.
const luaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// beginScript admits a check or names the count that refuses it (1 pair,
// 2 user, 3 network; 0 admitted). KEYS: the three counts, their pending
// sets, the owner mark. ARGV: fingerprint, the three limits, ms until the
// check's deadline.
var beginScript = redis.NewScript(luaNow + `
local fp = ARGV[1]
local function over(i)
  local limit = tonumber(ARGV[1 + i])
  if limit <= 0 then return false end
  if redis.call('SISMEMBER', KEYS[i], fp) == 1 then return false end
  redis.call('ZREMRANGEBYSCORE', KEYS[3 + i], '-inf', now)
  if redis.call('ZSCORE', KEYS[3 + i], fp) then return false end
  return redis.call('SCARD', KEYS[i]) + redis.call('ZCARD', KEYS[3 + i]) >= limit
end
if over(1) then return 1 end
if redis.call('EXISTS', KEYS[7]) == 0 then
  if over(2) then return 2 end
  if over(3) then return 3 end
end
local ttl = tonumber(ARGV[5])
for i = 4, 6 do
  redis.call('ZADD', KEYS[i], now + ttl, fp)
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 0
`)

// endScript ends a check. KEYS: the three pending sets. ARGV: fingerprint.
var endScript = redis.NewScript(`
for i = 1, 3 do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 0
`)

// failureScript counts a wrong password and returns the three counts
// and, for each, 1 if it is at its limit (then also indexed in blocks and
// pushed to every imapgate). KEYS: the three counts, their pending sets,
// blocks. ARGV: fingerprint, the three limits, window (ms), channel, the
// three NAMEs.
var failureScript = redis.NewScript(luaNow + `
local fp, window = ARGV[1], tonumber(ARGV[5])
local out = {0, 0, 0, 0, 0, 0}
for i = 1, 3 do
  local limit = tonumber(ARGV[1 + i])
  if limit > 0 then
    if redis.call('SCARD', KEYS[i]) < limit then redis.call('SADD', KEYS[i], fp) end
    redis.call('PEXPIRE', KEYS[i], window)
    local n = redis.call('SCARD', KEYS[i])
    out[i] = n
    if n >= limit then
      redis.call('ZADD', KEYS[7], now + window, ARGV[6 + i])
      redis.call('PUBLISH', ARGV[6], 'b ' .. window .. ' ' .. ARGV[6 + i])
      out[3 + i] = 1
    end
  end
  redis.call('ZREM', KEYS[3 + i], fp)
end
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
return out
`)

// successScript forgets the pair's count (and its block) and marks the
// owner. KEYS: the pair's count, the owner mark, blocks. ARGV: remember
// (ms), channel, the pair's NAME.
var successScript = redis.NewScript(`
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
if redis.call('ZREM', KEYS[3], ARGV[3]) == 1 then
  redis.call('PUBLISH', ARGV[2], 'u ' .. ARGV[3])
end
return 0
`)

// liftScript forgets one record and its block. KEYS: the record, its
// pending set, blocks. ARGV: channel, NAME.
var liftScript = redis.NewScript(`
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('PUBLISH', ARGV[1], 'u ' .. ARGV[2])
return 0
`)

// blocksScript returns the server's time (ms) and then the blocks, NAME
// and expiry by turns. KEYS: blocks.
var blocksScript = redis.NewScript(luaNow + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local r = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
table.insert(r, 1, tostring(now))
return r
`)
