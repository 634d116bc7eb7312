-- POST /v1/chat/completions for wrk. Arguments (after `--`):
--   1 model   2 mode: "fixed" (one body: cache hits) | "unique" (a new prompt per request)
--   3 temperature   4 bearer key (optional)
-- done() prints one JSON line that bench/wrk.py parses; latencies are in microseconds.
local counter = 0
local thread_id = 0
local threads = {}
local model, mode, temperature = "gpt-4o-mini", "fixed", "0"

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local function body(prompt)
  return '{"model":"' .. model .. '","temperature":' .. temperature ..
    ',"max_tokens":16,"messages":[{"role":"user","content":"' .. prompt .. '"}]}'
end

local fixed_body

function init(args)
  model = args[1] or model
  mode = args[2] or mode
  temperature = args[3] or temperature
  if args[4] and args[4] ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. args[4]
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  thread_id = tid or 0
  fixed_body = body("What is the capital of Australia?")
  -- a per-run salt, so that a second run's "unique" prompts miss as well
  math.randomseed(os.time() + thread_id)
  salt = tostring(math.random(1, 1000000000))
end

function request()
  if mode == "unique" then
    counter = counter + 1
    return wrk.format(nil, nil, nil,
      body("What is the capital of country " .. salt .. "-" .. thread_id .. "-" .. counter .. "?"))
  end
  return wrk.format(nil, nil, nil, fixed_body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
