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
  local victim       -- fn(set, base) -> way to evict from a full set
  local touch        -- fn(slot) on every use of a slot (lru), or nil

  if policy == "lru" then
    -- one clock per cache orders uses within each set as well
    local stamp, clock = slots(nsets * assoc + 1, 0), 0
    touch = function(slot)
      clock = clock + 1
      stamp[slot] = clock
    end
    victim = function(_, base)
      local way, oldest = 1, stamp[base + 1]
      for w = 2, assoc do
        local t = stamp[base + w]
        if t < oldest then way, oldest = w, t end
      end
      return way
    end
  elseif policy == "fifo" then
    -- Filled in way order, then each eviction takes the oldest: a round robin over the ways.
    local next_out = slots(nsets, 0)
    victim = function(set)
      local way = (next_out[set] or 0) + 1 -- the way after the last one evicted
      next_out[set] = way % assoc
      return way
    end
  elseif policy == "rand" then
    local random = cfg.random or M.prng(cfg.seed)
    victim = function()
      return random(assoc) + 1
    end
  else
    error("cachemodel: unknown policy '" .. tostring(policy) .. "'; known: "
      .. table.concat(M.POLICIES, ", "), 2)
  end

  -- Per set, the way of its last hit or fill (0: none yet), looked at before the others: most
  -- accesses hit the block their set used last, and then no loop runs, which keeps LuaJIT's
  -- compiled path through the caller straight. Which way is found first changes nothing else.
  local last = slots(nsets, 0)

  --- c:access(addr) -> true on a hit, false on a miss (the block is then in the cache).
  function c.access(self, addr)
    self.accesses = self.accesses + 1
    local block = floor(addr / blksize)
    local tag = floor(block / nsets)
    local set = block - tag * nsets
    local base = set * assoc
    local l = last[set] or 0
    if l ~= 0 and tags[base + l] == tag then
      if touch then touch(base + l) end
      return true
    end
    for w = 1, assoc do
      if tags[base + w] == tag then
        last[set] = w
        if touch then touch(base + w) end
        return true
      end
    end
    self.misses = self.misses + 1
    local n = filled[set] or 0
    local way
    if n < assoc then
      way = n + 1
      filled[set] = way
    else
      way = victim(set, base)
    end
    tags[base + way] = tag
    last[set] = way
    if touch then touch(base + way) end
    return false
  end

  --- c:contains(addr) -> whether the block of addr is cached (changes nothing, counts nothing).
  function c.contains(_, addr)
    local block = floor(addr / blksize)
    local tag = floor(block / nsets)
    local base = (block - tag * nsets) * assoc
    for w = 1, assoc do
      if tags[base + w] == tag then return true end
    end
    return false
  end

  return c
end

return M
