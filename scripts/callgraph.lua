-- callgraph.lua: folded call stacks for flame graphs (flamegraph.pl, inferno, speedscope), one
-- line per distinct stack: "_start;__libc_start_main;main;a;b 1234", the frames from the outermost
-- in, then the stack's weight. No QEMU plugin does this; the idea is perf's "perf script |
-- stackcollapse", made exact by counting every executed instruction.
--
-- Arguments:
--   outfile=PATH        write the folded stacks to PATH (opened, and truncated, when the script
--                       loads); default: the plugin log (-d plugin [-D FILE]). With outfile=, the
--                       plugin log gets one summary line instead:
--                       callgraph: stacks=N weight=W insns=I calls=C returns=R unmatched=U resyncs=S
--   max_depth=N         cut stacks after N frames; deeper weight joins the cut stack (0, the
--                       default: no limit)
--   weight=insns|calls  insns (default): instructions executed while that stack was current, so
--                       the weights add up to every instruction executed; calls: how many times
--                       the stack's innermost frame was entered by a call
--   symbols=on|off      on (default): frames are named MODULE!FUNCTION (libc.so.6!__libc_start_main,
--                       loop!main: qemu.symbolize, the symbols of every ELF file the guest mapped,
--                       shared libraries included), and a frame without a symbol MODULE+0xOFFSET
--                       of its entry; off: QEMU's symbol (insn.symbol: the main program's only)
--                       and the hex address of a frame's entry, as before
--   symfile=PATH        load a System.map or an ELF file with absolute addresses (vmlinux) for
--                       the names (system mode); repeatable; implies symbols=on
--
-- How: each instruction adds to a native per-vCPU counter (exact, no Lua). Each executed block
-- runs one Lua callback that reads the vCPU's counter, gives the instructions counted since the
-- previous block to the current stack, and applies the call or return that ended the previous
-- block; call and return instructions are recognised from their disassembly at translation time
-- (x86: call/callq/ret/retq, with prefixes; aarch64: bl/blr/ret and the pointer-authentication
-- forms). The shadow stacks (lua/qemu/callgraph_stacks.lua) name frames as a sampling profiler
-- would: each caller after the function of its call instruction, the innermost frame after the
-- symbol of the block running now (qemu.symbolize of its address; with symbols=off insn.symbol),
-- so a tail call shows the function jumped to; code without a symbol (a PLT stub) counts for the frame's
-- function, and a frame that never reaches a symbol is named after the hex address of its entry.
-- A frame stores its return address (the call's address + size) and a return pops down to the
-- frame whose return address is where it landed, so unbalanced returns resynchronise; a longjmp
-- (which lands with a jump) is caught when the code running is a deeper frame's function, and
-- the frames above it go. The first frame of a vCPU is the function of its first block: _start
-- for the main thread of a static program, the clone code for a thread.
--
-- Cost: one Lua callback per executed block: measured about 90 ns a block with LuaJIT and 370 ns
-- with Lua 5.4 (tests/guests/loop.c, 4.1 million blocks: 0.39 s and 1.5 s, against 0.04 s with
-- count.lua); translation adds one disassembly per block. The sum of the insns weights equals the
-- instructions executed (what tests/oracle.c and QEMU's libinsn.so count), threads included;
-- the stacks of all vCPUs are merged.
--
-- Limits: frames are only as good as the guest's symbols (a stripped program's own functions show
-- as MODULE+0xOFFSET of their entry, or under the nearest exported symbol's name when .dynsym
-- has one; with symbols=off, only the main program's symbols count); a signal handler runs in the interrupted frame;
-- a function tail-jumping into one of its callers' functions is taken for a longjmp there. In
-- system mode, an interrupt or exception taken right after a call or return is mistaken for its
-- target. Symbols containing ';' or white space have them replaced by '_'. Output order:
-- depth-first, sibling frames in bytewise name order. With outfile= and a forking guest, each
-- process appends its stacks to the file when it exits (the file offset is shared; the child's
-- include what ran before the fork).
local qemu = require "qemu"
local stacks = require "qemu.callgraph_stacks"
local symbolize = require "qemu.symbolize"

local args = qemu.script {
  name = "callgraph",
  description = "folded call stacks weighted by executed instructions, for flame graphs",
  args = {
    { name = "outfile", help = "write the folded stacks to this file (default: the plugin log)" },
    { name = "max_depth", type = "int", default = 0, min = 0,
      help = "cut stacks after this many frames (0: no limit)" },
    { name = "weight", type = "enum", values = { "insns", "calls" }, default = "insns",
      help = "instructions executed per stack, or calls into it" },
    symbolize.script_args(true)[1], symbolize.script_args(true)[2],
  },
}
local named = symbolize.setup(args, true, qemu.symbolize_load)

local target = qemu.info.target
if not stacks.supported(target) then
  error(string.format("callgraph.lua: no call/return recognition for target %s "
    .. "(supported: x86_64, i386, aarch64)", tostring(target)), 0)
end

local out
if args.outfile then
  local err
  out, err = io.open(args.outfile, "w")
  if not out then error("callgraph.lua: outfile=" .. args.outfile .. ": " .. err, 0) end
end

local profile = stacks.new { max_depth = args.max_depth, weight = args.weight }
local insns = qemu.counter()
local names = {} -- raw symbol -> name usable in a folded line

local function clean(symbol)
  if not symbol then return nil end
  local name = names[symbol]
  if not name then
    name = symbol:gsub("[;%s]", "_")
    names[symbol] = name
  end
  return name
end

-- The function a block runs in: MODULE!SYMBOL where qemu.symbolize knows one; nil in a known
-- module without a symbol there (a PLT stub: it counts for the frame's function); QEMU's symbol
-- where no module is known (or with symbols=off).
local function block_symbol(tb)
  if named then
    local module, symbol = qemu.symbolize(tb.vaddr)
    if module then return clean(symbolize.frame(module, symbol)) end
  end
  return clean(tb[1].symbol)
end

-- With symbols on, a frame named after the hex address of its entry becomes MODULE+0xOFFSET.
local function entry_name(frame)
  local digits = frame:match("^0x(%x+)$")
  if not digits then return nil end
  local addr = tonumber(digits, 16)
  local name = addr and symbolize.format(qemu.symbolize(addr))
  return name and clean(name)
end

local function on_block(vcpu, b, count) -- count: the vCPU's instructions before this block
  profile:block(vcpu, count, b.vaddr, b.symbol, b.kind, b.next)
end

qemu.on_translate(function(tb)
  local last
  for insn in tb:insns() do
    insn:count(insns)
    last = insn
  end
  local kind = stacks.classify(last.disas, target)
  tb:on_exec(on_block, {
    vaddr = tb.vaddr,
    symbol = block_symbol(tb),
    kind = kind,
    next = kind == "call" and last.vaddr + last.size or nil,
  }, { counter = insns })
end)

-- A vCPU index is reused by a later thread in user mode: the ending thread's last instructions
-- join its own stack before the new thread starts one.
local function finish(vcpu) profile:finish(vcpu, insns:get(vcpu)) end
qemu.on_vcpu_exit(finish)
qemu.on_vcpu_init(finish)

qemu.on_exit(function()
  profile:finish_all(function(vcpu) return insns:get(vcpu) end)
  local lines = profile:folded()
  if named then lines = symbolize.rename_folded(lines, entry_name) end
  local chunk, total = {}, 0
  local function emit(text)
    if out then out:write(text) else qemu.write(text) end
  end
  for i, rec in ipairs(lines) do
    chunk[#chunk + 1] = string.format("%s %d\n", rec[1], rec[2])
    total = total + rec[2]
    if #chunk == 4096 or i == #lines then
      emit(table.concat(chunk))
      chunk = {}
    end
  end
  if out then
    out:close()
    local st = profile.stats
    qemu.printf("callgraph: stacks=%d weight=%d insns=%d calls=%d returns=%d unmatched=%d "
      .. "resyncs=%d\n", #lines, total, st.insns, st.calls, st.returns, st.unmatched, st.resyncs)
  end
end)
