-- wrk script for bench/http.py --generator wrk (bench/loadgen.py runs it).
--
-- wrk -tN -cN -d600s -s wrk_trigger.lua URL -- KEY COUNT BODY N
--
-- POSTs BODY (JSON) with a bearer KEY, COUNT requests in all over N threads.
-- wrk is duration-based, so each thread takes a share of COUNT and stops itself
-- after that many answers. With one connection per thread (-t equal to -c) that
-- is exact: a connection sends its next request only after the answer, and
-- wrk.thread:stop() in response() ends the thread's loop before it writes
-- again. The thread then prints "done"; the caller sends SIGINT once every
-- thread has (wrk's main thread otherwise sleeps out -d), and done() prints one
-- JSON line: answers by status and every request's latency in microseconds.
--
-- Latencies are taken here (CLOCK_MONOTONIC through LuaJIT's FFI) rather than
-- read from wrk's histogram, which wrk "corrects" for coordinated omission by
-- adding samples: bench/http.py computes percentiles the same way for every
-- generator.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } wrk_trigger_timespec;
int clock_gettime(int clk_id, wrk_trigger_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local now_ts = ffi.new("wrk_trigger_timespec")

local function now_us()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
   return tonumber(now_ts.tv_sec) * 1000000 + tonumber(now_ts.tv_nsec) / 1000
end

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

local req

function init(args)
   req = wrk.format("POST", nil, {
      ["Authorization"] = "Bearer " .. args[1],
      ["Content-Type"] = "application/json",
   }, args[3])
   quota = share(tonumber(args[2]), id, tonumber(args[4]))
   answered = 0
   statuses = {}
   latencies = {}
end

local sent_at = 0

function request()
   -- One connection per thread: one request in flight, so one timestamp.
   sent_at = now_us()
   return req
end

function response(status, headers, body)
   answered = answered + 1
   latencies[answered] = now_us() - sent_at
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
   if answered >= quota then
      wrk.thread:stop()
      io.write("done\n")
      io.stdout:flush()
   end
end

function done(summary, latency, requests)
   local total, all = {}, {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         total[status] = (total[status] or 0) + n
      end
      for _, us in ipairs(thread:get("latencies")) do
         table.insert(all, string.format("%.1f", us))
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
      '{"answers": {%s}, "latencies_us": [%s], "requests": %d}\n',
      table.concat(parts, ", "),
      table.concat(all, ", "),
      summary.requests
   ))
   io.stdout:flush()
end
