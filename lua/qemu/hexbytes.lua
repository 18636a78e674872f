-- qemu.hexbytes: byte strings written as hex digits on the command line ("66b801005a5a", two
-- digits a byte), as patch.lua's target= and patch= take them; and back, for messages.
local M = {}

--- M.parse(text) -> the bytes as a Lua string, or nil and what was wrong: the text must be a
-- non-empty, even number of hex digits (0-9, a-f, A-F), nothing else (no 0x, no spaces).
function M.parse(text)
  if type(text) ~= "string" then
    return nil, "expected hex digits as a string, got " .. type(text)
  end
  if text == "" then return nil, "no bytes" end
  local bad = text:find("[^%x]")
  if bad then
    return nil, string.format("'%s' at position %d is not a hex digit (0-9, a-f, A-F)",
      text:sub(bad, bad), bad)
  end
  if #text % 2 ~= 0 then
    return nil, string.format("an odd number of hex digits (%d)", #text)
  end
  return (text:gsub("%x%x", function(pair) return string.char(tonumber(pair, 16)) end))
end

--- M.format(bytes) -> the bytes as lowercase hex digits, two a byte ("" for "")
function M.format(bytes)
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

return M
