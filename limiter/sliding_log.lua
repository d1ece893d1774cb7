-- sliding_log: the exact limit. KEYS[1] is a sorted set with one member per
-- admitted unit, scored by its admission time in µs. A unit admitted at s
-- counts while now < s + window. See scripts.go for the shared contract and
-- why every number here is an exact integer below 2^53; sliding_log.go is the
-- Go twin and must stay in step with this file.
--
-- Memory and time are O(units admitted per window): the price of exactness.

-- Entries scored at or below now - window are dead. They are removed only
-- when the set is written, so reads skip them: the live entries are the
-- count highest-ranked ones, and newest(i) reads the score of the live entry
-- i places below the newest (i a string).
local function newest(key, i)
  return tonumber(redis.call('ZREVRANGE', key, i, i, 'WITHSCORES')[2])
end

-- pexpire returns the TTL in ms of a key that matters for reset more µs, as
-- the string Redis wants (see scripts.go). A string.format costs as much as
-- the rest of a decision's arithmetic, and keys of one policy decided at
-- one now, as in a batch, share the TTL: the last one is kept. The strings
-- made from now and the window are kept the same way.
local lastReset, lastTTL
local function pexpire(reset)
  if reset ~= lastReset then
    lastReset, lastTTL = reset, string.format('%d', math.ceil(reset / 1000) + 1)
  end
  return lastTTL
end
local lastNow, lastWindow, since, score, first

local function decide(key, limit, window, burst, cost, now)
  if now ~= lastNow or window ~= lastWindow then
    lastNow, lastWindow = now, window
    since = string.format('(%d', now - window) -- the live entries' scores
    score = string.format('%d', now) -- the new entries'
    first = score .. ':0' -- the first new member
  end
  local count = redis.call('ZCOUNT', key, since, '+inf')

  local want = cost
  if want == 0 then want = 1 end -- a peek asks about a cost-1 request
  local allowed = want <= limit and count + want <= limit

  -- Full again when the newest live entry expires.
  local reset = 0
  if allowed and cost > 0 then
    -- Drop the dead entries: all but the count highest-ranked.
    if count == 0 then
      redis.call('ZREMRANGEBYRANK', key, '0', '-1')
    else
      redis.call('ZREMRANGEBYRANK', key, '0', string.format('%d', -count - 1))
    end
    -- Members are unique even within one µs: the entries scored now are
    -- numbered 0..n-1 and expire together, so the next number is their count.
    -- Unless an entry is scored now or later (the same µs, or a clock that
    -- went back), there is none scored now and the new ones are the newest.
    local seq, top = 0, now
    if count > 0 and redis.call('ZCOUNT', key, score, '+inf') > 0 then
      seq = redis.call('ZCOUNT', key, score, score)
      top = newest(key, '0')
    end
    if cost == 1 and seq == 0 then
      redis.call('ZADD', key, score, first)
    else
      local args = {}
      for i = 0, cost - 1 do
        args[#args + 1] = score
        args[#args + 1] = string.format('%d:%d', now, seq + i)
        if #args == 1000 or i == cost - 1 then -- in slices: unpack has a stack limit
          redis.call('ZADD', key, unpack(args))
          args = {}
        end
      end
    end
    count = count + cost
    reset = top + window - now
    redis.call('PEXPIRE', key, pexpire(reset))
  elseif count > 0 then
    reset = newest(key, '0') + window - now
  end

  local remaining = limit - count
  if remaining < 0 then remaining = 0 end

  -- A unit comes back when the oldest entry expires, or, over a lowered
  -- limit, the entry that brings the count below it.
  local nextAfter = 0
  if count > 0 then
    local rank = count
    if rank > limit then rank = limit end
    nextAfter = newest(key, string.format('%d', rank - 1)) + window - now
  end

  local retry = 0
  if not allowed then
    if want > limit then
      retry = reset
    elseif want == limit then
      retry = reset -- the newest entry must expire too
    else
      -- Admitted once the oldest count + want - limit entries have expired:
      -- the last of them is limit - want places below the newest.
      retry = newest(key, string.format('%d', limit - want)) + window - now
    end
  end
  return {allowed and 1 or 0, remaining, reset, retry, nextAfter}
end

-- BatchScript cuts here: what follows is the entry point of a single call.
local now = tonumber(ARGV[5])
if now == nil then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
return decide(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), nil, tonumber(ARGV[4]), now)
