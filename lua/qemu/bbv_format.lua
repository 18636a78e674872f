-- qemu.bbv_format: the pure-Lua parts of scripts/bbv.lua (see spec/bbv_format_spec.lua): the
-- SimPoint basic-block-vector line, and subtraction on native counters, which only add.

local M = {}

--- One interval line of a SimPoint .bb file: "T" then ":ID:COUNT " for each (id, count) pair of
-- `entries` (a list of { id, count }, written in the order given), then a newline.
function M.line(entries)
  local out = { "T" }
  for i, e in ipairs(entries) do
    out[i + 1] = string.format(":%d:%d ", e[1], e[2])
  end
  out[#out + 1] = "\n"
  return table.concat(out)
end

-- 2^64 - 2^53: a multiple of 2^53 below 2^64, so it is exact as a double and as a Lua 5.4 float.
local WRAP_HIGH = 2 ^ 64 - 2 ^ 53
local TWO53 = 2 ^ 53

--- Subtracts `d` (0 <= d <= 2^53) from the `vcpu` slot of native counter `c`, modulo 2^64, with
-- adds only: c:add takes non-negative whole numbers, and a 64-bit counter wraps around, so adding
-- (2^64 - 2^53) and then (2^53 - d) subtracts d. Both parts are exact in LuaJIT's doubles.
-- The slot passes through a large value in between: only call this on a slot that no other
-- thread updates meanwhile (the vCPU's own slot, from its own callback).
function M.subtract(c, d, vcpu)
  if d == 0 then return end
  assert(d > 0 and d <= TWO53, "subtract: amount out of range")
  c:add(WRAP_HIGH, vcpu)
  c:add(TWO53 - d, vcpu)
end

return M
