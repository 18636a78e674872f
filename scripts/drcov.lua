-- drcov.lua: code coverage in DynamoRIO's drcov format (version 2), for Lighthouse, bncov and
-- the like; a port of QEMU's contrib/plugins/drcov.c (the same in 7.2 and 10.0.2), with a real
-- module table.
--
-- Arguments:
--   filename=PATH   (default file.drcov.trace, as QEMU) the file written at exit; it is created
--                   (truncated) when the script loads, so a path that cannot be written stops
--                   QEMU at once instead of losing the run. %p in PATH is the process id:
--                   a guest that forks writes one file per process instead of the last one
--                   overwriting the others (QEMU's plugin has no such form).
--
-- Output: the file, nothing in the plugin log. Its layout is the one QEMU writes:
--   DRCOV VERSION: 2
--   DRCOV FLAVOR: drcov-64
--   Module Table: version 2, count N
--   Columns: id, base, end, entry, path
--   ID, 0xBASE, 0xEND, 0xENTRY, PATH           one line per module, ids 0..N-1
--   BB Table: M bbs
--   M records of 8 bytes, little-endian: u32 start offset (from its module's base), u16 size in
--   bytes, u16 module id.
-- A block is recorded once if it executed at least once (QEMU records it at translation and keeps
-- the records whose translation ran). Records come in the order blocks were first translated, the
-- same order as QEMU's (checked against QEMU 7.2's drcov.c in one run: the same blocks).
--
-- Modules (user mode): every executable image the guest mapped, plus any other mapping code ran
-- from. How they are found, and why:
--   * QEMU 7.2 cannot read guest memory from a plugin (no qemu.read_memory), so the path argument
--     of openat cannot be read, and fd -> path needs readlink, which plain Lua lacks. But in user
--     mode the guest lives in QEMU's own address space: guest address A is host address
--     A + guest_base, and io.open("/proc/self/maps") from Lua reads QEMU's (host) maps, which
--     list each file the guest mapped with its path. guest_base is measured, not assumed: it is
--     insn.haddr - insn.vaddr of the first instruction (0 for 64-bit guests on 7.2 here).
--   * QEMU maps guest code without host PROT_EXEC, so the maps' permissions cannot tell guest
--     code apart; the guest's own mmap/mprotect calls can. on_syscall/on_syscall_ret follow
--     mmap, mprotect, munmap and mremap (numbers chosen by qemu.info.target: x86_64, i386,
--     aarch64, arm, riscv, loongarch64): a successful mapping with PROT_EXEC adds the image
--     holding it, and any (re)mapping retires the modules it overlaps so the next lookup reads
--     the maps again. Every translated block is looked up too, which also finds what no syscall
--     announced (the program and its interpreter, mapped by QEMU's loader).
--   * a module is a loaded file image: base = its mapping of file offset 0 (the ELF header),
--     end = the end of the last mapping of the same file in that load (anonymous gaps between
--     them included); entry = the ELF e_entry (+ base for ET_DYN) read from the file (for the
--     main program, qemu.binary().entry if the file cannot be read: QEMU's value, which is the
--     interpreter's entry for a dynamic program). Code in an anonymous mapping gets a module
--     "[anon]" (or the kernel's name for the mapping) spanning that mapping; code where the maps
--     show nothing gets "[unknown]" spanning its pages. The main program is module 0 (as in QEMU), the others
--     follow in the order they were found. Unmapped modules stay in the table.
-- System mode: no files; code is grouped into one module "[system]" per 4 GiB window, spanning
-- the blocks recorded in it.
--
-- Differences from QEMU's plugin, on purpose:
--   * QEMU writes a one-line module table (the main program, base = start_code, path from
--     qemu_plugin_path_to_binary) and its block "offsets" are absolute addresses truncated to
--     32 bits, all in module 0: wrong for every library, for a PIE program and for any address
--     above 4 GiB. Here each block is attributed to the module holding it, with its offset from
--     that module's base, which is what drcov readers expect;
--   * QEMU writes one record per translation that ran, so a block retranslated (after a code
--     flush, or when a guest thread starts) appears more than once (7149 records for 6105
--     blocks in a run of ls -l /); here each distinct block (start, size, module) appears once:
--     coverage readers treat the records as a set;
--   * QEMU takes a lock and runs a C callback on every block execution; here each execution
--     adds to one native tally keyed by the block's record (tb:tally: no Lua, no lock);
--   * a forked child writes its own complete table to the same file at its exit; whichever
--     process exits last leaves its table there (QEMU's parent and child share one FILE opened
--     before the fork and can interleave their writes).
local qemu = require "qemu"
local fmt = require "qemu.drcov_format"
local keys = require "qemu.keys"

local args = qemu.script {
  name = "drcov",
  description = "block coverage in drcov format, with every executable module the guest mapped",
  args = {
    { name = "filename", type = "string", default = "file.drcov.trace",
      help = "the drcov file written at exit (%p: the process id, for guests that fork)" },
  },
}

do -- fail now, as QEMU's fopen at install would, rather than at exit
  local path = qemu.output_path(args.filename)
  local f, err = io.open(path, "wb")
  if not f then error("drcov.lua: cannot write filename=" .. path .. ": " .. err, 0) end
  f:close()
end

-- Syscall numbers of the calls that change mappings, by target.
local GENERIC = { mmap = 222, munmap = 215, mprotect = 226, mremap = 216 }
local SYSCALLS = {
  x86_64 = { mmap = 9, mprotect = 10, munmap = 11, mremap = 25 },
  i386 = { mmap = 90, mmap2 = 192, munmap = 91, mprotect = 125, mremap = 163 },
  arm = { mmap2 = 192, munmap = 91, mprotect = 125, mremap = 163 },
  aarch64 = GENERIC, riscv64 = GENERIC, riscv32 = GENERIC, loongarch64 = GENERIC,
}

local system = qemu.info.system
local reg = fmt.registry()
-- each distinct block (vaddr, size, module) gets an id from qemu.keys: columns, not a table
-- per block (a translation-heavy guest has tens of thousands)
local blocks = keys.new(3)
local ran = qemu.tally() -- record id -> executions
local SYSTEM = {}            -- the module key of every block in system mode
local guest_base      -- host address - guest address, measured at the first translation
local maps            -- parsed /proc/self/maps, re-read when a lookup misses
local main_path, main_entry

local function read_maps()
  local f = io.open("/proc/self/maps", "r")
  if not f then return {} end
  local text = f:read("*a")
  f:close()
  return fmt.parse_maps(text)
end

local PAGE = 4096

--- The module holding guest address `addr` (a block of `size` bytes starting there), added to the
-- registry if new.
local function module_at(addr, size)
  local m = reg:find(addr)
  if not m then
    maps = read_maps()
    local img = fmt.image_of(maps, addr + guest_base)
    if img then
      local base, stop = img.base - guest_base, img.stop - guest_base
      m = reg:add(img.path, base, stop)
      m.file = img.file
    else
      local base = addr - addr % PAGE
      local stop = addr + size
      stop = stop + (PAGE - stop % PAGE) % PAGE
      m = reg:add("[unknown]", base, stop, 0)
    end
  end
  if fmt.ult(m.stop, addr + size) then m.stop = addr + size end
  return m
end

local function start()
  local b = qemu.binary()
  if b then
    main_entry = b.entry
    maps = read_maps()
    local img = fmt.image_of(maps, b.start_code + guest_base)
    if img and img.file then
      main_path = img.path
      local m = reg:add(img.path, img.base - guest_base, img.stop - guest_base)
      m.file = true
    end
  end
end

qemu.on_translate(function(tb)
  local vaddr = tb.vaddr
  if guest_base == nil then
    local haddr = tb[1].haddr
    guest_base = (haddr ~= 0 and not system) and haddr - vaddr or 0
    if not system then start() end
  end
  local size = tb.size
  -- system mode: grouped into modules at exit; user mode: the module holding the block now (code
  -- at an address whose mapping changed is another block, in another module)
  local m = system and SYSTEM or module_at(vaddr, size)
  tb:tally(ran, (blocks:id(vaddr, size, m)))
end)

-- Mappings: follow the guest's own calls (user mode, known targets).
local nums = SYSCALLS[qemu.info.target]
if not system and nums then
  local PROT_EXEC = 4
  local watched = {}
  for _, k in ipairs({ "mmap", "mmap2", "munmap", "mprotect", "mremap" }) do
    if nums[k] then watched[nums[k]] = k end
  end
  local pending = {} -- per vCPU: the arguments of the watched call in progress

  qemu.on_syscall(function(vcpu, num, a1, a2, a3)
    local kind = watched[num]
    if kind then pending[vcpu] = { kind, a1, a2, a3 } end
  end)

  qemu.on_syscall_ret(function(vcpu, num, ret)
    local p = pending[vcpu]
    if not p or watched[num] ~= p[1] then return end
    pending[vcpu] = nil
    if guest_base == nil then return end -- nothing translated yet
    local kind, a1, a2, a3 = p[1], p[2], p[3], p[4]
    local failed = ret < 0 and ret > -4096
    if failed then return end
    if kind == "munmap" then
      reg:invalidate(a1, a1 + a2)
    elseif kind == "mremap" then
      reg:invalidate(a1, a1 + a2)
      reg:invalidate(ret, ret + a3)
    elseif kind == "mprotect" then
      if a3 % (2 * PROT_EXEC) >= PROT_EXEC and a2 > 0 then module_at(a1, 0) end
    else -- mmap, mmap2: addr, length, prot; the new mapping is at ret
      reg:invalidate(ret, ret + a2)
      if a3 % (2 * PROT_EXEC) >= PROT_EXEC and a2 > 0 then module_at(ret, 0) end
    end
  end)
end

local function file_entry(m)
  if m.entry ~= nil then return m.entry end
  local fallback = m.path == main_path and main_entry or 0
  if not m.file then return fallback end
  local f = io.open(m.path, "rb")
  if not f then return fallback end
  local header = f:read(64)
  f:close()
  return fmt.elf_entry(header) and fmt.module_entry(header, m.base) or fallback
end

-- System mode: one "[system]" module per 4 GiB window, spanning the recorded blocks in it.
local WINDOW = 4294967296
-- the module of each record (ids from `blocks`) in system mode: module_of[id]
local function system_modules(records, module_of)
  local vaddrs, sizes = blocks[1], blocks[2]
  local modules, by_window = {}, {}
  for _, id in ipairs(records) do
    local vaddr = vaddrs[id]
    local window = string.format("%x", vaddr - vaddr % WINDOW)
    local m = by_window[window]
    if not m then
      m = { id = #modules, path = "[system]", base = vaddr, stop = vaddr, entry = 0 }
      modules[#modules + 1] = m
      by_window[window] = m
    end
    if fmt.ult(vaddr, m.base) then m.base = vaddr end
    if fmt.ult(m.stop, vaddr + sizes[id]) then m.stop = vaddr + sizes[id] end
    module_of[id] = m
  end
  return modules
end

qemu.on_exit(function()
  local records = {} -- ids of the blocks that ran, in the order first translated
  for id = 1, blocks.n do
    if ran:get(id) > 0 then records[#records + 1] = id end
  end
  local vaddrs, sizes, module_of = blocks[1], blocks[2], blocks[3]
  local modules
  if system then
    module_of = {}
    modules = system_modules(records, module_of)
  else
    modules = {}
    for _, m in ipairs(reg.list) do
      modules[#modules + 1] = { id = m.id, path = m.path, base = m.base, stop = m.stop,
                                entry = file_entry(m) }
    end
  end
  local out = { fmt.header(modules, #records) }
  for _, id in ipairs(records) do
    local m = modules[module_of[id].id + 1]
    out[#out + 1] = fmt.record(vaddrs[id] - m.base, sizes[id], m.id)
  end
  local path = qemu.output_path(args.filename) -- at exit: a forked child writes its own %p file
  local f, err = io.open(path, "wb")
  if not f then error("drcov.lua: cannot write filename=" .. path .. ": " .. err, 0) end
  f:write(table.concat(out))
  f:close()
end)
