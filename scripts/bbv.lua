-- bbv.lua: basic block vectors for SimPoint; a port of QEMU 10.0.2's contrib/plugins/bbv.c (not
-- in QEMU 7.2).
--
-- Arguments:
--   interval=N     (default 100000000) instructions per interval;
--   outfile=PATH   (required) each vCPU writes PATH.VCPU.bb (PATH.0.bb, PATH.1.bb, ...); %p in
--                  PATH is the process id (one set of files per process of a forking guest).
--
-- Output: the files, nothing in the plugin log. Each time a vCPU has run `interval` more
-- instructions it writes one line
--   T:ID:COUNT :ID:COUNT ... \n
-- one ":ID:COUNT " (with its trailing space) for each block that ran on that vCPU during the
-- interval. ID numbers a block start address, from 1, in the order the addresses were first
-- translated; COUNT is the instructions the block executed in the interval (its instruction count
-- times its executions), so the counts of a line add up to about `interval`.
-- As in QEMU: a block's instructions are counted when it starts, all at once, so the interval
-- ends at the end of the block that reaches it, and the excess is carried into the next interval;
-- the partial interval left at exit is not written; a vCPU's count and its blocks' counts persist
-- when user mode reuses its index for a new thread.
--
-- On QEMU 7.2 a block's instruction count (what QEMU's API reports) can include one x86
-- instruction that the translator dropped at a page crossing (a 7.2 bug, fixed in 8.0), so the
-- counts can exceed the instructions executed by a few: QEMU's own plugin would count the same.
--
-- How: per-vCPU native counters count the instructions (tb:count) of the vCPU and of each block;
-- a native conditional callback (tb:when) calls Lua only when a block completes an interval,
-- which then reads all block counters in one call (qemu.read_counters) and writes the line.
--
-- Differences from QEMU's plugin, on purpose:
--   * the ID:COUNT pairs of a line are in ID order (QEMU's follow its hash table's order);
--   * a user-mode vCPU index reused by a new guest thread keeps appending to its file (QEMU opens
--     PATH.VCPU.bb again with "w", which empties what the earlier thread wrote);
--   * interval must be a whole number >= 1 and outfile must be writable (QEMU reads "interval=x"
--     as 0 and skips a vCPU whose file cannot be opened, silently);
--   * pending lines are flushed before a guest fork or clone, so a forked child does not write
--     its parent's buffered lines again.
local qemu = require "qemu"
local fmt = require "qemu.bbv_format"

local args = qemu.script {
  name = "bbv",
  description = "SimPoint basic block vectors, one file per vCPU (QEMU 10's bbv)",
  args = {
    { name = "interval", type = "int", default = 100000000, min = 1,
      help = "instructions per interval" },
    { name = "outfile", type = "string", required = true,
      help = "file name prefix: PATH.VCPU.bb per vCPU" },
  },
}

local interval = args.interval
local files = {}

local function open(vcpu)
  local path = string.format("%s.%d.bb", qemu.output_path(args.outfile), vcpu)
  local f, err = io.open(path, "w")
  if not f then error("bbv.lua: cannot write " .. path .. ": " .. err, 0) end
  files[vcpu] = f
end
open(0) -- fail at load, not at the first vCPU, if the path cannot be written

qemu.on_vcpu_init(function(vcpu)
  if not files[vcpu] then open(vcpu) end
end)

local insns = qemu.counter()   -- per vCPU: instructions since the last interval ended
local blocks = {}              -- start address -> { id, counter, by_n = { [n] = data } }
local counters = {}            -- id -> the block's counter, read all at once at each interval
local reported = {}            -- vCPU -> { [id] = block counter value already written }
local values = {}              -- id -> the counter's value, refilled at each interval

local function interval_done(vcpu, data)
  local f = files[vcpu]
  if not f then return end
  -- Lua runs before this execution's native adds: count the current block's n here, and leave
  -- the vCPU's counter at (count + n - interval) once the add is done.
  fmt.subtract(insns, interval, vcpu)
  local seen = reported[vcpu]
  if not seen then
    seen = {}
    reported[vcpu] = seen
  end
  local count = #counters
  for id = #seen + 1, count do seen[id] = 0 end -- an array, not a hash: the loop below is hot
  local current, n = data[1].id, data[2]
  local entries = {}
  qemu.read_counters(counters, vcpu, values)
  for id = 1, count do
    local v = values[id]
    if id == current then v = v + n end
    local before = seen[id]
    if v ~= before then
      entries[#entries + 1] = { id, v - before }
      seen[id] = v
    end
  end
  f:write(fmt.line(entries))
end

qemu.on_translate(function(tb)
  local vaddr, n = tb.vaddr, #tb
  local b = blocks[vaddr]
  if not b then
    b = { id = #counters + 1, counter = qemu.counter(), by_n = {} }
    blocks[vaddr] = b
    counters[b.id] = b.counter
  end
  local data = b.by_n[n]
  if not data then
    data = { b, n }
    b.by_n[n] = data
  end
  -- QEMU's condition, count + n >= interval after the add, seen before the add:
  if n >= interval then
    tb:when(insns, "always", 0, interval_done, data)
  else
    tb:when(insns, ">=", interval - n, interval_done, data)
  end
  tb:count(insns, n)
  tb:count(b.counter, n)
end)

-- Flush before the guest forks, so the child does not inherit buffered lines.
local FORKS = {
  x86_64 = { 56, 57, 58, 435 }, aarch64 = { 220, 435 }, riscv64 = { 220, 435 },
  loongarch64 = { 220, 435 }, i386 = { 2, 120, 190, 435 }, arm = { 2, 120, 190, 435 },
}
if not qemu.info.system and FORKS[qemu.info.target] then
  local is_fork = {}
  for _, num in ipairs(FORKS[qemu.info.target]) do is_fork[num] = true end
  qemu.on_syscall(function(vcpu, num)
    if is_fork[num] then
      for _, f in pairs(files) do f:flush() end
    end
  end)
end

qemu.on_exit(function()
  for _, f in pairs(files) do f:close() end
end)
