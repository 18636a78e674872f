-- qemu.report: formatting helpers shared by the report-printing scripts (hotblocks, hotpages,
-- howvec, ...). Pure Lua, no QEMU: ranking with a deterministic tie-break, sorted iteration, and
-- number formatting that gives the same text under LuaJIT (numbers are doubles) and Lua 5.4
-- (64-bit integers; guest addresses of 2^63 and above arrive as negative integers).

local M = {}

local u64 = require "qemu.u64"

--- Unsigned 64-bit "less than" for guest values (addresses, counts) held in Lua numbers
-- (qemu.u64's, under the name the report scripts use).
M.ult = u64.lt

--- Bytewise "less than" on strings (Lua 5.4's `<` follows the C locale's collation).
function M.bytes_lt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

--- Total order on sort keys: numbers as unsigned 64-bit values, strings bytewise, and a list
-- (table) of such keys lexicographically. Returns true when a sorts before b.
function M.key_lt(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end -- never mixed in practice; any fixed order will do
  if ta == "number" then return M.ult(a, b) end
  if ta == "table" then
    for i = 1, math.max(#a, #b) do
      local x, y = a[i], b[i]
      if x == nil then return true end
      if y == nil then return false end
      if M.key_lt(x, y) then return true end
      if M.key_lt(y, x) then return false end
    end
    return false
  end
  return M.bytes_lt(a, b)
end

local function getter(field)
  if type(field) == "function" then return field end
  return function(rec) return rec[field] end
end

-- fn(a, b) -> true when record a ranks before record b: the larger count first, then the smaller
-- key (M.key_lt). A total order, so no result depends on table iteration order.
local function ranks_before(count, key)
  local count_of, key_of = getter(count), getter(key)
  return function(a, b)
    local ca, cb = count_of(a), count_of(b)
    if ca ~= cb then return M.ult(cb, ca) end
    return M.key_lt(key_of(a), key_of(b))
  end
end

--- Sorts `records` (a list, sorted in place and returned) by `count` descending; records with
-- equal counts by `key` ascending (M.key_lt order). `count` and `key` are field names or
-- functions of a record.
function M.rank(records, count, key)
  table.sort(records, ranks_before(count, key))
  return records
end

--- The first `limit` records of M.rank(records, count, key), as a new list (all when limit is
-- nil or larger); `records` is left as it was. Only the `limit` best are sorted: the others are
-- passed over with one comparison each against the worst of those kept (a heap), so a report
-- of the top 20 of a million blocks costs a pass, not a sort of the million.
function M.top(records, limit, count, key)
  local n = #records
  if limit == nil or limit >= n then
    local all = {}
    for i = 1, n do all[i] = records[i] end
    return M.rank(all, count, key)
  end
  local before = ranks_before(count, key)
  -- heap[1] is the kept record that ranks last: every record kept ranks before it or is it
  local heap = {}
  local function sift_down(i)
    while true do
      local l, worst = i * 2, i
      if l <= limit and before(heap[worst], heap[l]) then worst = l end
      if l + 1 <= limit and before(heap[worst], heap[l + 1]) then worst = l + 1 end
      if worst == i then return end
      heap[i], heap[worst] = heap[worst], heap[i]
      i = worst
    end
  end
  if limit <= 0 then return heap end
  for i = 1, limit do heap[i] = records[i] end
  for i = math.floor(limit / 2), 1, -1 do sift_down(i) end
  -- Most records rank after the worst kept on their count alone: a plain comparison of two
  -- counts in [0, 2^63) passes them over without the full order (u64 and key compares).
  local count_of = getter(count)
  local worst = count_of(heap[1])
  for i = limit + 1, n do
    local r = records[i]
    local c = count_of(r)
    if not (c < worst and c >= 0) and before(r, heap[1]) then
      heap[1] = r
      sift_down(1)
      worst = count_of(heap[1])
    end
  end
  table.sort(heap, before)
  return heap
end

--- Sorts `records` in place by `key` (field name or function), ascending, or descending when
-- `descending` is true. Returns records.
function M.sort_by(records, key, descending)
  local key_of = getter(key)
  table.sort(records, function(a, b)
    if descending then return M.key_lt(key_of(b), key_of(a)) end
    return M.key_lt(key_of(a), key_of(b))
  end)
  return records
end

--- The values of table `t` as a list (in no particular order; rank or sort it next).
function M.values(t)
  local out = {}
  for _, v in pairs(t) do out[#out + 1] = v end
  return out
end

--- for k, v in report.sorted_pairs(t [, lt]) do ... end: pairs in key order (M.key_lt unless
-- `lt` is given), whatever order the table holds them in.
function M.sorted_pairs(t, lt)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, lt or M.key_lt)
  local i = 0
  return function()
    i = i + 1
    local k = keys[i]
    if k ~= nil then return k, t[k] end
  end
end

--- A guest value as hexadecimal digits, zero-padded to `width` (default none), without "0x", as
-- C's PRIx64 prints it; and a count as decimal digits, as PRIu64 does (qemu.u64's, here for the
-- report scripts; both refuse fractions).
M.hex = u64.hex
M.dec = u64.dec

--- string.format(fmt, ...) applied to each of `records` through `fields(rec)`, which returns the
-- format's arguments; the lines concatenated. `limit` caps the number of rows (nil: all).
function M.rows(fmt, records, fields, limit)
  local out = {}
  for i = 1, math.min(limit or #records, #records) do
    out[i] = string.format(fmt, fields(records[i]))
  end
  return table.concat(out)
end

--- A bitmask with bit `index` set in `mask` (both non-negative integers, index < 53): C's
-- `mask |= 1 << index` (qemu.u64's).
M.set_bit = u64.set_bit

-- The ranking runs once, at exit, over every record: LuaJIT compiling it costs more than it
-- saves (hotblocks' top 20 of 4,600 entries: 7 ms compiled, about 1 ms interpreted), so it is
-- left to the interpreter. Nested functions (the comparison, the heap's sift) go with it.
if jit then
  for _, fn in ipairs { ranks_before, M.rank, M.top, M.key_lt, M.bytes_lt } do jit.off(fn, true) end
end

return M
