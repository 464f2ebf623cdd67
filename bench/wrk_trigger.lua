-- wrk script for bench/http.py --generator wrk (bench/loadgen.py runs it).
--
-- wrk -tN -cN -d600s -s wrk_trigger.lua URL -- KEY COUNT BODY N
--
-- POSTs BODY (JSON) with a bearer KEY, COUNT requests in all. wrk is
-- duration-based, so each thread takes a share of COUNT and stops itself after
-- that many answers. With one connection per thread (-t equal to -c) that is
-- exact: a connection sends its next request only after the answer, and
-- wrk.thread:stop() in response() ends the thread's loop before it writes
-- again. The thread then prints "done"; the caller sends SIGINT once every
-- thread has (wrk's main thread otherwise sleeps out -d), and done() prints
-- one JSON line: answers by status and latency percentiles (microseconds).

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("id", #threads)
end

-- This thread's share of `total` requests over `count` threads.
local function share(total, index, count)
   local base = math.floor(total / count)
   if index <= total % count then
      return base + 1
   end
   return base
end

function init(args)
   wrk.method = "POST"
   wrk.body = args[3]
   wrk.headers["Authorization"] = "Bearer " .. args[1]
   wrk.headers["Content-Type"] = "application/json"
   quota = share(tonumber(args[2]), id, tonumber(args[4]))
   answered = 0
   statuses = {}
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
   answered = answered + 1
   if answered >= quota then
      wrk.thread:stop()
      io.write("done\n")
      io.stdout:flush()
   end
end

function done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         total[status] = (total[status] or 0) + n
      end
   end
   for _, kind in ipairs({ "connect", "read", "write" }) do
      local n = summary.errors[kind]
      if n > 0 then
         total["wrk " .. kind .. " error"] = n
      end
   end
   local parts = {}
   for status, n in pairs(total) do
      table.insert(parts, string.format('"%s": %d', status, n))
   end
   io.write(string.format(
      '{"answers": {%s}, "p50_us": %d, "p99_us": %d, "requests": %d}\n',
      table.concat(parts, ", "),
      latency:percentile(50.0),
      latency:percentile(99.0),
      summary.requests
   ))
   io.stdout:flush()
end
