-- sliding_log: the exact limit. KEYS[1] is a sorted set with one member per
-- admitted unit, scored by its admission time in µs. A unit admitted at s
-- counts while now < s + window. See scripts.go for the shared contract and
-- why every number here is an exact integer below 2^53; sliding_log.go is the
-- Go twin and must stay in step with this file.
--
-- Memory and time are O(units admitted per window): the price of exactness.
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Numbers passed to Redis are formatted with %d: Lua's tostring keeps 14
-- digits only, and Redis may write a large double argument as 1e+08.
local function int(n) return string.format('%d', n) end

-- Entries scored at or below now - window are dead. They are removed only
-- when the set is written, so reads skip them by rank.
local count = redis.call('ZCOUNT', key, string.format('(%d', now - window), '+inf')
local dead = redis.call('ZCARD', key) - count

-- nth returns the score of the live entry at 0-based index i, oldest first.
local function nth(i)
  local e = redis.call('ZRANGE', key, int(dead + i), int(dead + i), 'WITHSCORES')
  return tonumber(e[2])
end

local want = cost
if want == 0 then want = 1 end -- a peek asks about a cost-1 request
local allowed = want <= limit and count + want <= limit

if allowed and cost > 0 then
  redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now - window))
  -- Members are unique even within one µs: the entries scored now are
  -- numbered 0..n-1 and expire together, so the next number is their count.
  local seq = redis.call('ZCOUNT', key, int(now), int(now))
  local args = {}
  for i = 0, cost - 1 do
    args[#args + 1] = int(now)
    args[#args + 1] = string.format('%d:%d', now, seq + i)
    if #args == 1000 or i == cost - 1 then -- in slices: unpack has a stack limit
      redis.call('ZADD', key, unpack(args))
      args = {}
    end
  end
  count = count + cost
  dead = 0
end

local remaining = limit - count
if remaining < 0 then remaining = 0 end

-- Full again when the newest live entry expires.
local reset = 0
if count > 0 then reset = nth(count - 1) + window - now end

local retry = 0
if not allowed then
  if want > limit then
    retry = reset
  else
    -- Admitted once the oldest count + want - limit entries have expired.
    retry = nth(count + want - limit - 1) + window - now
  end
end

if allowed and cost > 0 then
  redis.call('PEXPIRE', key, int(math.ceil(reset / 1000) + 1))
end
return {allowed and 1 or 0, remaining, reset, retry}
