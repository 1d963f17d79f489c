-- wrk script: GET /v1/pieces/{barcode} for barcodes drawn at random from a keys file (one per
-- line), with a bearer token from IMBTRACK_TOKEN; prints one JSON line of figures at the end.
--   wrk -t1 -c32 -d20s -s lookup.lua http://127.0.0.1:8080 -- keys.txt
local keys = {}
local headers = {}

function init(args)
  for line in io.lines(args[1]) do
    keys[#keys + 1] = line
  end
  local token = os.getenv("IMBTRACK_TOKEN")
  if token and token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  math.randomseed(os.time() + #keys)
end

function request()
  return wrk.format("GET", "/v1/pieces/" .. keys[math.random(#keys)], headers)
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local errors = summary.errors
  io.write(string.format(
    '{"system":"imbtrack-http","requests":%d,"duration_s":%.2f,"requests_per_s":%.0f,' ..
    '"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"socket_errors":%d,"non_2xx":%d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    errors.connect + errors.read + errors.write + errors.timeout, errors.status))
end
