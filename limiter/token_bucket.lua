-- token_bucket: GCRA, rate plus burst in one timestamp. KEYS[1] holds the
-- theoretical arrival time (TAT, µs) as one little-endian double,
-- struct.pack('<d', tat): the time at which the bucket would be full again.
-- Each unit costs T = ceil(window/limit) µs; rounding T up makes the
-- long-run rate at most limit per window (never more), at most one µs per
-- unit slower than exact. A request of cost units is admitted iff
--   max(TAT, now) + cost*T - now <= burst*T
-- remaining = burst - ceil((TAT - now)/T) and reset_after = TAT - now.
-- Limit.Validate keeps burst*T <= 2^50 so every value stays below 2^53.
-- See scripts.go for the shared contract; token_bucket.go is the Go twin.

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
  local period = math.ceil(window / limit)
  local span = burst * period -- the time an empty bucket takes to fill
  local tat = now
  local v = redis.call('GET', key)
  if v then
    local t = struct.unpack('<d', v)
    if t > now then tat = t end
  end
  local debt = tat - now -- time until full

  local want = cost
  if want == 0 then want = 1 end -- a peek asks about a cost-1 request
  local need = 0
  local allowed = false
  if want <= burst then
    need = debt + want * period
    allowed = need <= span
  end
  if allowed and cost > 0 then
    debt = need
    redis.call('SET', key, struct.pack('<d', now + debt), 'PX', pexpire(debt))
  end

  local remaining = burst - math.ceil(debt / period)
  if remaining < 0 then remaining = 0 end

  -- The next unit is whole when the debt falls to a multiple of T (or,
  -- over a lowered burst, to burst-1 units).
  local nextAfter = 0
  if debt > 0 then
    local units = math.ceil(debt / period)
    if units > burst then units = burst end
    nextAfter = debt - (units - 1) * period
  end

  local retry = 0
  if not allowed then
    if want > burst then
      retry = debt
    else
      retry = need - span
    end
  end
  return {allowed and 1 or 0, remaining, debt, retry, nextAfter}
end

-- BatchScript cuts here: what follows is the entry point of a single call.
local now = tonumber(ARGV[5])
if now == nil then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
return decide(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), now)
