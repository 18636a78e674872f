-- Specs for lua/qemu/cachemodel.lua: the set-associative cache model behind scripts/cache.lua.
-- Every expected hit/miss sequence below is worked out by hand in the comments.

require "spec.helpers.fake_core" -- puts lua/ on package.path

local cachemodel = require "qemu.cachemodel"

-- Runs addresses through cache c; returns the outcomes as a string of H (hit) and M (miss).
local function run(c, addrs)
  local out = {}
  for i, a in ipairs(addrs) do out[i] = c:access(a) and "H" or "M" end
  return table.concat(out)
end

-- A cache with a random(n) that returns the given ways (0-based) in turn.
local function scripted_rand(size, blksize, assoc, ways)
  local i = 0
  return cachemodel.new { size = size, blksize = blksize, assoc = assoc, policy = "rand",
    random = function(n)
      i = i + 1
      assert(n == assoc, "random is asked for a way among assoc")
      return ways[i]
    end }
end

describe("qemu.cachemodel", function()
  describe("check", function()
    it("accepts QEMU's default geometries", function()
      assert.is_nil(cachemodel.check(16384, 64, 8))   -- L1: 32 sets
      assert.is_nil(cachemodel.check(2097152, 64, 16)) -- L2: 2048 sets
      assert.is_nil(cachemodel.check(64, 64, 1))      -- one block
    end)

    it("gives QEMU's messages for sizes that do not divide", function()
      assert.equal("cache size must be divisible by block size", cachemodel.check(1000, 64, 1))
      assert.equal("cache size must be divisible by set size (assoc * block size)",
        cachemodel.check(192, 64, 2))
    end)

    it("refuses block sizes and set counts that are not powers of two", function()
      assert.equal("block size must be a power of two", cachemodel.check(96, 48, 1))
      assert.matches("number of sets", cachemodel.check(192, 64, 1)) -- 3 sets
    end)

    it("refuses zero, negative and fractional values", function()
      for _, g in ipairs({ { 0, 64, 1 }, { 64, 0, 1 }, { 64, 64, 0 }, { -64, 64, 1 }, { 64.5, 64, 1 } }) do
        assert.matches("positive integers", cachemodel.check(g[1], g[2], g[3]))
      end
    end)
  end)

  describe("new", function()
    it("derives the number of sets", function()
      local c = cachemodel.new { size = 16384, blksize = 64, assoc = 8 }
      assert.equal(32, c.sets)
      assert.equal("lru", c.policy)
      assert.equal(0, c.accesses)
      assert.equal(0, c.misses)
    end)

    it("raises the geometry error", function()
      local ok, err = pcall(cachemodel.new, { size = 1000, blksize = 64, assoc = 1 })
      assert.is_false(ok)
      assert.matches("cachemodel: cache size must be divisible by block size", err, 1, true)
    end)

    it("refuses an unknown policy, listing the known ones", function()
      local ok, err = pcall(cachemodel.new, { size = 128, blksize = 64, assoc = 2, policy = "mru" })
      assert.is_false(ok)
      assert.matches("unknown policy 'mru'; known: lru, fifo, rand", err, 1, true)
    end)
  end)

  describe("access", function()
    it("counts accesses and misses", function()
      local c = cachemodel.new { size = 256, blksize = 64, assoc = 1 }
      run(c, { 0, 8, 64, 0, 300 })
      assert.equal(5, c.accesses)
      assert.equal(3, c.misses) -- 0 M, 8 H (same block), 64 M, 0 H, 300 M (block 4)
    end)

    it("hits within a block and misses at each block boundary", function()
      -- 64-byte blocks: bytes 0..63 are one block, 64..127 the next.
      local c = cachemodel.new { size = 1024, blksize = 64, assoc = 2 }
      assert.equal("MHHMHM", run(c, { 0, 1, 63, 64, 127, 128 }))
    end)

    it("a block size of 16 splits what a block size of 64 keeps together", function()
      local addrs = { 0, 16, 32, 48, 0, 16, 32, 48 }
      assert.equal("MHHHHHHH", run(cachemodel.new { size = 1024, blksize = 64, assoc = 1 }, addrs))
      assert.equal("MMMMHHHH", run(cachemodel.new { size = 1024, blksize = 16, assoc = 1 }, addrs))
    end)

    it("direct-mapped: blocks one cache size apart evict each other", function()
      -- 256 bytes, 64-byte blocks, 1 way: 4 sets; 0 and 256 are blocks 0 and 4, both set 0.
      local c = cachemodel.new { size = 256, blksize = 64, assoc = 1 }
      assert.equal("MMMM", run(c, { 0, 256, 0, 256 }))
      assert.is_false(c:contains(0))
      assert.is_true(c:contains(256))
    end)

    it("direct-mapped: blocks of different sets do not conflict", function()
      -- 0, 64, 128, 192 are sets 0..3: four compulsory misses, then all hit.
      local c = cachemodel.new { size = 256, blksize = 64, assoc = 1 }
      assert.equal("MMMMHHHH", run(c, { 0, 64, 128, 192, 0, 64, 128, 192 }))
    end)

    it("two ways absorb the conflict that one way cannot", function()
      -- 512 bytes, 2 ways: 4 sets; 0 and 256 are blocks 0 and 4, both set 0, now in two ways.
      local c = cachemodel.new { size = 512, blksize = 64, assoc = 2 }
      assert.equal("MMHH", run(c, { 0, 256, 0, 256 }))
    end)

    it("a third block in a 2-way set evicts one of the two", function()
      -- Blocks 0, 4 and 8 all map to set 0 of 4 sets.
      local c = cachemodel.new { size = 512, blksize = 64, assoc = 2 }
      assert.equal("MMM", run(c, { 0, 256, 512 }))
      assert.is_false(c:contains(0)) -- LRU: 0 was used longest ago
      assert.is_true(c:contains(256))
      assert.is_true(c:contains(512))
    end)

    it("keeps a tag per set: equal tags in different sets are different blocks", function()
      -- 4 sets of 64-byte blocks: 0 and 64 have tag 0 in sets 0 and 1.
      local c = cachemodel.new { size = 256, blksize = 64, assoc = 1 }
      assert.equal("MMHH", run(c, { 0, 64, 0, 64 }))
    end)

    it("handles user-mode addresses above 2^32", function()
      local base = 0x4000000000
      local c = cachemodel.new { size = 256, blksize = 64, assoc = 1 }
      assert.equal("MMHM", run(c, { base, base + 256, base + 256 + 8, base }))
    end)
  end)

  describe("lru", function()
    -- One set of 2 ways (128 bytes, 64-byte blocks); A, B, C are three blocks.
    local A, B, C = 0, 64, 128

    it("evicts the least recently used block: A B A C A B", function()
      -- A M, B M, A H (A now newest), C M evicts B, A H, B M evicts C.
      local c = cachemodel.new { size = 128, blksize = 64, assoc = 2, policy = "lru" }
      assert.equal("MMHMHM", run(c, { A, B, A, C, A, B }))
      assert.equal(4, c.misses)
    end)

    it("misses on every access when a cycle is one block longer than the set", function()
      -- 4 ways, blocks 0..4 cycled: each access evicts the block needed 4 accesses later.
      local c = cachemodel.new { size = 256, blksize = 64, assoc = 4, policy = "lru" }
      local addrs = {}
      for round = 1, 3 do
        for b = 0, 4 do addrs[#addrs + 1] = b * 64 end
      end
      assert.equal(string.rep("M", 15), run(c, addrs))
    end)

    it("only misses compulsorily when the cycle fits", function()
      local c = cachemodel.new { size = 256, blksize = 64, assoc = 4, policy = "lru" }
      local addrs = {}
      for round = 1, 3 do
        for b = 0, 3 do addrs[#addrs + 1] = b * 64 end
      end
      assert.equal("MMMM" .. string.rep("H", 8), run(c, addrs))
    end)
  end)

  describe("fifo", function()
    local A, B, C = 0, 64, 128

    it("evicts the block filled first, whatever its hits: A B A C A B", function()
      -- A M, B M, A H (no effect), C M evicts A (filled first), A M evicts B, B M evicts C.
      local c = cachemodel.new { size = 128, blksize = 64, assoc = 2, policy = "fifo" }
      assert.equal("MMHMMM", run(c, { A, B, A, C, A, B }))
      assert.equal(5, c.misses)
    end)

    it("rotates through the ways of each set independently", function()
      -- 2 sets x 2 ways (256 bytes). Set 0: blocks 0, 2, 4, 6 (addresses 0, 128, 256, 384);
      -- set 1: block 1 (address 64).
      local c = cachemodel.new { size = 256, blksize = 64, assoc = 2, policy = "fifo" }
      -- 0 M, 128 M (set 0 full), 64 M (set 1), 256 M evicts 0, 0 M evicts 128, 64 H,
      -- 384 M evicts 256, 0 H.
      assert.equal("MMMMMHMH", run(c, { 0, 128, 64, 256, 0, 64, 384, 0 }))
      assert.is_false(c:contains(128))
      assert.is_false(c:contains(256))
    end)

    it("differs from lru exactly where a hit would have saved a block", function()
      -- A B A C A: lru keeps A (hit at the end), fifo has evicted it.
      local lru = cachemodel.new { size = 128, blksize = 64, assoc = 2, policy = "lru" }
      local fifo = cachemodel.new { size = 128, blksize = 64, assoc = 2, policy = "fifo" }
      assert.equal("MMHMH", run(lru, { A, B, A, C, A }))
      assert.equal("MMHMM", run(fifo, { A, B, A, C, A }))
    end)
  end)

  describe("rand", function()
    local A, B, C = 0, 64, 128

    it("fills empty ways first without asking the generator", function()
      local c = scripted_rand(128, 64, 2, {})
      assert.equal("MMHH", run(c, { A, B, A, B }))
    end)

    it("evicts the way the generator names", function()
      -- One set of 2 ways: A in way 1, B in way 2.
      local c = scripted_rand(128, 64, 2, { 0, 1 })
      run(c, { A, B, C }) -- random -> 0: way 1 (A) goes
      assert.is_false(c:contains(A))
      assert.is_true(c:contains(B))
      run(c, { A }) -- random -> 1: way 2 (B) goes
      assert.is_true(c:contains(A))
      assert.is_false(c:contains(B))
      assert.is_true(c:contains(C))
    end)

    it("is reproducible with the default seeded generator", function()
      local addrs = {}
      for i = 1, 2000 do addrs[i] = ((i * 7919) % 97) * 64 end
      local one = cachemodel.new { size = 1024, blksize = 64, assoc = 4, policy = "rand", seed = 5 }
      local two = cachemodel.new { size = 1024, blksize = 64, assoc = 4, policy = "rand", seed = 5 }
      assert.equal(run(one, addrs), run(two, addrs))
      assert.is_true(one.misses > 0 and one.misses < 2000)
    end)
  end)

  describe("prng", function()
    it("is MINSTD: seed 1 starts at state 2, then multiplies by 48271 modulo 2^31-1", function()
      -- states 96542, 365211588, 435306125, 1681957627
      local r = cachemodel.prng(1)
      assert.equal(542, r(1000))
      assert.equal(588, r(1000))
      assert.equal(125, r(1000))
      assert.equal(627, r(1000))
    end)

    it("gives equal sequences for equal seeds and different ones otherwise", function()
      local a, b, c = cachemodel.prng(7), cachemodel.prng(7), cachemodel.prng(8)
      local same, differ = true, false
      for _ = 1, 100 do
        local x, y, z = a(1048576), b(1048576), c(1048576)
        if x ~= y then same = false end
        if x ~= z then differ = true end
      end
      assert.is_true(same)
      assert.is_true(differ)
    end)

    it("stays in [0, n) and reaches every value", function()
      local r, seen = cachemodel.prng(3), {}
      for _ = 1, 400 do
        local v = r(8)
        assert.is_true(v >= 0 and v < 8 and v == math.floor(v))
        seen[v] = true
      end
      for v = 0, 7 do assert.is_true(seen[v], "value " .. v) end
    end)

    it("gives integers under Lua 5.4 so that string.format('%d') takes them", function()
      local v = cachemodel.prng(9)(1000)
      assert.equal(string.format("%d", v), tostring(v))
    end)
  end)

  -- The model writes c:access for each geometry (the ways unrolled up to 16, a loop beyond):
  -- every form must behave as this plain one, which keeps each set as a list of tags.
  describe("generated access code", function()
    local function reference(size, blksize, assoc, policy, random)
      local floor = math.floor
      local nsets = floor(size / (blksize * assoc))
      local sets, clock, next_out = {}, 0, {}
      return function(addr)
        local block = floor(addr / blksize)
        local s, tag = block % nsets, floor(block / nsets)
        local set = sets[s] or {}
        sets[s] = set
        clock = clock + 1
        for w, e in ipairs(set) do
          if e.tag == tag then e.used = clock return true end
        end
        if #set < assoc then
          set[#set + 1] = { tag = tag, used = clock }
          return false
        end
        local way = 1
        if policy == "lru" then
          for w = 2, assoc do if set[w].used < set[way].used then way = w end end
        elseif policy == "fifo" then
          way = (next_out[s] or 0) + 1
          next_out[s] = way % assoc
        else
          way = random(assoc) + 1
        end
        set[way] = { tag = tag, used = clock }
        return false
      end
    end

    for _, assoc in ipairs({ 1, 2, 4, 8, 16, 32 }) do
      for _, policy in ipairs(cachemodel.POLICIES) do
        it(string.format("%d ways, %s: the same hits and misses as a plain model", assoc, policy),
          function()
            local blksize, nsets = 16, 8
            local size = blksize * nsets * assoc
            local c = cachemodel.new { size = size, blksize = blksize, assoc = assoc,
              policy = policy, random = cachemodel.prng(3) }
            local ref = reference(size, blksize, assoc, policy, cachemodel.prng(3))
            local pick, misses = cachemodel.prng(11), 0
            for i = 1, 4000 do
              -- mostly a working set a little larger than the cache, sometimes far away
              local addr = pick(size * 2)
              if i % 97 == 0 then addr = 0x7fff00000000 + pick(2 ^ 20) end
              local hit = c:access(addr)
              assert.are.equal(ref(addr), hit, "access " .. i .. " at " .. addr)
              assert.are.equal(true, c:contains(addr))
              if not hit then misses = misses + 1 end
            end
            assert.are.equal(4000, c.accesses)
            assert.are.equal(misses, c.misses)
            assert.is_true(misses > 100 and misses < 4000)
          end)
      end
    end
  end)
end)
