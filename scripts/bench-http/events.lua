-- wrk script for POST /v1/usage/events: every event of every request is new.
--
--   wrk -s events.lua <url> -- <events-per-request> <run-prefix>
--
-- Event ids are <run-prefix>-<thread>-<counter>, so no two events of a run (or of two
-- runs with different prefixes) share an id and none is reported as a duplicate. The
-- Authorization header comes from wrk's -H option.

-- The app's own types (an app key records them; the gateway's own types are its alone).
local types = { "app.session", "app.module_completed", "app.session", "app.module_completed" }
local sources = { "/app/web", "/app/ios", "/app/android", "/app/lti-tool" }
-- The partner every event is for (the app names it); set by bench-http.sh.
local partner = os.getenv("BENCH_PARTNER") or "epic-sandbox"

local next_thread = 1
local threads = {}

-- Runs once per thread, in the main Lua state, before the threads start.
function setup(thread)
   thread:set("thread_id", next_thread)
   next_thread = next_thread + 1
   table.insert(threads, thread)
end

local batch, prefix, counter, time

function init(args)
   batch = tonumber(args[1] or "1")
   prefix = args[2] or tostring(os.time())
   counter = 0
   -- A fixed instant a minute in the past: valid (not in the future) for the whole run.
   time = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() - 60)
   wrk.method = "POST"
   wrk.path = "/v1/usage/events"
   wrk.headers["Content-Type"] = "application/json"
   math.randomseed(os.time() + (thread_id or 0))
end

local function event()
   counter = counter + 1
   local k = (counter % 4) + 1
   return string.format(
      '{"specversion":"1.0","id":"%s-%d-%d","source":"%s","type":"%s","partner":"%s","subject":"user-%05d","time":"%s","data":{"context_id":"c%d"}}',
      prefix, thread_id, counter, sources[k], types[k], partner, math.random(0, 19999), time, math.random(0, 49))
end

function request()
   local body
   if batch == 1 then
      body = event()
   else
      local parts = {}
      for i = 1, batch do
         parts[i] = event()
      end
      body = "[" .. table.concat(parts, ",") .. "]"
   end
   return wrk.format(nil, nil, nil, body)
end

-- One machine-readable line for scripts/bench-http.sh.
function done(summary, latency, requests)
   local secs = summary.duration / 1e6
   local non2xx = summary.errors.status
   local socket = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
   io.write(string.format(
      "RESULT requests=%d seconds=%.3f rps=%.1f non2xx=%d socket_errors=%d p50_ms=%.2f p99_ms=%.2f\n",
      summary.requests, secs, summary.requests / secs, non2xx, socket,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
