-- qemu.stoptrigger_args: parsing of scripts/stoptrigger.lua's arguments (pure Lua, see
-- spec/stoptrigger_args_spec.lua). QEMU's stoptrigger.c reads numbers with
-- g_ascii_strtoull(s, NULL, 0): decimal, 0x/0X hexadecimal, or octal after a leading 0; the same
-- bases are accepted here, but the whole text must be a number (QEMU stops silently at the first
-- bad character and takes what it read, so "addr=main" would be address 0).

local M = {}

--- A non-negative integer written as C's strtoull reads it with base 0 (decimal, 0x hex, 0 octal),
-- below 2^53; nil when `text` is not exactly such a number.
function M.number(text)
  if type(text) ~= "string" then return nil end
  local digits, base
  if text:match("^0[xX]%x+$") then
    digits, base = text:sub(3), 16
  elseif text:match("^0[0-7]*$") then
    digits, base = text, 8
  elseif text:match("^[1-9]%d*$") then
    digits, base = text, 10
  else
    return nil
  end
  local v = 0
  for i = 1, #digits do
    v = v * base + tonumber(digits:sub(i, i), 16)
    if v >= 2 ^ 53 then return nil end
  end
  return v
end

--- "VALUE[:RC]" -> value, rc (rc defaults to 0), or nil and why. `what` names the argument.
function M.value_rc(text, what)
  local value_text, rc_text = text:match("^([^:]*):(.*)$")
  if not value_text then value_text = text end
  local value = M.number(value_text)
  if value == nil then
    return nil, string.format("%s: '%s' is not a number (decimal, 0x hex or 0 octal)", what,
      value_text)
  end
  local rc = 0
  if rc_text then
    rc = M.number(rc_text)
    if rc == nil or rc > 255 then
      return nil, string.format("%s: exit code '%s' must be a number from 0 to 255", what, rc_text)
    end
  end
  return value, rc
end

--- icount=N[:RC]: N >= 1 instructions, then exit with RC. Returns n, rc or nil, why.
function M.icount(text)
  local n, rc = M.value_rc(text, "icount")
  if n == nil then return nil, rc end
  if n < 1 then return nil, "icount: '" .. text .. "' must be a positive integer" end
  return n, rc
end

--- addr=A[:RC][+B[:RC]...]: addresses at which to stop, each with its exit code. Returns a list
-- of { addr, rc } (a later entry for the same address wins, as in QEMU's hash table), or nil, why.
function M.addrs(text)
  local list, index = {}, {}
  for item in (text .. "+"):gmatch("([^+]*)%+") do
    local addr, rc = M.value_rc(item, "addr")
    if addr == nil then return nil, rc end
    if index[addr] then
      list[index[addr]].rc = rc
    else
      list[#list + 1] = { addr = addr, rc = rc }
      index[addr] = #list
    end
  end
  return list
end

return M
