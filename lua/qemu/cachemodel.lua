-- qemu.cachemodel: a set-associative cache model in pure Lua (no QEMU), the engine of
-- scripts/cache.lua, with the behaviour of QEMU's contrib/plugins/cache.c.
--
--   local cachemodel = require "qemu.cachemodel"
--   local c = cachemodel.new { size = 16384, blksize = 64, assoc = 8, policy = "lru" }
--   local hit = c:access(addr)        -- true on a hit; a miss brings the block in
--   print(c.accesses, c.misses)
--
-- A cache of `size` bytes holds size/blksize blocks in size/(blksize*assoc) sets of `assoc` ways.
-- An address splits into block offset, set number (block number modulo the number of sets) and
-- tag (the rest). Only tags are kept, no data. On a miss an empty way of the set is filled first
-- (lowest way first); a full set evicts by policy:
--   lru   the least recently used block (hits and fills both count as uses);
--   fifo  the block filled longest ago (hits do not matter);
--   rand  a way chosen by `random(assoc)`: by default a seeded MINSTD generator (M.prng), so runs
--         are reproducible; QEMU uses GLib's g_rand seeded from /dev/urandom.
--
-- Addresses must be non-negative integers below 2^53 (exact in every Lua qlua embeds). Block size
-- and the number of sets must be powers of two: QEMU asserts the first and, for the second,
-- derives a set mask that leaves some sets unused; the model refuses both with a message.

local M = {}

M.POLICIES = { "lru", "fifo", "rand" }

local floor = math.floor

-- Under LuaJIT the per-way state lives in FFI arrays: compiled code reads and writes them without
-- the table lookups (and the nil checks of empty ways) that a Lua table costs. Lua 5.4 uses
-- tables. Both behave alike: an empty way holds no tag (-1 in an array, nil in a table).
local has_ffi, ffi = pcall(require, "ffi")
if not has_ffi then ffi = nil end

-- n slots, 0 .. n-1, all `init` (number arrays under LuaJIT, tables of nil/`init` elsewhere)
local function slots(n, init)
  if ffi then
    local a = ffi.new("double[?]", n)
    if init ~= 0 then
      for i = 0, n - 1 do a[i] = init end
    end
    return a
  end
  return {}
end

local function is_pow2(n)
  if n < 1 then return false end
  while n % 2 == 0 do n = n / 2 end
  return n == 1
end

local function is_count(n)
  return type(n) == "number" and n >= 1 and n == floor(n)
end

--- Checks a geometry; returns nil when it is usable, else a message saying what is wrong. The
-- first two messages are QEMU's own.
function M.check(size, blksize, assoc)
  if not (is_count(size) and is_count(blksize) and is_count(assoc)) then
    return "cache size, block size and associativity must be positive integers"
  end
  if size % blksize ~= 0 then
    return "cache size must be divisible by block size"
  end
  if size % (blksize * assoc) ~= 0 then
    return "cache size must be divisible by set size (assoc * block size)"
  end
  if not is_pow2(blksize) then
    return "block size must be a power of two"
  end
  if not is_pow2(size / (blksize * assoc)) then
    return "the number of sets (cache size / (assoc * block size)) must be a power of two"
  end
  return nil
end

-- MINSTD (Park and Miller, multiplier 48271): every product stays below 2^47, so it is exact in
-- doubles (LuaJIT) and in integers (Lua 5.4), and both give the same sequence.
local MODULUS = 2147483647

--- A deterministic generator: returns random(n) -> an integer in [0, n). The seed is any integer;
-- equal seeds give equal sequences.
function M.prng(seed)
  seed = seed or 1
  assert(type(seed) == "number" and seed == floor(seed), "prng: seed must be an integer")
  local state = seed % (MODULUS - 1) + 1 -- 1 .. MODULUS-1: never the fixed point 0
  return function(n)
    state = state * 48271 % MODULUS
    return state % n
  end
end

-- c:access is written for each geometry and policy and compiled with load(): the sizes are
-- constants in it, the search of a set's ways is unrolled (up to UNROLL ways) and so is LRU's
-- search for the oldest way. A loop over the ways in the hot path becomes a trace of its own
-- under LuaJIT, and every access that ran it then finished in the interpreter (the trace of a
-- loop inside access() cannot continue into its caller): with straight code the whole access
-- stays in the caller's trace. Lua 5.4 splits the address with integer shifts and masks (exact
-- for every 64-bit address, where LuaJIT needs a division).
local UNROLL = 16
local INTEGERS = math.type ~= nil -- Lua 5.3+: integer operators exist

local function log2(n)
  local k = 0
  while n > 1 do n, k = n / 2, k + 1 end
  return k
end

