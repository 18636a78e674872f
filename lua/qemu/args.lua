-- qemu.args: parsing of a script's declared arguments.
-- Pure logic (no QEMU): a declaration and the given key=value pairs in, typed values or one clear
-- error message out. Boolean words follow QEMU's qemu_plugin_bool_parse (case-sensitive).

local M = {}

local TRUE_WORDS = { on = true, yes = true, ["true"] = true, y = true }
local FALSE_WORDS = { off = false, no = false, ["false"] = false, n = false }
M.BOOL_WORDS = "on, off, yes, no, true, false, y, n"

--- Parses a QEMU boolean word; returns true/false, or nil for anything else.
function M.parse_bool(text)
  if TRUE_WORDS[text] then return true end
  if FALSE_WORDS[text] ~= nil then return false end
  return nil
end

-- Integers must be exact in every Lua qlua embeds: LuaJIT's numbers are doubles.
M.INT_LIMIT = 2 ^ 53

--- Parses a decimal, 0x-hex or 0b-binary integer, with an optional k/m/g (x1024) suffix.
-- Returns nil for anything else, and for magnitudes of 2^53 and beyond (not exact in LuaJIT).
function M.parse_int(text)
  local sign, body = text:match("^([+-]?)(.+)$")
  if not body then return nil end
  local scale = 1
  local suffix = body:match("[kKmMgG]$")
  if suffix then
    scale = ({ k = 1024, m = 1024 ^ 2, g = 1024 ^ 3 })[suffix:lower()]
    body = body:sub(1, -2)
  end
  local value
  -- digit by digit in floating point, so that no Lua wraps a long literal around 2^64
  local digits, base = body, 10
  if body:match("^0[xX]%x+$") then
    digits, base = body:sub(3), 16
  elseif body:match("^0[bB][01]+$") then
    digits, base = body:sub(3), 2
  elseif not body:match("^%d+$") then
    return nil
  end
  value = 0.0
  for i = 1, #digits do
    value = value * base + tonumber(digits:sub(i, i), 16)
    if value >= M.INT_LIMIT then return nil end
  end
  value = value * scale
  if value >= M.INT_LIMIT then return nil end
  if math.tointeger then value = math.tointeger(value) end
  return sign == "-" and -value or value
end

local TYPES = {}

TYPES.bool = function(spec, text)
  local v = M.parse_bool(text)
  if v == nil then return nil, "expected a boolean (" .. M.BOOL_WORDS .. ")" end
  return v
end

TYPES.int = function(spec, text)
  local v = M.parse_int(text)
  if v == nil then
    return nil, "expected an integer below 2^53 (decimal, 0x hex, 0b binary; k/m/g suffix)"
  end
  if spec.min and v < spec.min then return nil, "expected an integer >= " .. spec.min end
  if spec.max and v > spec.max then return nil, "expected an integer <= " .. spec.max end
  return v
end

TYPES.number = function(spec, text)
  local v = tonumber(text)
  if v == nil then return nil, "expected a number" end
  return v
end

TYPES.string = function(spec, text)
  return text
end

TYPES.enum = function(spec, text)
  for _, allowed in ipairs(spec.values) do
    if allowed == text then return text end
  end
  return nil, "expected one of " .. table.concat(spec.values, ", ")
end

local function names_of(decl)
  local names = {}
  for _, spec in ipairs(decl) do names[#names + 1] = spec.name end
  return names
end

--- Checks a declaration itself (a list of { name=, type=, default=, help=, values= }).
function M.check_declaration(decl, owner)
  if type(decl) ~= "table" then
    error(owner .. ": args must be a list of { name = ..., type = ... } tables", 0)
  end
  local seen = {}
  for i, spec in ipairs(decl) do
    if type(spec) ~= "table" or type(spec.name) ~= "string" then
      error(string.format("%s: args[%d] needs a string name", owner, i), 0)
    end
    if seen[spec.name] then
      error(string.format("%s: argument '%s' is declared twice", owner, spec.name), 0)
    end
    seen[spec.name] = true
    spec.type = spec.type or "string"
    if not TYPES[spec.type] then
      error(string.format("%s: argument '%s' has unknown type '%s' (types: bool, int, number, string, enum)",
        owner, spec.name, tostring(spec.type)), 0)
    end
    if spec.type == "enum" and (type(spec.values) ~= "table" or #spec.values == 0) then
      error(string.format("%s: enum argument '%s' needs values = { ... }", owner, spec.name), 0)
    end
  end
end

--- Parses `given` (a map key -> string, and `order`, the keys in the order given) against `decl`.
-- Returns the values table (defaults filled in) or nil and an error message naming `owner`.
-- `texts`, when given, holds each argument's text in the order of `order` (so a key given twice
-- has both); otherwise given[key] is used. An argument declared `multiple = true` may be given any
-- number of times and its value is the list of parsed values, in order ({} when absent); any
-- other argument given twice is an error, never a silent choice.
function M.parse(decl, given, order, owner, texts)
  M.check_declaration(decl, owner)
  local by_name = {}
  for _, spec in ipairs(decl) do by_name[spec.name] = spec end
  local values = {}
  for i, key in ipairs(order or {}) do
    local spec = by_name[key]
    if not spec then
      local names = names_of(decl)
      local accepted = #names > 0 and table.concat(names, ", ") or "none"
      return nil, string.format("%s: unknown argument '%s'; accepted: %s", owner, key, accepted)
    end
    local text = texts and texts[i] or given[key]
    local v, why = TYPES[spec.type](spec, text)
    if v == nil then
      return nil, string.format("%s: %s=%s: %s", owner, key, text, why)
    end
    if spec.multiple then
      values[key] = values[key] or {}
      table.insert(values[key], v)
    elseif values[key] ~= nil then
      return nil, string.format("%s: argument '%s' is given twice; it takes one value", owner, key)
    else
      values[key] = v
    end
  end
  for _, spec in ipairs(decl) do
    if values[spec.name] == nil then
      if spec.required then
        return nil, string.format("%s: argument '%s' is required", owner, spec.name)
      end
      if spec.multiple then
        values[spec.name] = spec.default or {}
      else
        values[spec.name] = spec.default
      end
    end
  end
  return values
end

--- A usage text for a declaration, one argument a line.
function M.usage(decl, name, description)
  M.check_declaration(decl, name)
  local lines = { name .. (description and (": " .. description) or "") }
  if #decl == 0 then
    lines[#lines + 1] = "  (no arguments)"
  end
  for _, spec in ipairs(decl) do
    local kind = spec.type == "enum" and table.concat(spec.values, "|") or spec.type
    local default = spec.default ~= nil and (" (default " .. tostring(spec.default) .. ")") or ""
    local times = spec.multiple and " (repeatable)" or ""
    lines[#lines + 1] = string.format("  %s=%s%s%s  %s", spec.name, kind, default, times,
      spec.help or "")
  end
  return table.concat(lines, "\n")
end

return M
