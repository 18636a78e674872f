-- qemu.u64: unsigned 64-bit guest values (addresses, counts) held in plain Lua numbers, with the
-- same results under both Luas qlua embeds. Pure Lua, no QEMU (see spec/u64_spec.lua).
--
-- What a "u64" is here:
--   * Lua 5.4: an integer, read as its 64-bit two's complement pattern, so values of 2^63 and
--     more (kernel addresses, wrapped counters) are negative integers; or a float with a whole
--     value, as arithmetic such as 2^32 produces.
--   * LuaJIT 2.1: a double with a whole value (qlua hands addresses over as doubles); exact below
--     2^53, already rounded above.
--   * In both, a negative float stands for 2^64 + v, as the difference of two addresses does in
--     C; the range taken is therefore -2^63 .. 2^64 - 1 for floats.
-- Every function below gives the same answer for the same value in either Lua.

local M = {}

local floor, format, rep = math.floor, string.format, string.rep
local math_type = math.type -- nil in LuaJIT
local math_ult = math.ult   -- nil in LuaJIT

local TWO32 = 4294967296         -- an integer literal in Lua 5.4, an exact double in LuaJIT
local TWO32F = 2 ^ 32            -- the same as a float in both Luas
local TWO53 = 9007199254740992
local TWO63 = 2 ^ 63             -- floats in both Luas (2^63 is no Lua 5.4 integer)
local TWO64 = 2 ^ 64
local MILLION = 1000000

-- Lua 5.4's integer subtype; LuaJIT has none (math.type is missing).
local function is_integer(v) return math_type ~= nil and math_type(v) == "integer" end

-- The two 32-bit halves of a Lua 5.4 integer: only its bit operators see all 64 bits, and they do
-- not parse in LuaJIT, hence load().
local int_halves = math_type and load("return function(v) return v >> 32, v & 0xffffffff end")()

-- The 32-bit halves (hi, lo), each 0 .. 2^32-1, of any u64; exact for floats too, since the
-- remainder and the division by a power of two lose nothing.
local function halves(v)
  if is_integer(v) then return int_halves(v) end
  local lo = v % TWO32F
  local hi = (v - lo) / TWO32F -- float arithmetic throughout: Lua 5.4 integers would wrap
  if hi < 0 then hi = hi + TWO32F end -- a negative float is 2^64 + v
  return hi, lo
end

-- True when v is no u64: not a number, a fraction, or a float outside -2^63 .. 2^64-1.
local function not_whole(v)
  if type(v) ~= "number" then return true end
  if is_integer(v) then return false end
  return v ~= floor(v) or v < -TWO63 or v >= TWO64
end

local function refuse(who, v, level)
  error(format("%s: not a whole number from -2^63 to 2^64-1: %s", who, tostring(v)), level + 1)
end

--- u64.whole(v): v itself when it is a u64, else an error: the check the formatters make before
-- printing, so that a fraction or a rounded-away float never prints as a plausible number.
function M.whole(v)
  if not_whole(v) then refuse("u64.whole", v, 2) end
  return v
end

--- u64.lt(a, b): a < b as unsigned 64-bit values: math.ult for two Lua 5.4 integers (negative
-- ones are 2^63 and more), and for floats the same order with a negative one read as 2^64 + v.
function M.lt(a, b)
  if is_integer(a) and is_integer(b) then return math_ult(a, b) end
  local a_neg, b_neg = a < 0, b < 0
  if a_neg == b_neg then return a < b end
  -- one side stands for 2^64 + v (2^63 or more); b - 2^64 and a - 2^64 are exact past 2^63
  if a_neg then return b >= TWO63 and a < b - TWO64 end
  return a < TWO63 or a - TWO64 < b
end

--- u64.le(a, b): a <= b as unsigned 64-bit values (the other half of an address range test).
function M.le(a, b) return not M.lt(b, a) end

--- u64.hex(v [, width]): lowercase hex digits of v, zero-padded to `width`, no "0x": what C's
-- PRIx64 prints. string.format("%x") alone is exact only for integers and doubles 0 .. 2^53-1
-- (LuaJIT converts other doubles as the platform's C cast does; Lua 5.4 refuses floats >= 2^63).
function M.hex(v, width)
  if not_whole(v) then refuse("u64.hex", v, 2) end
  local s
  if is_integer(v) or (v >= 0 and v < TWO53) then
    s = format("%x", v)
  else
    local hi, lo = halves(v)
    s = hi == 0 and format("%x", lo) or format("%x%08x", hi, lo)
  end
  if width and #s < width then s = rep("0", width - #s) .. s end
  return s
end

--- u64.dec(v): decimal digits of v as C's PRIu64 prints them. string.format("%d") prints Lua
-- 5.4's negative integers (2^63 and more) with a minus sign and LuaJIT's doubles as int64, so
-- values past 2^53 are divided by 10^6 in 32-bit halves, each step exact in a double.
function M.dec(v)
  if not_whole(v) then refuse("u64.dec", v, 2) end
  if (is_integer(v) and v >= 0) or (v >= 0 and v < TWO53) then return format("%d", v) end
  local hi, lo = halves(v)
  local q_hi = floor(hi / MILLION)
  local t = (hi - q_hi * MILLION) * TWO32 + lo -- below 10^6 * 2^32 < 2^53
  local q_lo = floor(t / MILLION) -- t / 10^6 is short of a whole by 10^-6 or more: no rounding up
  local r = t - q_lo * MILLION
  return format("%d%06d", q_hi * TWO32 + q_lo, r)
end

--- u64.set_bit(mask, index): mask with bit `index` set (mask a non-negative whole number, index
-- 0 .. 52): C's `mask |= 1 << index` without bit operators, which the two Luas spell differently.
function M.set_bit(mask, index)
  local bit = 2 ^ index
  if is_integer(mask) then bit = floor(bit) end
  if floor(mask / bit) % 2 == 0 then return mask + bit end
  return mask
end

--- u64.band32(a, b): bitwise and of the low 32 bits of a and b, as a number 0 .. 2^32-1 (an
-- instruction word against a mask): LuaJIT's bit.band returns a signed 32-bit result and Lua 5.4
-- has only the & operator, which does not parse in LuaJIT.
if math_type then
  M.band32 = load("return function(a, b) return a & b & 0xffffffff end")()
else
  local bit = require "bit"
  function M.band32(a, b) return bit.band(a, b) % TWO32 end
end

return M
