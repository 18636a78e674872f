-- qemu.syscalls: names of guest syscalls and errno values, and the decoding of the arguments the
-- kernel reads as signed ints. Pure Lua, no QEMU (see spec/syscalls_spec.lua).
--
-- The number -> name tables are generated from the Linux UAPI headers by tools/gen-syscalls.py
-- (lua/qemu/syscalls_<target>.lua, lua/qemu/syscalls_errno.lua); a target without a table has no
-- names (name() returns nil), never wrong ones.
--
-- Why decoding is needed: QEMU hands a syscall's arguments over as 64-bit registers, and an int
-- argument is only as wide as the guest wrote it. glibc passes AT_FDCWD (-100) to openat with a
-- 32-bit move on x86_64, which leaves 0x00000000ffffff9c = 4294967196 in the register; the
-- kernel reads the low 32 bits as an int and sees -100. So the arguments listed in INT_ARGS are
-- read the kernel's way: low 32 bits, two's complement. Return values need no decoding: they are
-- full-width signed longs, and qlua already passes them signed.

local u64 = require "qemu.u64"

local M = {}

local TWO31, TWO32 = 2147483648, 4294967296

M.AT_FDCWD = -100

local tables = {} -- target -> its generated table, or false when there is none

local function table_of(target)
  if type(target) ~= "string" then return nil end
  local t = tables[target]
  if t == nil then
    -- target names come from qemu.info.target; anything else simply has no table
    local ok, loaded = false, nil
    if target:match("^[%w_]+$") then
      ok, loaded = pcall(require, "qemu.syscalls_" .. target)
    end
    t = ok and type(loaded) == "table" and loaded or false
    tables[target] = t
  end
  return t or nil
end

--- syscalls.name(target, num): the name of syscall `num` on `target` ("x86_64", "aarch64",
-- "i386"), e.g. "openat"; nil when the number or the target is unknown.
function M.name(target, num)
  local t = table_of(target)
  return t and t[num] or nil
end

local errnos = require "qemu.syscalls_errno"

--- syscalls.errno_name(e): the name of errno `e` ("ENOENT" for 2, or for -2 as a syscall returns
-- it); nil when unknown.
function M.errno_name(e)
  if type(e) ~= "number" then return nil end
  if e < 0 then e = -e end
  return errnos[e]
end

--- syscalls.int(v): the low 32 bits of the register value v read as a C int (-2^31 .. 2^31-1):
-- 4294967196 and -100 both give -100.
function M.int(v)
  u64.whole(v)
  local lo = v % TWO32 -- floored in both Luas: a negative v gives its two's complement low bits
  if lo >= TWO31 then lo = lo - TWO32 end
  return lo
end

-- Arguments (1-based positions) the kernel declares as int: file descriptors, directory file
-- descriptors (AT_FDCWD) and the like. Keyed by syscall name, so one list serves every target.
local DIRFD, FD = "dirfd", "fd"
local INT_ARGS = {}
local function args_of(kind, positions, names)
  for name in names:gmatch("%S+") do
    INT_ARGS[name] = INT_ARGS[name] or {}
    for _, i in ipairs(positions) do INT_ARGS[name][i] = kind end
  end
end
args_of(DIRFD, { 1 }, "openat openat2 mkdirat mknodat fchownat futimesat newfstatat fstatat64 "
  .. "unlinkat readlinkat fchmodat fchmodat2 faccessat faccessat2 utimensat utimensat_time64 "
  .. "name_to_handle_at execveat statx open_tree mount_setattr fspick")
args_of(DIRFD, { 1, 3 }, "renameat renameat2 linkat move_mount")
args_of(DIRFD, { 2 }, "symlinkat")
args_of(FD, { 1 }, "read write close pread64 pwrite64 readv writev preadv pwritev preadv2 "
  .. "pwritev2 fstat fstat64 lseek _llseek ioctl fcntl fcntl64 dup fsync fdatasync ftruncate "
  .. "ftruncate64 getdents getdents64 fchmod fchown fchdir flock fstatfs fstatfs64 readahead "
  .. "fadvise64 fadvise64_64 fallocate syncfs epoll_wait epoll_pwait epoll_pwait2 shutdown "
  .. "connect accept accept4 bind listen sendto recvfrom sendmsg recvmsg sendmmsg recvmmsg "
  .. "getsockopt setsockopt getsockname getpeername inotify_add_watch inotify_rm_watch "
  .. "fgetxattr fsetxattr flistxattr fremovexattr timerfd_settime timerfd_gettime")
args_of(FD, { 1, 2 }, "dup2 dup3 sendfile sendfile64 tee copy_file_range")
args_of(FD, { 1, 3 }, "epoll_ctl splice")
args_of(FD, { 5 }, "mmap mmap2")

--- syscalls.arg_kind(target, num, i): "dirfd" or "fd" when argument i (1-based) of syscall num
-- is one the kernel reads as an int, else nil.
function M.arg_kind(target, num, i)
  local name = M.name(target, num)
  local kinds = name and INT_ARGS[name]
  return kinds and kinds[i] or nil
end

--- syscalls.arg(target, num, i, v): argument i of syscall num as the kernel sees it: an int (see
-- syscalls.int) for the arguments of arg_kind, otherwise v unchanged.
function M.arg(target, num, i, v)
  if M.arg_kind(target, num, i) then return M.int(v) end
  return v
end

--- syscalls.format_arg(target, num, i, v): argument i as text: AT_FDCWD for a directory file
-- descriptor of -100, a signed decimal for other int arguments, otherwise 0x and hex digits
-- (addresses and flags read best in hex; the signed 64-bit value is shown as its u64 pattern).
function M.format_arg(target, num, i, v)
  local kind = M.arg_kind(target, num, i)
  if not kind then return "0x" .. u64.hex(v) end
  local n = M.int(v)
  if kind == DIRFD and n == M.AT_FDCWD then return "AT_FDCWD" end
  return string.format("%d", n)
end

--- syscalls.format_call(target, num, args [, n]): "openat(AT_FDCWD, 0x..., ...)": the name (or
-- "syscall_NUM" when unknown) and the first n (default 6) values of the list args. The headers
-- say nothing of how many arguments a syscall takes, so all n registers are shown.
function M.format_call(target, num, args, n)
  local parts = {}
  for i = 1, n or 6 do parts[i] = M.format_arg(target, num, i, args[i] or 0) end
  local name = M.name(target, num) or string.format("syscall_%d", num)
  return name .. "(" .. table.concat(parts, ", ") .. ")"
end

--- syscalls.format_ret(ret): a return value as text: "-2 (ENOENT)" for a failure (-4095 .. -1,
-- the kernel's error range), the decimal value otherwise.
function M.format_ret(ret)
  local text = string.format("%d", ret)
  if ret < 0 and ret >= -4095 then
    local name = M.errno_name(ret)
    if name then text = text .. " (" .. name .. ")" end
  end
  return text
end

return M
