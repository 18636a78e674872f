-- qemu.drcov_format: the pure-Lua parts of scripts/drcov.lua (no QEMU needed, see
-- spec/drcov_format_spec.lua): reading /proc/self/maps text, finding the loaded image (module)
-- that holds an address, a registry of modules, the ELF entry point, and the DRCOV v2 file
-- layout (text header and module table, then 8-byte little-endian block records).
--
-- Numbers: addresses are Lua numbers. Under Lua 5.4 they are integers (values of 2^63 and more,
-- such as the host's [vsyscall] line, are negative and compared unsigned); under LuaJIT they are
-- doubles, exact below 2^53 (every user-mode guest address).

local M = {}

local floor = math.floor
local u64 = require "qemu.u64"

--- Unsigned "a < b" for addresses held in Lua numbers (qemu.u64's; scripts/drcov.lua uses it
-- as fmt.ult).
local ult, ule = u64.lt, u64.le
M.ult = ult

--- Parses the text of /proc/PID/maps into a list of { start, stop, offset, perms, path } in the
-- file's order (ascending addresses). `path` is "" for anonymous mappings, "[heap]" and the like
-- for the kernel's named ones; " (deleted)" is kept as the kernel writes it.
function M.parse_maps(text)
  local lines = {}
  for line in text:gmatch("[^\n]+") do
    local lo, hi, perms, off, rest =
      line:match("^(%x+)%-(%x+)%s+(%S+)%s+(%x+)%s+%S+%s+%S+%s*(.*)$")
    if lo then
      lines[#lines + 1] = { start = tonumber(lo, 16), stop = tonumber(hi, 16),
                            offset = tonumber(off, 16), perms = perms, path = rest }
    end
  end
  return lines
end

local function is_file(path) return path ~= "" and path:sub(1, 1) ~= "[" end
M.is_file = is_file

--- The loaded image that holds host address `addr`, from parsed maps `lines`:
-- { path, base, stop, file } or nil when no line holds it.
-- A load of a file is the run of its mappings, with anonymous gaps allowed between them, up to a
-- mapping of another file or another offset-0 mapping of the same one. Its image starts at the
-- load's mapping of file offset 0 (the ELF header: the base drcov offsets are relative to) and
-- ends where the load's last mapping ends; a load with no offset-0 mapping is based at
-- line.start - line.offset. Anonymous and [named] mappings are images of their own line.
function M.image_of(lines, addr)
  local at
  for i, l in ipairs(lines) do
    if ule(l.start, addr) and ult(addr, l.stop) then at = i break end
  end
  if not at then return nil end
  local l = lines[at]
  if not is_file(l.path) then
    return { path = l.path == "" and "[anon]" or l.path, base = l.start, stop = l.stop, file = false }
  end
  -- one load of a file: its mappings and anonymous gaps between them, up to another file
  local path, base = l.path, nil
  for i = at, 1, -1 do
    local m = lines[i]
    if m.path == path then
      if m.offset == 0 then base = m.start break end
    elseif m.path ~= "" then
      break
    end
  end
  if base == nil then base = l.start - l.offset end
  local stop = l.stop
  for i = at + 1, #lines do
    local m = lines[i]
    if m.path == path then
      if m.offset == 0 then break end -- another load of the same file
      stop = m.stop
    elseif m.path ~= "" then
      break
    end
  end
  return { path = path, base = base, stop = stop, file = true }
end

--- Decodes an ELF header (at least the first 32 bytes of the file, as a string):
-- returns e_type, e_entry, or nil when the bytes are not an ELF header.
function M.elf_entry(header)
  if type(header) ~= "string" or #header < 32 or header:sub(1, 4) ~= "\127ELF" then return nil end
  local class, data = header:byte(5), header:byte(6)
  if (class ~= 1 and class ~= 2) or (data ~= 1 and data ~= 2) then return nil end
  local function uint(pos, n)
    local v = 0
    for i = 0, n - 1 do
      local b = header:byte(data == 1 and pos + n - 1 - i or pos + i)
      v = v * 256 + b
    end
    return v
  end
  local width = class == 2 and 8 or 4
  if #header < 24 + width then return nil end
  return uint(17, 2), uint(25, width)
end

--- The entry point of a module loaded at `base` from the file whose ELF header is `header`:
-- e_entry for a fixed-address executable (ET_EXEC), base + e_entry for a position-independent
-- one (ET_DYN); 0 when unknown.
function M.module_entry(header, base)
  local etype, entry = M.elf_entry(header)
  if not etype then return 0 end
  if etype == 3 then return base + entry end
  return entry
end

--- A registry of modules: each { id, path, base, stop, entry } with ids from 0 in the order they
-- were added; one module per (path, base). Active modules are those still believed mapped:
-- `find` looks only at them, `invalidate` retires the ones a (re)mapping touches (they stay in
-- the table, as drcov keeps unloaded modules).
function M.registry()
  local reg = { list = {}, by_key = {}, active = {}, last = nil }

  function reg:add(path, base, stop, entry)
    local key = path .. "\0" .. u64.hex(base)
    local m = self.by_key[key]
    if m then
      if ult(m.stop, stop) then m.stop = stop end
      if entry and (m.entry == nil or m.entry == 0) then m.entry = entry end
    else
      m = { id = #self.list, path = path, base = base, stop = stop, entry = entry }
      self.list[#self.list + 1] = m
      self.by_key[key] = m
    end
    if not m.is_active then
      m.is_active = true
      self.active[#self.active + 1] = m
    end
    return m
  end

  function reg:find(addr)
    local m = self.last
    if m and m.is_active and ule(m.base, addr) and ult(addr, m.stop) then return m end
    for _, a in ipairs(self.active) do
      if ule(a.base, addr) and ult(addr, a.stop) then
        self.last = a
        return a
      end
    end
    return nil
  end

  --- Retires active modules overlapping [lo, hi).
  function reg:invalidate(lo, hi)
    local keep = {}
    for _, a in ipairs(self.active) do
      if ult(a.base, hi) and ult(lo, a.stop) then
        a.is_active = false
      else
        keep[#keep + 1] = a
      end
    end
    self.active = keep
  end

  return reg
end

--- One basic-block record as drcov writes it: u32 start offset, u16 size, u16 module id, each
-- little-endian. One string.char per record, no table: a run writes one per block, tens of
-- thousands of them.
function M.record(offset, size, id)
  assert(offset >= 0 and offset < 4294967296, "drcov: block offset does not fit 32 bits")
  assert(size >= 0 and size < 65536, "drcov: block size does not fit 16 bits")
  assert(id >= 0 and id < 65536, "drcov: module id does not fit 16 bits")
  local o1 = floor(offset / 256)
  local o2 = floor(o1 / 256)
  local o3 = floor(o2 / 256)
  return string.char(offset % 256, o1 % 256, o2 % 256, o3, size % 256, floor(size / 256),
    id % 256, floor(id / 256))
end

--- The text part of the file: header, module table (`modules`: list of { id, base, stop,
-- entry, path } in id order) and the "BB Table" line for `nbbs` records.
function M.header(modules, nbbs)
  local out = {
    "DRCOV VERSION: 2\n",
    "DRCOV FLAVOR: drcov-64\n",
    string.format("Module Table: version 2, count %d\n", #modules),
    "Columns: id, base, end, entry, path\n",
  }
  for _, m in ipairs(modules) do
    out[#out + 1] = string.format("%d, 0x%s, 0x%s, 0x%s, %s\n", m.id, u64.hex(m.base),
      u64.hex(m.stop), u64.hex(m.entry or 0), m.path)
  end
  out[#out + 1] = string.format("BB Table: %d bbs\n", nbbs)
  return table.concat(out)
end

return M
