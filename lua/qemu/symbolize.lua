-- qemu.symbolize (the module): the pure-Lua side of qemu.symbolize, whose lookups shim/symbols.c
-- makes. No QEMU here (see spec/symbolize_spec.lua): what an address argument may be, how a
-- result prints ("libc.so.6!__libc_start_main+0x8a", "libc.so.6+0x27d0a"), the symbols= and
-- symfile= arguments the shipped scripts share, and renaming the frames of folded stacks.
local M = {}

local u64 = require "qemu.u64"
local bytes_lt = require("qemu.report").bytes_lt

local math_type = math.type -- nil in LuaJIT
local TWO64 = 2 ^ 64

--- Is v an address qemu.symbolize takes? A whole number from 0 to 2^64-1: under Lua 5.4 any
-- integer (from 2^63 up, addresses are negative integers: qemu.u64's convention), or a float with
-- a whole value in range; under LuaJIT a double with a whole value in range. NaN, infinities,
-- fractions, negative floats and non-numbers are not.
function M.is_address(v)
  if type(v) ~= "number" then return false end
  if math_type and math_type(v) == "integer" then return true end
  return v >= 0 and v < TWO64 and v % 1 == 0
end

--- The last part of a path ("/usr/lib/x86_64-linux-gnu/libc.so.6" -> "libc.so.6").
function M.basename(path)
  local base = path:match("([^/]+)/*$")
  return base or path
end

--- What qemu.symbolize returned, as text: "MODULE!SYMBOL+0xOFFSET", or "MODULE+0xOFFSET" without
-- a symbol (MODULE: the basename of the module's path); nil when module is nil (nothing known
-- there), so format(qemu.symbolize(addr)) is nil or a name.
function M.format(module, symbol, offset)
  if module == nil then return nil end
  local base = M.basename(module)
  local off = "+0x" .. u64.hex(offset or 0)
  if symbol then return base .. "!" .. symbol .. off end
  return base .. off
end

--- A function's name without the offset, "MODULE!SYMBOL" (call-graph frames); nil without one.
function M.frame(module, symbol)
  if module == nil or symbol == nil then return nil end
  return M.basename(module) .. "!" .. symbol
end

--- The arguments each shipped script declares in its qemu.script{} list, given its default.
function M.script_args(default_on)
  return {
    { name = "symbols", type = "bool",
      help = "name addresses as module!symbol+0xOFF (qemu.symbolize; default "
        .. (default_on and "on" or "off, the original's raw addresses") .. ")" },
    { name = "symfile", type = "string", multiple = true,
      help = "load a System.map or an ELF file with absolute addresses (vmlinux) for names; "
        .. "repeatable; implies symbols=on" },
  }
end

--- Applies those arguments: loads each symfile= through `load` (qemu.symbolize_load), and
-- returns whether names are wanted: symbols= when given, else on with a symfile=, else the
-- script's default.
function M.setup(args, default_on, load)
  local files = args.symfile or {}
  for _, path in ipairs(files) do load(path) end
  if args.symbols ~= nil then return args.symbols end
  if #files > 0 then return true end
  return default_on
end

local function split(path)
  local frames = {}
  for frame in path:gmatch("[^;]+") do frames[#frames + 1] = frame end
  return frames
end

-- Frame-by-frame bytewise order, a stack before the deeper stacks that extend it: the order of a
-- depth-first walk with sorted siblings.
local function frames_lt(a, b)
  for i = 1, math.min(#a, #b) do
    if a[i] ~= b[i] then return bytes_lt(a[i], b[i]) end
  end
  return #a < #b
end

--- Folded stacks (a list of { "a;b;c", weight }) with each frame renamed by rename(frame) (nil:
-- unchanged). Stacks that become equal are merged (weights added); the result is in depth-first
-- order, siblings sorted bytewise, as qemu.callgraph_stacks prints them.
function M.rename_folded(lines, rename)
  local by_path, out = {}, {}
  local cache = {}
  for _, rec in ipairs(lines) do
    local frames = split(rec[1])
    for i, frame in ipairs(frames) do
      local new = cache[frame]
      if new == nil then
        new = rename(frame) or frame
        cache[frame] = new
      end
      frames[i] = new
    end
    local path = table.concat(frames, ";")
    local entry = by_path[path]
    if entry then
      entry[2] = entry[2] + rec[2]
    else
      entry = { path, rec[2], frames = frames }
      by_path[path] = entry
      out[#out + 1] = entry
    end
  end
  table.sort(out, function(a, b) return frames_lt(a.frames, b.frames) end)
  for _, entry in ipairs(out) do entry.frames = nil end
  return out
end

return M
