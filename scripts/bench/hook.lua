-- wrk script for scripts/bench/hook-latency.sh: POST one CDS Hooks request per
-- call, each with its own bearer JWT (the server refuses a replayed `jti`) and
-- its own hookInstance (every call is a distinct, persisted invocation).
--
-- Environment: BENCH_BODY (hook JSON file), BENCH_TOKENS (one JWT per line).

local threads = {}
local counter = 1

function setup(thread)
  thread:set("tid", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
  local raw = f:read("*a")
  f:close()
  -- The fixture's hookInstance, replaced per request.
  local hi = raw:match('"hookInstance"%s*:%s*"([^"]+)"')
  assert(hi, "no hookInstance in body")
  local s, e = raw:find(hi, 1, true)
  prefix = raw:sub(1, s - 1)
  suffix = raw:sub(e + 1)
  tokens = {}
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    if #line > 0 then table.insert(tokens, line) end
  end
  stride = tonumber(os.getenv("BENCH_THREADS"))
  nexti = tid
  seq = 0
end

function request()
  local token = tokens[nexti]
  if token == nil then
    error("out of tokens: generate more with --count")
  end
  nexti = nexti + stride
  seq = seq + 1
  local instance = string.format("00000000-0000-4000-8000-%04x%08x", tid, seq)
  return wrk.format("POST", wrk.path, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, prefix .. instance .. suffix)
end

-- BENCH_SERVER_TIMES=1: also collect the server's own times per call:
-- x-total-time (request received → record stored), to tell time spent
-- inside the handler from time queued before it (socket, workers), and
-- x-inference-time (the model's call, queueing for the pool included),
-- and x-model-batch (how many hooks shared the call's model pass).
if os.getenv("BENCH_SERVER_TIMES") == "1" then
  server_ms = {}
  inference_ms = {}
  model_batch = {}
  function response(status, headers, body)
    local t = tonumber(headers["x-total-time"])
    if t then table.insert(server_ms, t) end
    local i = tonumber(headers["x-inference-time"])
    if i then table.insert(inference_ms, i) end
    local b = tonumber(headers["x-model-batch"])
    if b then table.insert(model_batch, b) end
  end
end

function done(summary, latency, requests)
  io.write(string.format("latency_ms p50=%.2f p90=%.2f p99=%.2f max=%.2f\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
  io.write(string.format("requests=%d duration_s=%.2f throughput_rps=%.1f non2xx=%d socket_errors(connect/read/write/timeout)=%d/%d/%d/%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout))
  if os.getenv("BENCH_SERVER_TIMES") == "1" then
    for _, name in ipairs({"server_ms", "inference_ms", "model_batch"}) do
      local all = {}
      for _, t in ipairs(threads) do
        for _, v in ipairs(t:get(name)) do table.insert(all, v) end
      end
      table.sort(all)
      local function pct(p) return all[math.max(1, math.ceil(#all * p / 100))] end
      if #all > 0 then
        io.write(string.format("%s p50=%.1f p90=%.1f p99=%.1f max=%.1f n=%d\n",
          name, pct(50), pct(90), pct(99), all[#all], #all))
      end
    end
  end
end
