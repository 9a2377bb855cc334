package bus

import "github.com/redis/go-redis/v9"

// The Lua scripts run atomically inside Redis, which is what makes the
// epoch guard and the acknowledgement bookkeeping race-free.

// publishScript appends a publisher's messages to one stream, only if the
// database is still the one the publisher knows (the epoch marker). After a
// restart with an empty database the marker is gone, the script refuses,
// and the publisher runs its reset before writing anything: otherwise new
// messages could land ahead of the republished tail and break per-publisher
// order.
//
// KEYS[1] epoch marker, KEYS[2] stream.
// ARGV[1] epoch, ARGV[2] MAXLEN (approximate), ARGV[3] origin, then pairs of
// sequence number and data.
var publishScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('BCEPOCH the database was reset')
end
for i = 4, #ARGV, 2 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'o', ARGV[3], 's', ARGV[i], 'd', ARGV[i + 1])
end
return (#ARGV - 3) / 2
`)

// ackScript acknowledges stream entries for a group and, in the same step,
// records which sequence numbers of each origin the group has handled. The
// record per (topic, group, origin) is a sorted set: member "~" scored with
// the contiguous prefix of handled sequence numbers, plus one member per
// handled number above that prefix (out-of-order acks from several
// consumers). It also serves to merge a consumer's local record back after a
// reset (no ids, a floor per origin).
//
// KEYS[1] stream, KEYS[2..] the record of each origin.
// ARGV[1] group, ARGV[2] record TTL in ms, ARGV[3] n ids, ARGV[4..3+n] ids,
// then per record: floor (a prefix known to be handled), count, numbers.
// Returns the new prefix of each record.
var ackScript = redis.NewScript(`
local n = tonumber(ARGV[3])
local i = 4
while i < 4 + n do
  local j = math.min(i + 499, 3 + n)
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, j))
  i = j + 1
end
local out = {}
for k = 2, #KEYS do
  local key = KEYS[k]
  local p = tonumber(redis.call('ZSCORE', key, '~') or '0')
  local floor = tonumber(ARGV[i]); i = i + 1
  if floor > p then
    p = floor
    redis.call('ZREMRANGEBYSCORE', key, '-inf', p)
  end
  local c = tonumber(ARGV[i]); i = i + 1
  for j = 1, c do
    local s = tonumber(ARGV[i])
    if s > p then redis.call('ZADD', key, s, ARGV[i]) end
    i = i + 1
  end
  if redis.call('ZCARD', key) > 4097 then
    -- A hole that never fills (trimmed before delivery): give up on it
    -- rather than grow without bound.
    local low = redis.call('ZRANGEBYSCORE', key, '(' .. p, '+inf', 'LIMIT', 0, 1)
    if low[1] then p = tonumber(low[1]) - 1 end
  end
  while redis.call('ZSCORE', key, tostring(p + 1)) do
    redis.call('ZREM', key, tostring(p + 1))
    p = p + 1
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', p)
  redis.call('ZADD', key, p, '~')
  redis.call('PEXPIRE', key, ARGV[2])
  out[#out + 1] = p
end
return out
`)

// seenScript tells which sequence numbers a group has already handled.
//
// KEYS: the record of each origin. ARGV: per record, count then numbers.
// Returns per record {prefix, flag, flag, …} with flag 1 for handled.
var seenScript = redis.NewScript(`
local out = {}
local i = 1
for k = 1, #KEYS do
  local key = KEYS[k]
  local p = tonumber(redis.call('ZSCORE', key, '~') or '0')
  local r = {p}
  local c = tonumber(ARGV[i]); i = i + 1
  for j = 1, c do
    local s = tonumber(ARGV[i])
    if s <= p or redis.call('ZSCORE', key, ARGV[i]) then r[#r + 1] = 1 else r[#r + 1] = 0 end
    i = i + 1
  end
  out[k] = r
end
return out
`)

var allScripts = []*redis.Script{publishScript, ackScript, seenScript}
