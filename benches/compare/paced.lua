-- wrk script for compare.sh's "same load" latency test: each connection
-- waits 1 ms after every answer before sending its next request, so every
-- proxy is offered about the same request rate, below what any of them can
-- serve, and their latencies are compared at that load rather than at
-- their own saturation points. wrk times each request from when it is sent,
-- so the wait is not counted in the latency.
function delay()
  return 1
end
