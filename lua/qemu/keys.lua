-- qemu.keys: numbers for tuples of keys (a block's address and size, say), 1, 2, 3 ... in the
-- order each tuple is first seen, with each part of the tuples kept in a column (a Lua array
-- indexed by number). Pure Lua, no QEMU.
--
--   local keys = require "qemu.keys"
--   local blocks = keys.new(2)            -- tuples of two parts
--   local id, new = blocks:id(pc, size)   -- the tuple's number; new is true the first time
--   blocks[1][id], blocks[2][id]           -- its parts; blocks.n: how many tuples so far
--
-- Why not a table per tuple (t[pc][size] = { ... }): a translation-heavy guest has tens of
-- thousands of blocks, and a small Lua table with a few named fields takes 200-500 bytes, so the
-- tables alone touch megabytes of fresh memory, and on a virtual machine each fresh page costs a
-- page fault of several microseconds: measured here, hotblocks.lua's tables per block cost 3.9 us
-- per translation (python3 -S -c pass, 33,000 blocks) against 0.6 us for everything else. A
-- tuple here costs one slot in a table keyed by its first part, one array slot per part and one
-- for the chain of tuples sharing a first part: about a quarter of the memory.
--
-- Parts are compared with ==: numbers, strings, booleans, or tables by identity. The first part
-- must not be nil or NaN (it is a table key).

local M = {}

--- Makes an empty set of tuples of `width` parts (1 to 4).
function M.new(width)
  if type(width) ~= "number" or width < 1 or width > 4 or width % 1 ~= 0 then
    error("qemu.keys.new: width must be a whole number from 1 to 4, got " .. tostring(width), 2)
  end
  local c1, c2, c3, c4 = {}, {}, {}, {}
  local head, chain = {}, {} -- head[first part] = newest tuple with it; chain[id] = the one before
  local set = { n = 0, c1, width >= 2 and c2 or nil, width >= 3 and c3 or nil,
    width >= 4 and c4 or nil }

  local function add(a, b, c, d)
    local n = set.n + 1
    set.n = n
    c1[n] = a
    if width >= 2 then c2[n] = b end
    if width >= 3 then c3[n] = c end
    if width >= 4 then c4[n] = d end
    chain[n] = head[a] or false
    head[a] = n
    return n, true
  end

  -- one look-up function per width, so the loop compares only the parts there are
  local find
  if width == 1 then
    find = function(a) return head[a] end
  elseif width == 2 then
    find = function(a, b)
      local id = head[a]
      while id do
        if c2[id] == b then return id end
        id = chain[id]
      end
    end
  elseif width == 3 then
    find = function(a, b, c)
      local id = head[a]
      while id do
        if c2[id] == b and c3[id] == c then return id end
        id = chain[id]
      end
    end
  else
    find = function(a, b, c, d)
      local id = head[a]
      while id do
        if c2[id] == b and c3[id] == c and c4[id] == d then return id end
        id = chain[id]
      end
    end
  end

  --- set:id(a [, b, c, d]) -> the tuple's number, and true when it was not there before.
  function set.id(_, a, b, c, d)
    if a == nil or a ~= a then
      error("qemu.keys: the first part of a tuple must not be nil or NaN", 2)
    end
    local id = find(a, b, c, d)
    if id then return id, false end
    return add(a, b, c, d)
  end

  --- set:find(a [, b, c, d]) -> the tuple's number, or nil when it was never added.
  function set.find(_, a, b, c, d)
    if a == nil or a ~= a then return nil end
    return find(a, b, c, d)
  end

  return set
end

return M