local function make_access(nsets, blksize, assoc, policy)
  local L = {}
  local function add(fmt, ...) L[#L + 1] = string.format(fmt, ...) end
  local empty = ffi and "" or " or 0" -- tables start empty (nil), FFI arrays at 0
  -- addr -> its block's tag and set (the same in access and contains)
  local function split()
    if INTEGERS then
      add("  local block = addr >> %d", log2(blksize))
      add("  local tag, set = block >> %d, block & %d", log2(nsets), nsets - 1)
    else
      add("  local block = floor(addr / %d)", blksize)
      add("  local tag = floor(block / %d)", nsets)
      add("  local set = block - tag * %d", nsets)
    end
    add("  local base = set * %d", assoc)
  end
  add("local floor, tags, filled, last, stamp, next_out, random = ...")
  add("local clock = 0")
  add("local function contains(_, addr)")
  split()
  add("  for i = 1, %d do if tags[base + i] == tag then return true end end", assoc)
  add("  return false")
  add("end")
  add("local function access(self, addr)")
  add("  self.accesses = self.accesses + 1")
  split()
  add("  local w = last[set]%s", empty)
  add("  if w == 0 or tags[base + w] ~= tag then")
  if assoc <= UNROLL then
    for i = 1, assoc do
      add("    %sif tags[base + %d] == tag then w = %d", i == 1 and "" or "else", i, i)
    end
    add("    else w = 0 end")
  else
    add("    w = 0")
    add("    for i = 1, %d do if tags[base + i] == tag then w = i break end end", assoc)
  end
  add("    if w == 0 then")
  add("      self.misses = self.misses + 1")
  add("      local n = filled[set]%s", empty)
  add("      if n < %d then", assoc)
  add("        w = n + 1")
  add("        filled[set] = w")
  add("      else")
  if policy == "lru" then
    add("        local old = stamp[base + 1]")
    add("        w = 1")
    if assoc <= UNROLL then
      for i = 2, assoc do
        add("        if stamp[base + %d] < old then w, old = %d, stamp[base + %d] end", i, i, i)
      end
    else
      add("        for i = 2, %d do", assoc)
      add("          local t = stamp[base + i]")
      add("          if t < old then w, old = i, t end")
      add("        end")
    end
  elseif policy == "fifo" then
    -- filled in way order, then each eviction takes the oldest: a round robin over the ways
    add("        w = (next_out[set]%s) + 1", empty)
    add("        next_out[set] = w %% %d", assoc)
  else
    add("        w = random(%d) + 1", assoc)
  end
  add("      end")
  add("      tags[base + w] = tag")
  add("      last[set] = w")
  if policy == "lru" then add("      clock = clock + 1 stamp[base + w] = clock") end
  add("      return false")
  add("    end")
  add("    last[set] = w")
  add("  end")
  if policy == "lru" then add("  clock = clock + 1 stamp[base + w] = clock") end
  add("  return true")
  add("end")
  add("return access, contains")
  local chunk = assert((loadstring or load)(table.concat(L, "\n"),
    string.format("=cachemodel(%d sets, %d-byte blocks, %d ways, %s)", nsets, blksize, assoc,
      policy)))
  return chunk
end

--- Makes a cache: cfg = { size, blksize, assoc, policy = "lru"|"fifo"|"rand", random = fn(n) }.
-- `random` is used by "rand" only (default M.prng(cfg.seed)). Errors on a bad geometry.
function M.new(cfg)
  local size, blksize, assoc = cfg.size, cfg.blksize, cfg.assoc
  local why = M.check(size, blksize, assoc)
  if why then error("cachemodel: " .. why, 2) end
  local policy = cfg.policy or "lru"
  local nsets = floor(size / (blksize * assoc))

  local c = {
    size = size, blksize = blksize, assoc = assoc, sets = nsets, policy = policy,
    accesses = 0, misses = 0,
  }

  -- Set s (0-based) owns slots s*assoc+1 .. s*assoc+assoc of `tags`; nil (a table) or -1 (an FFI
  -- array) is an empty way.
  local tags = slots(nsets * assoc + 1, -1)
  local filled = slots(nsets, 0) -- per set: ways in use (they fill in order, never empty again)
  -- Per set, the way of its last hit or fill (0: none yet), looked at before the others: most
  -- accesses hit the block their set used last. Which way is found first changes nothing else.
  local last = slots(nsets, 0)
  local stamp = policy == "lru" and slots(nsets * assoc + 1, 0) or nil -- per slot: its last use
  local next_out = policy == "fifo" and slots(nsets, 0) or nil -- per set: the way evicted last
  local random = policy == "rand" and (cfg.random or M.prng(cfg.seed)) or nil
  if not (stamp or next_out or random) then
    error("cachemodel: unknown policy '" .. tostring(policy) .. "'; known: "
      .. table.concat(M.POLICIES, ", "), 2)
  end

  --- c:access(addr) -> true on a hit, false on a miss (the block is then in the cache).
  --- c:contains(addr) -> whether the block of addr is cached (changes nothing, counts nothing).
  c.access, c.contains = make_access(nsets, blksize, assoc, policy)(floor, tags, filled, last,
    stamp, next_out, random)

  return c
end

return M
