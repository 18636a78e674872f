-- qemu.json: a small JSON writer for the reports scripts print with format=json. Pure Lua, no
-- QEMU, no dependency (see spec/json_spec.lua). Writing only: qlua never reads JSON.
--
-- A Lua table cannot say whether it is an array or an object (an empty one is both), nor keep the
-- order of its keys, so values are marked explicitly:
--   json.array(list [, n])   a JSON array of list[1] .. list[n] (n defaults to #list)
--   json.object(kv)          a JSON object from a flat list { key1, value1, key2, value2, ... },
--                            written in that order (so the output is deterministic)
--   json.null                JSON's null (a Lua nil cannot sit in a list)
-- A plain table handed to json.encode is an error, never a guess.
--
-- Strings: bytes are copied through where they form valid UTF-8; '"', '\' and control bytes are
-- escaped (\n, \t, ... or \u00XX), and every byte that is not part of a valid UTF-8 sequence is
-- written as \u00XX of the raw byte (so a reader sees the byte's Latin-1 code point: readable, and
-- the output is always valid UTF-8, though such a string cannot be told from one that held that
-- code point).
--
-- Numbers: Lua 5.4 integers are written exactly (%d); floats with a whole value below 2^53 in
-- magnitude as integers (LuaJIT's numbers are doubles, and counts must read as integers in both
-- Luas); other floats with the fewest of 15, 16 or 17 significant digits that read back as the
-- same double. NaN and
-- infinities have no JSON spelling: they are an error naming where they were found.
--
-- Guest values (addresses, masks, counts) are unsigned 64-bit, held as qemu.u64 numbers:
--   json.u64(v)  a number when v is below 2^53 (exact in every JSON reader, JavaScript's and
--                jq's doubles included), otherwise the string "0x..." of its hex digits: a
--                number past 2^53 would be silently rounded by such readers.
--   json.hex(v [, width])  always the string "0x..." (zero-padded to width hex digits), as the
--                text reports print addresses; the report scripts use it for addresses, so a field
--                has one JSON type whatever the value.

local u64 = require "qemu.u64"

local M = {}

local format, byte, concat = string.format, string.byte, table.concat
local floor, huge = math.floor, math.huge
local math_type = math.type -- nil in LuaJIT

local TWO53 = 9007199254740992

local ARRAY, OBJECT = {}, {} -- metatables marking the two kinds of container

M.null = setmetatable({}, { __tostring = function() return "json.null" end })

--- json.array(list [, n]): a JSON array of list[1] .. list[n]; n (default #list) lets a list
-- end in json.null or be empty.
function M.array(list, n)
  list = list or {}
  return setmetatable({ items = list, n = n or #list }, ARRAY)
end

--- json.object(kv): a JSON object of the pairs of the flat list kv = { k1, v1, k2, v2, ... }, in
-- that order. Keys must be strings; a key given twice is an error (JSON readers keep one silently).
function M.object(kv)
  kv = kv or {}
  if #kv % 2 ~= 0 then
    error("json.object: expected { key, value, ... } pairs; got an odd number of items " ..
      "(a nil value? use json.null)", 2)
  end
  local seen = {}
  for i = 1, #kv, 2 do
    local k = kv[i]
    if type(k) ~= "string" then
      error(format("json.object: key %d is a %s, not a string", (i + 1) / 2, type(k)), 2)
    end
    if seen[k] then error(format("json.object: key '%s' is given twice", k), 2) end
    seen[k] = true
  end
  return setmetatable({ kv = kv }, OBJECT)
end

--- json.is_array(v), json.is_object(v): whether v was made by json.array / json.object.
function M.is_array(v) return getmetatable(v) == ARRAY end
function M.is_object(v) return getmetatable(v) == OBJECT end

--- json.u64(v): an unsigned 64-bit guest value as a JSON number when exact everywhere (below
-- 2^53), otherwise as a "0x..." string (see the header).
function M.u64(v)
  u64.whole(v)
  if v >= 0 and v < TWO53 and (math_type == nil or math_type(v) == "integer" or v == floor(v)) then
    return v
  end
  return "0x" .. u64.hex(v)
end

--- json.hex(v [, width]): "0x" and the hex digits of the u64 v, zero-padded to width.
function M.hex(v, width)
  return "0x" .. u64.hex(v, width)
end

-- ---- strings ----

local SHORT = { [8] = "\\b", [9] = "\\t", [10] = "\\n", [12] = "\\f", [13] = "\\r",
  [34] = '\\"', [92] = "\\\\" }

local function is_cont(b) return b ~= nil and b >= 0x80 and b <= 0xbf end

-- The length of the valid UTF-8 sequence starting at s[i] (lead byte b >= 0x80), or nil.
-- Overlong forms, surrogates (U+D800..DFFF) and values past U+10FFFF are not valid.
local function utf8_len(s, i, b)
  local b2, b3, b4 = byte(s, i + 1, i + 3)
  if b >= 0xc2 and b <= 0xdf then
    if is_cont(b2) then return 2 end
  elseif b >= 0xe0 and b <= 0xef then
    local lo, hi = 0x80, 0xbf
    if b == 0xe0 then lo = 0xa0 elseif b == 0xed then hi = 0x9f end
    if b2 and b2 >= lo and b2 <= hi and is_cont(b3) then return 3 end
  elseif b >= 0xf0 and b <= 0xf4 then
    local lo, hi = 0x80, 0xbf
    if b == 0xf0 then lo = 0x90 elseif b == 0xf4 then hi = 0x8f end
    if b2 and b2 >= lo and b2 <= hi and is_cont(b3) and is_cont(b4) then return 4 end
  end
  return nil
end

local function string_text(s)
  -- the common case, plain printable ASCII without quotes or backslashes, is copied whole
  if not s:find('[%z\1-\31"\\\127-\255]') then return '"' .. s .. '"' end
  local out, i, n = { '"' }, 1, #s
  while i <= n do
    local b = byte(s, i)
    if b < 0x20 or b == 34 or b == 92 or b == 127 then
      out[#out + 1] = SHORT[b] or format("\\u%04x", b)
      i = i + 1
    elseif b < 0x80 then
      -- a run of plain ASCII
      local j = s:find('[%z\1-\31"\\\127-\255]', i) or n + 1
      out[#out + 1] = s:sub(i, j - 1)
      i = j
    else
      local len = utf8_len(s, i, b)
      if len then
        out[#out + 1] = s:sub(i, i + len - 1)
        i = i + len
      else
        out[#out + 1] = format("\\u%04x", b)
        i = i + 1
      end
    end
  end
  out[#out + 1] = '"'
  return concat(out)
end

M.quote = string_text

-- ---- numbers ----

local function number_text(v, path)
  if v ~= v then error(format("json.encode: NaN at %s has no JSON representation", path), 0) end
  if v == huge or v == -huge then
    error(format("json.encode: %s at %s has no JSON representation", v > 0 and "inf" or "-inf",
      path), 0)
  end
  if math_type and math_type(v) == "integer" then return format("%d", v) end
  if v == floor(v) and v > -TWO53 and v < TWO53 then return format("%d", v) end
  -- the shortest of 15, 16 or 17 significant digits that reads back as the same double
  for digits = 15, 16 do
    local text = format("%." .. digits .. "g", v)
    if tonumber(text) == v then return text end
  end
  return format("%.17g", v)
end

-- ---- encoding ----

local encode_value

local function encode_into(out, v, path)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = string_text(v)
  elseif t == "number" then
    out[#out + 1] = number_text(v, path)
  elseif t == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif v == M.null then
    out[#out + 1] = "null"
  elseif t == "table" and getmetatable(v) == ARRAY then
    out[#out + 1] = "["
    for i = 1, v.n do
      if i > 1 then out[#out + 1] = "," end
      local item = v.items[i]
      if item == nil then
        error(format("json.encode: %s[%d] is nil (use json.null)", path, i - 1), 0)
      end
      encode_into(out, item, format("%s[%d]", path, i - 1))
    end
    out[#out + 1] = "]"
  elseif t == "table" and getmetatable(v) == OBJECT then
    out[#out + 1] = "{"
    local kv = v.kv
    for i = 1, #kv, 2 do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = string_text(kv[i])
      out[#out + 1] = ":"
      encode_into(out, kv[i + 1], path .. "." .. kv[i])
    end
    out[#out + 1] = "}"
  elseif t == "table" then
    error(format("json.encode: the table at %s is neither json.array nor json.object "
      .. "(say which it is)", path), 0)
  else
    error(format("json.encode: a %s at %s has no JSON representation", t, path), 0)
  end
end

encode_value = function(v)
  local out = {}
  encode_into(out, v, "$")
  return concat(out)
end

--- json.encode(v): the JSON text of v (a string, number, boolean, json.null, json.array or
-- json.object, nested), on one line with no spaces. Errors name the path of the bad value
-- ("$.rows[3].count").
M.encode = encode_value

return M
