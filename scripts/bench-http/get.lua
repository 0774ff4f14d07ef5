-- wrk script for GET requests (the /healthz ceiling): only the RESULT line of events.lua.
function done(summary, latency, requests)
   local secs = summary.duration / 1e6
   local socket = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
   io.write(string.format(
      "RESULT requests=%d seconds=%.3f rps=%.1f non2xx=%d socket_errors=%d p50_ms=%.2f p99_ms=%.2f\n",
      summary.requests, secs, summary.requests / secs, summary.errors.status, socket,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
