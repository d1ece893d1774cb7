-- wrk script: POST /api/v1/check over 10,000 distinct keys.
math.randomseed(42)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/api/v1/check", nil, string.format('{"key":"user:%d","cost":1}', math.random(0, 9999)))
end
