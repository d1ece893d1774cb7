-- sliding_log: the exact limit. KEYS[1] is a sorted set with one member per
-- admitted request, whatever its cost, scored by its admission time in µs.
-- A request admitted at s counts its cost while now < s + window. See
-- scripts.go for the shared contract and why every number here is an exact
-- integer below 2^53; sliding_log.go is the Go twin and must stay in step
-- with this file.
--
-- A member is "SSSSSSSSSSSSSSSS:C": C is the request's cost and S (16
-- digits, zero-padded) the units admitted before it since the key was last
-- empty, so the member's units are S+1..S+C. S only grows, and scores
-- never go down (a clock that went back scores a new member like the
-- newest), so rank order, score order and S order agree, ties included (the
-- padding makes members of one score sort by S). The live units are then
-- the newest member's S+C minus the oldest live member's S: two lookups
-- whatever the cost, which is why a check's time and memory in Redis do not
-- grow with its cost (they grow with the requests admitted per window).
-- S grows by at most the limit per window while the key is never empty: at
-- the largest limit (1e8) per second it stays below 2^53, so exact, for
-- about 2.8 years of such a key.

local function startOf(m) return tonumber(string.sub(m, 1, 16)) end
local function endOf(m) return tonumber(string.sub(m, 1, 16)) + tonumber(string.sub(m, 18)) end

-- below(key, r) is the member r places below the newest and its score.
local function below(key, r)
  local i = string.format('%d', r)
  local e = redis.call('ZREVRANGE', key, i, i, 'WITHSCORES')
  return e[1], tonumber(e[2])
end

-- holder returns the score of the member holding unit u, given the newest
-- member's end and score and the oldest live member and its score. At a
-- key's limit with every cost 1 (the steady state of a denied key) the
-- oldest live member holds u: no call. Else, ends fall by at least one per
-- rank below the newest, so the holder is at most top - u places below it
-- (and never below the oldest member), exactly there when every cost is 1:
-- that place is tried first (ZCARD only when it is past the oldest), then
-- searched (ends decrease with the rank; rank 0 holds u).
local function holder(key, u, top, topScore, oldest, oldestScore)
  if u <= endOf(oldest) then return oldestScore end
  local lo, loScore, hi = 0, topScore, top - u
  local m, s = below(key, hi)
  if not m then
    hi = redis.call('ZCARD', key) - 1
    m, s = below(key, hi)
  end
  if endOf(m) >= u then return s end
  while hi - lo > 1 do
    local mid = math.floor((lo + hi) / 2)
    m, s = below(key, mid)
    if endOf(m) >= u then
      lo, loScore = mid, s
    else
      hi = mid
    end
  end
  return loScore
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
local lastNow, lastWindow, since, dead

local function decide(key, limit, window, burst, cost, now)
  if now ~= lastNow or window ~= lastWindow then
    lastNow, lastWindow = now, window
    since = string.format('(%d', now - window) -- the live members' scores
    dead = string.format('%d', now - window) -- and the dead ones'
  end
  -- The newest member, and the oldest live one when the newest is live:
  -- the oldest member when it is live (then none is dead, and a write
  -- has nothing to remove), else a search by score.
  local count, topScore, topEnd, anyDead, oldest, oldestScore = 0, 0, 0, false, nil, 0
  local top = redis.call('ZREVRANGE', key, '0', '0', 'WITHSCORES')
  if top[1] then
    topScore = tonumber(top[2])
    anyDead = true
    if topScore > now - window then
      topEnd = endOf(top[1])
      local e = redis.call('ZRANGE', key, '0', '0', 'WITHSCORES')
      if tonumber(e[2]) > now - window then
        anyDead = false
      else
        e = redis.call('ZRANGEBYSCORE', key, since, '+inf', 'WITHSCORES', 'LIMIT', '0', '1')
      end
      oldest, oldestScore = e[1], tonumber(e[2])
      count = topEnd - startOf(oldest)
    end
  end

  local want = cost
  if want == 0 then want = 1 end -- a peek asks about a cost-1 request
  local allowed = want <= limit and count + want <= limit

  -- Full again when the newest live member expires.
  local reset = 0
  if allowed and cost > 0 then
    local at = now
    if count == 0 then
      topEnd, oldestScore = 0, now -- every member is dead: numbering starts again
    elseif topScore > now then
      at = topScore
    end
    if anyDead then redis.call('ZREMRANGEBYSCORE', key, '-inf', dead) end
    redis.call('ZADD', key, string.format('%d', at), string.format('%016d:%d', topEnd, cost))
    count = count + cost
    topEnd, topScore = topEnd + cost, at
    reset = at + window - now
    redis.call('PEXPIRE', key, pexpire(reset))
  elseif count > 0 then
    reset = topScore + window - now
  end

  local remaining = limit - count
  if remaining < 0 then remaining = 0 end

  -- A unit comes back when the oldest live member expires or, over a
  -- lowered limit, the member that brings the count below the limit.
  local nextAfter = 0
  if count > limit then
    nextAfter = holder(key, topEnd - limit + 1, topEnd, topScore, oldest, oldestScore) + window - now
  elseif count > 0 then
    nextAfter = oldestScore + window - now
  end

  local retry = 0
  if not allowed then
    if want > limit then
      retry = reset
    else
      -- Admitted once the live units up to target have expired.
      retry = holder(key, topEnd + want - limit, topEnd, topScore, oldest, oldestScore) + window - now
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
