-- fixed_window: one counter per aligned window. KEYS[1] is a hash
-- {w = window index floor(now/window), c = units admitted in window w}; a
-- counter from another window counts as 0. A request is admitted iff
-- c + cost <= limit; the key is full again when its window ends, so
-- reset_after is the time to the window's end (0 when c = 0) and a denied
-- request's retry_after is the same. See scripts.go for the shared contract;
-- fixed_window.go is the Go twin.
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function int(n) return string.format('%d', n) end

local idx = math.floor(now / window)
local h = redis.call('HMGET', key, 'w', 'c')
local c = 0
if tonumber(h[1]) == idx then c = tonumber(h[2]) or 0 end

local want = cost
if want == 0 then want = 1 end -- a peek asks about a cost-1 request
local allowed = want <= limit and c + want <= limit
if allowed and cost > 0 then c = c + cost end

local remaining = limit - c
if remaining < 0 then remaining = 0 end
local reset = 0
if c > 0 then reset = (idx + 1) * window - now end
local retry = 0
if not allowed then retry = reset end

if allowed and cost > 0 then
  redis.call('HSET', key, 'w', int(idx), 'c', int(c))
  redis.call('PEXPIRE', key, int(math.ceil(reset / 1000) + 1))
end
return {allowed and 1 or 0, remaining, reset, retry}
