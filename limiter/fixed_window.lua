-- fixed_window: one counter per aligned window. KEYS[1] is a string of two
-- little-endian doubles, struct.pack('<dd', w, c): the window index
-- w = floor(now/window) and the units c admitted in window w; a counter from
-- another window counts as 0. A request is admitted iff c + cost <= limit;
-- the key is full again when its window ends, so reset_after is the time to
-- the window's end (0 when c = 0) and a denied request's retry_after is the
-- same. See scripts.go for the shared contract and the value format;
-- fixed_window.go is the Go twin.

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
  local c = 0
  local v = redis.call('GET', key)
  if v then
    local w, n = struct.unpack('<dd', v)
    if w == idx then c = n end
  end

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
    redis.call('SET', key, struct.pack('<dd', idx, c), 'PX', pexpire(reset))
  end
  return {allowed and 1 or 0, remaining, reset, retry, reset} -- every unit comes back at the window's end
end

-- BatchScript cuts here: what follows is the entry point of a single call.
local now = tonumber(ARGV[5])
if now == nil then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
return decide(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), nil, tonumber(ARGV[4]), now)
