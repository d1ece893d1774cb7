-- sliding_window: the two-counter approximation, O(1) memory per key.
-- KEYS[1] is a string of three little-endian doubles,
-- struct.pack('<ddd', w, c, p): the window index w, the units c admitted in
-- window w and the units p admitted in window w-1. Windows are aligned: index
-- floor(now/window), elapsed = now - index*window. The previous window is
-- assumed to have been spread evenly, so at elapsed e it still weighs
-- p*(window-e)/window units; the estimate is
--   used = c + ceil(p*(window - e)/window)
-- and a request is admitted iff used + cost <= limit, which is the integer
-- form of p*(window-e) + (c+cost)*window <= limit*window.
-- reset_after: the estimate is back to 0 at the end of the next window when
-- c > 0, at the end of the current window when only p > 0, now when empty.
-- See scripts.go for the shared contract and the value format;
-- sliding_window.go is the Go twin.

-- muldiv returns floor(a*x/m) and a*x mod m without forming a*x, which
-- can reach 1e8 * 8.64e10 > 2^53. With a < 2^27, x < 2^37 and m < 2^37,
-- split x = xh*2^15 + xl: a*xh < 2^49, r1*2^15 < 2^52, a*xl < 2^42, so
-- every intermediate stays an exact integer below 2^53.
local function muldiv(a, x, m)
  local xh = math.floor(x / 32768)
  local xl = x - xh * 32768
  local t = a * xh
  local q1 = math.floor(t / m)
  local u = (t - q1 * m) * 32768 + a * xl
  local q2 = math.floor(u / m)
  return q1 * 32768 + q2, u - q2 * m
end

-- pexpire returns the TTL in ms of a key that matters for reset more µs, as
-- the string Redis wants (see scripts.go). A string.format costs as much as
-- the rest of a decision's arithmetic, and keys of one policy decided at
-- one now, as in a batch, share the TTL: the last one is kept.
local lastReset, lastTTL
local function pexpire(reset)
  if reset ~= lastReset then
    lastReset, lastTTL = reset, string.format('%d', math.ceil(reset / 1000) + 1)
  end
  return lastTTL
end

local function decide(key, limit, window, burst, cost, now)
  local idx = math.floor(now / window)
  local elapsed = now - idx * window
  local c, p = 0, 0
  local v = redis.call('GET', key)
  if v then
    local w
    w, c, p = struct.unpack('<ddd', v)
    if w == idx - 1 then
      p, c = c, 0
    elseif w ~= idx then
      p, c = 0, 0
    end
  end

  local used = c
  if p > 0 then
    local q, r = muldiv(p, window - elapsed, window)
    if r > 0 then q = q + 1 end
    used = used + q
  end

  local want = cost
  if want == 0 then want = 1 end -- a peek asks about a cost-1 request
  local allowed = want <= limit and used + want <= limit
  if allowed and cost > 0 then
    c = c + cost
    used = used + cost
  end

  local remaining = limit - used
  if remaining < 0 then remaining = 0 end

  local reset = 0
  if c > 0 then
    reset = 2 * window - elapsed
  elseif p > 0 then
    reset = window - elapsed
  end

  -- The estimate must drop to target: within this window while p decays,
  -- if that is enough, else in the next one as c decays.
  local nextAfter = 0
  if used > 0 then
    local target = used
    if target > limit then target = limit end
    target = target - 1
    if target >= c then
      nextAfter = window - muldiv(target - c, window, p) - elapsed
    else
      nextAfter = 2 * window - muldiv(target, window, c) - elapsed
    end
  end

  local retry = 0
  if not allowed then
    if want > limit then
      retry = reset
    elseif c + want <= limit then
      -- Later in this window, once p has decayed to limit - c - want units:
      -- the first e with p*(window-e) <= (limit-c-want)*window.
      retry = window - muldiv(limit - c - want, window, p) - elapsed
    elseif c <= limit - want then
      -- At the start of the next window, where c weighs fully.
      retry = window - elapsed
    else
      -- Later in the next window, once c has decayed to limit - want units.
      retry = 2 * window - muldiv(limit - want, window, c) - elapsed
    end
  end

  if allowed and cost > 0 then
    redis.call('SET', key, struct.pack('<ddd', idx, c, p), 'PX', pexpire(reset))
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
