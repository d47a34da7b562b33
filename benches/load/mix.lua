-- wrk script for benches/load: a PUT/GET mix against a macronode gateway, or plain GETs.
--
-- Environment (read once per thread):
--   LOAD_GET_PATH   the path every GET asks for, e.g. /o/b3:<hex> (required)
--   LOAD_PUT_EVERY  one request in N is a PUT of a fresh 4 KiB body (0 = GETs only)
--   LOAD_PUT_BYTES  PUT body size (default 4096)
-- At the end it prints one line, `LOADJSON {...}`, with the counts by status class and the
-- latency percentiles wrk measured (microseconds), for benches/load to parse. wrk runs each
-- thread in its own Lua state: counts are gathered from the threads in done().

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  get_path = os.getenv("LOAD_GET_PATH") or "/"
  put_every = tonumber(os.getenv("LOAD_PUT_EVERY") or "0")
  put_bytes = tonumber(os.getenv("LOAD_PUT_BYTES") or "4096")
  n, puts, gets = 0, 0, 0
  s2xx, s429, s503, s4xx, s5xx, other = 0, 0, 0, 0, 0, 0
  filler = string.rep("m", put_bytes - 24)
  get_req = wrk.format("GET", get_path)
end

function request()
  n = n + 1
  if put_every > 0 and n % put_every == 0 then
    puts = puts + 1
    -- A body no other request sent: thread id and counter, padded to put_bytes.
    local body = string.format("%08d:%014d:", tid, n) .. filler
    return wrk.format("PUT", "/o", { ["Content-Type"] = "application/octet-stream" }, body)
  end
  gets = gets + 1
  return get_req
end

function response(status, headers, body)
  if status >= 200 and status < 300 then s2xx = s2xx + 1
  elseif status == 429 then s429 = s429 + 1
  elseif status == 503 then s503 = s503 + 1
  elseif status >= 400 and status < 500 then s4xx = s4xx + 1
  elseif status >= 500 then s5xx = s5xx + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local t = { puts = 0, gets = 0, s2xx = 0, s429 = 0, s503 = 0, s4xx = 0, s5xx = 0, other = 0 }
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + (thread:get(k) or 0) end
  end
  local e = summary.errors
  io.write(string.format(
    'LOADJSON {"requests":%d,"duration_us":%d,"bytes":%d,"puts":%d,"gets":%d,' ..
    '"s2xx":%d,"s429":%d,"s503":%d,"s4xx":%d,"s5xx":%d,"other":%d,' ..
    '"socket_errors":%d,"timeouts":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, t.puts, t.gets,
    t.s2xx, t.s429, t.s503, t.s4xx, t.s5xx, t.other,
    e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
