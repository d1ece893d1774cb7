-- token_bucket: GCRA, rate plus burst in one timestamp. KEYS[1] holds the
-- theoretical arrival time (TAT, µs): the time at which the bucket would be
-- full again. Each unit costs T = ceil(window/limit) µs; rounding T up makes
-- the long-run rate at most limit per window (never more), at most one µs per
-- unit slower than exact. A request of cost units is admitted iff
--   max(TAT, now) + cost*T - now <= burst*T
-- remaining = burst - ceil((TAT - now)/T) and reset_after = TAT - now.
-- Limit.Validate keeps burst*T <= 2^50 so every value stays below 2^53.
-- See scripts.go for the shared contract; token_bucket.go is the Go twin.
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function int(n) return string.format('%d', n) end

local period = math.ceil(window / limit)
local span = burst * period -- the time an empty bucket takes to fill
local tat = tonumber(redis.call('GET', key))
if tat == nil or tat < now then tat = now end
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
  redis.call('SET', key, int(now + debt), 'PX', int(math.ceil(debt / 1000) + 1))
end

local remaining = burst - math.ceil(debt / period)
if remaining < 0 then remaining = 0 end

local retry = 0
if not allowed then
  if want > burst then
    retry = debt
  else
    retry = need - span
  end
end
return {allowed and 1 or 0, remaining, debt, retry}
