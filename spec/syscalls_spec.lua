-- Specs for lua/qemu/syscalls.lua and its generated tables (lua/qemu/syscalls_*.lua).

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local syscalls = require "qemu.syscalls"

describe("qemu.syscalls", function()
  describe("name", function()
    it("names x86_64 syscalls", function()
      assert.are.equal("read", syscalls.name("x86_64", 0))
      assert.are.equal("write", syscalls.name("x86_64", 1))
      assert.are.equal("openat", syscalls.name("x86_64", 257))
      assert.are.equal("exit_group", syscalls.name("x86_64", 231))
    end)

    it("names aarch64 syscalls by the generic numbering", function()
      assert.are.equal("openat", syscalls.name("aarch64", 56))
      assert.are.equal("read", syscalls.name("aarch64", 63))
      assert.are.equal("fcntl", syscalls.name("aarch64", 25)) -- __NR3264_fcntl on 64-bit
      assert.are.equal("exit_group", syscalls.name("aarch64", 94))
      assert.is_nil(syscalls.name("aarch64", 244)) -- __NR_arch_specific_syscall is no syscall
    end)

    it("names i386 syscalls", function()
      assert.are.equal("read", syscalls.name("i386", 3))
      assert.are.equal("openat", syscalls.name("i386", 295))
    end)

    it("gives nil for unknown numbers and targets", function()
      assert.is_nil(syscalls.name("x86_64", 100000))
      assert.is_nil(syscalls.name("x86_64", -1))
      assert.is_nil(syscalls.name("riscv64", 56))
      assert.is_nil(syscalls.name("../x", 1))
      assert.is_nil(syscalls.name(nil, 1))
    end)
  end)

  describe("int and arg", function()
    it("reads AT_FDCWD as -100 whether it comes zero- or sign-extended", function()
      assert.are.equal(-100, syscalls.int(4294967196))
      assert.are.equal(-100, syscalls.int(-100))
      assert.are.equal(-100, syscalls.arg("x86_64", 257, 1, 4294967196))
      assert.are.equal(-100, syscalls.arg("x86_64", 257, 1, -100))
      assert.are.equal(-100, syscalls.arg("aarch64", 56, 1, 4294967196))
    end)

    it("keeps ints in range and leaves other arguments alone", function()
      assert.are.equal(3, syscalls.int(3))
      assert.are.equal(2147483647, syscalls.int(2147483647))
      assert.are.equal(-2147483648, syscalls.int(2147483648))
      assert.are.equal(4294967196, syscalls.arg("x86_64", 257, 2, 4294967196)) -- the path
      assert.are.equal(4294967196, syscalls.arg("x86_64", 39, 1, 4294967196)) -- getpid: none
    end)

    it("knows which arguments are file descriptors", function()
      assert.are.equal("dirfd", syscalls.arg_kind("x86_64", 257, 1))
      assert.are.equal("dirfd", syscalls.arg_kind("x86_64", 264, 3)) -- renameat's newdirfd
      assert.are.equal("fd", syscalls.arg_kind("x86_64", 3, 1))      -- close
      assert.are.equal("fd", syscalls.arg_kind("x86_64", 9, 5))      -- mmap's fd
      assert.is_nil(syscalls.arg_kind("x86_64", 9, 1))
    end)
  end)

  describe("formatting", function()
    it("writes a call with AT_FDCWD, signed fds and hex for the rest", function()
      assert.are.equal("openat(AT_FDCWD, 0x4000801234, 0x80000, 0x0, 0x0, 0x0)",
        syscalls.format_call("x86_64", 257, { 4294967196, 0x4000801234, 0x80000, 0, 0, 0 }))
      assert.are.equal("close(-1, 0x0)", syscalls.format_call("x86_64", 3, { -1 }, 2))
      assert.are.equal("syscall_100000(0x1)", syscalls.format_call("x86_64", 100000, { 1 }, 1))
      assert.are.equal("mmap(0x0, 0x1000, 0x3, 0x22, -1, 0x0)",
        syscalls.format_call("x86_64", 9, { 0, 4096, 3, 0x22, 4294967295, 0 }))
    end)

    it("shows an fd of -100 as a number where it is no dirfd", function()
      assert.are.equal("-100", syscalls.format_arg("x86_64", 3, 1, -100))
    end)

    it("names errors of returns and leaves successes as numbers", function()
      assert.are.equal("-2 (ENOENT)", syscalls.format_ret(-2))
      assert.are.equal("-13 (EACCES)", syscalls.format_ret(-13))
      assert.are.equal("3", syscalls.format_ret(3))
      assert.are.equal("0", syscalls.format_ret(0))
      assert.are.equal("-5000", syscalls.format_ret(-5000)) -- no error: past -4095
    end)
  end)

  describe("errno_name", function()
    it("names errno values given either way round", function()
      assert.are.equal("ENOENT", syscalls.errno_name(2))
      assert.are.equal("ENOENT", syscalls.errno_name(-2))
      assert.are.equal("EPERM", syscalls.errno_name(1))
      assert.are.equal("ENOSYS", syscalls.errno_name(38))
    end)

    it("prefers the name defined by its number over an alias", function()
      assert.are.equal("EAGAIN", syscalls.errno_name(11))  -- not EWOULDBLOCK
      assert.are.equal("EDEADLK", syscalls.errno_name(35)) -- not EDEADLOCK
    end)

    it("gives nil for unknown values", function()
      assert.is_nil(syscalls.errno_name(0))
      assert.is_nil(syscalls.errno_name(100000))
      assert.is_nil(syscalls.errno_name("2"))
    end)
  end)

  describe("generated tables", function()
    it("say how to regenerate them", function()
      for _, target in ipairs { "x86_64", "aarch64", "i386", "errno" } do
        local f = assert(io.open("lua/qemu/syscalls_" .. target .. ".lua"))
        local head = f:read("*l") .. "\n" .. f:read("*l") .. "\n" .. f:read("*l")
        f:close()
        assert.is_truthy(head:find("GENERATED by tools/gen%-syscalls%.py"), target)
        assert.is_truthy(head:find("Regenerate: python3 tools/gen%-syscalls%.py"), target)
      end
    end)
  end)
end)
