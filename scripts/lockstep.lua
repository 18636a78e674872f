-- lockstep.lua: runs two QEMUs in lockstep over a unix socket and reports where their executions
-- part; a port of QEMU's contrib/plugins/lockstep.c (liblockstep.so) with its arguments and
-- output, for finding where a change to QEMU (or to the guest's input) changes the blocks it runs.
-- Start one QEMU with sockpath=PATH: it creates the socket and waits (inside QEMU's start-up) for
-- the second, started with the same sockpath=, which connects. Then, at the start of every block,
-- each side sends the block's address and its count of instructions so far and reads the other's:
-- a different address is a divergence. Needs LuaSocket (Debian: lua-socket) for the socket.
-- User mode (qemu-ARCH) only: inside qemu-system-*, LuaSocket's C functions socket_connect and
-- socket_listen are bound to QEMU's own exported functions of the same names, so the script
-- refuses system emulation (QEMU's plugin also supports system mode: a gap of this port).
--
-- Arguments:
--   sockpath=PATH  (required) the unix socket; the side that finds no socket there creates it
--                  (and deletes it at the end), the other connects
--   verbose=on|off (default off) print every divergence, not only those after which the two runs
--                  stay apart
--
-- Output (as QEMU's plugin):
--   setup_socket::ready / connect_socket::ready   once connected, by the creating / other side
--   @ 0x%016x (N) vs 0x%016x (M) (D/K since last)  a divergence: our block address and
--        instruction count, the other side's, the number of divergences so far and the number of
--        blocks since the previous one; printed when verbose=on, or when only one block passed
--        since the previous divergence (the first one is therefore silent unless verbose=on)
--   Δ too high, we have diverged, previous insns    two divergences in a row one block apart:
--     previously @ 0x%016x/N (M insns)              the last (up to 5) blocks run: address, size,
--   giving up                                       instruction count after it; lockstep stops
--   at exit:  No divergence :-) / Executed B/B blocks / Executed ~N instructions
-- The instruction count assumes every block runs to its end (hence "~"), as in QEMU.
--
-- Differences from QEMU's plugin, on purpose:
--   * QEMU prints "No divergence :-)" at exit even after reporting divergences it recovered from;
--     here that line reads "Divergences: N" when there were any;
--   * QEMU's socket error messages lack a newline; here they end in one, after the reason;
--   * at the end, each side tells the other it is finishing and waits for the other to stop
--     talking, so the side that runs longer stops cleanly with "the other side has finished"
--     (QEMU's plugin would write to a closed socket: SIGPIPE, or "read less than expected").
-- The wire format is QEMU's (two little-endian 64-bit words), plus a final record of all ones.
-- Like QEMU's plugin this suits single-threaded, single-process guests (blocks of several vCPUs
-- interleave differently in two runs; a forked child would share the socket) and runs with identical environments (in user mode, differences in
-- the environment or arguments change the start-up code's path); "-d nochain" is not needed:
-- block callbacks run on chained blocks too. In LuaJIT, addresses above 2^53 lose their low bits.
-- Cost: a round trip over the socket per executed block, as in QEMU.
local qemu = require "qemu"

local args = qemu.script {
  name = "lockstep",
  description = "compare the blocks two QEMU runs execute, over a unix socket (liblockstep.so)",
  args = {
    { name = "sockpath", required = true, help = "unix socket shared by the two QEMUs" },
    { name = "verbose", type = "bool", default = false, help = "print every divergence" },
  },
}

if qemu.info.system then
  error("lockstep.lua: system emulation is not supported: qemu-system-* exports functions named "
    .. "socket_connect and socket_listen, which the dynamic linker binds in place of LuaSocket's "
    .. "own functions of those names (QEMU then aborts); run it under qemu-ARCH (user mode)", 0)
end

local ok, unix = pcall(require, "socket.unix")
if not ok then
  error("lockstep.lua: needs LuaSocket's socket.unix module for the unix socket (Debian: apt "
    .. "install lua-socket): " .. tostring(unix), 0)
end
-- Only socket.unix, not socket.core: loading the core sets SIGPIPE to "ignore" for the whole
-- process, which a user-mode guest would inherit.

-- ---- the wire format: two unsigned 64-bit little-endian words ----
local pack, unpack
if string.pack then
  pack = function(a, b) return string.pack("<i8i8", a, b) end
  unpack = function(s) return string.unpack("<i8i8", s) end
else
  local char, byte, floor = string.char, string.byte, math.floor
  local function le(v)
    local t = {}
    for i = 1, 8 do
      local b = v % 256
      t[i] = char(b)
      v = floor(v / 256)
    end
    return table.concat(t)
  end
  local function word(s, at)
    local v = 0
    for i = at + 7, at, -1 do v = v * 256 + byte(s, i) end
    return v
  end
  pack = function(a, b) return le(a) .. le(b) end
  unpack = function(s) return word(s, 1), word(s, 9) end
end
local RECORD = 16
local BYE = string.rep("\255", RECORD)

-- Block addresses as QEMU's plugin prints them (%016PRIx64), from any u64 in either Lua.
local u64 = require "qemu.u64"
local function hex16(v) return u64.hex(v, 16) end

-- ---- the connection, made while QEMU starts (as QEMU's plugin does) ----
local path = args.sockpath
local sock, to_unlink
local ENOENT = 2
do
  -- as QEMU's plugin: connect when something exists at the path, else create the socket there
  local f, _, errno = io.open(path, "rb")
  if f then f:close() end
  if f or errno ~= ENOENT then
    local client = unix.stream()
    local connected, err = client:connect(path)
    if not connected then
      client:close()
      error("lockstep.lua: failed to connect to " .. path .. ": " .. err
        .. " (a socket left by an earlier run? delete it)", 0)
    end
    sock = client
    qemu.write("connect_socket::ready\n")
  else
    local server = unix.stream()
    local bound, berr = server:bind(path)
    if not bound then error("lockstep.lua: bind socket " .. path .. ": " .. berr, 0) end
    to_unlink = path
    local listening, lerr = server:listen(1)
    if not listening then
      os.remove(path)
      error("lockstep.lua: listen socket " .. path .. ": " .. lerr, 0)
    end
    local peer, aerr = server:accept()
    server:close()
    if not peer then
      os.remove(path)
      error("lockstep.lua: accept socket " .. path .. ": " .. aerr, 0)
    end
    sock = peer
    qemu.write("setup_socket::ready\n")
  end
end

-- ---- execution ----
local insn_count, bb_count = 0, 0
local recent = {}                  -- the last 5 executed blocks: { pc, insns, insn_count }
local divergences = 0
local last_div                     -- { bb = bb_count at the time, distance = ... }
local stopped, peer_gone = false, false

-- Stops lockstep (QEMU then unloads the script; the exit handler below still runs). `gone`: the
-- other side can no longer be written to.
local function stop(message, gone)
  if message then qemu.write(message) end
  stopped = true
  if gone then peer_gone = true end
  qemu.uninstall()
end

local function report(us_pc, us_count, them_pc, them_count)
  local distance, diverged = 0, false
  if last_div then
    -- blocks executed since the previous divergence (QEMU counts one less when that was before
    -- the first block completed)
    if last_div.bb == 0 then
      distance = math.max(bb_count - 1, 0)
    else
      distance = bb_count - last_div.bb
    end
    diverged = distance == 1 and last_div.distance == 1
  end
  divergences = divergences + 1
  last_div = { bb = bb_count, distance = distance }
  if args.verbose or distance == 1 or diverged then
    qemu.write(string.format("@ 0x%s (%d) vs 0x%s (%d) (%d/%d since last)\n", hex16(us_pc),
      us_count, hex16(them_pc), them_count, divergences, distance))
  end
  if diverged then
    local out = { "Δ too high, we have diverged, previous insns\n" }
    -- QEMU lists up to 5 of the latest blocks but never the very first one
    for i = 1, math.min(5, bb_count - 1) do
      local prev = recent[(bb_count - i) % 5 + 1]
      out[#out + 1] = string.format("  previously @ 0x%s/%d (%d insns)\n", hex16(prev[1]), prev[2],
        prev[3])
    end
    out[#out + 1] = "giving up\n"
    stop(table.concat(out))
  end
end

local function on_block(vcpu, b)
  if stopped then return end
  local sent, serr = sock:send(pack(b.pc, insn_count))
  if not sent then
    return stop("problem writing to socket: " .. serr .. "\n", true)
  end
  local data, rerr = sock:receive(RECORD)
  if not data then
    if rerr == "closed" then return stop("read less than expected\n", true) end
    return stop("problem reading from socket: " .. rerr .. "\n", true)
  end
  if data == BYE then return stop("the other side has finished\n", true) end
  local them_pc, them_count = unpack(data)
  if them_pc ~= b.pc then report(b.pc, insn_count, them_pc, them_count) end
  -- as QEMU: count the block as run to its end, and log it
  insn_count = insn_count + b.insns
  bb_count = bb_count + 1
  recent[(bb_count - 1) % 5 + 1] = { b.pc, b.insns, insn_count }
end

qemu.on_translate(function(tb)
  tb:on_exec(on_block, { pc = tb.vaddr, insns = #tb }, { sync = true }) -- in step with the peer
end)

-- Tell the other side we are done, then wait until it has stopped talking (its "bye", or the
-- socket closing) before closing: it never writes to a closed socket.
local function say_goodbye()
  if not peer_gone then
    if sock:send(BYE) then
      sock:settimeout(60)
      while true do
        local data = sock:receive(RECORD)
        if not data or data == BYE then break end
      end
    end
  end
  sock:close()
  if to_unlink then os.remove(to_unlink) end
end

qemu.on_exit(function()
  if not stopped then
    qemu.write((divergences == 0 and "No divergence :-)\n"
        or string.format("Divergences: %d\n", divergences))
      .. string.format("Executed %d/%d blocks\n", bb_count, bb_count)
      .. string.format("Executed ~%d instructions\n", insn_count))
  end
  say_goodbye()
end)
