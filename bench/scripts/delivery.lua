-- bench: what one queued event costs to deliver (bench/run.py's "queued delivery" table, vs
-- cref mode=insn_empty or mode=mem_empty). kind= picks the kind of event; the Lua function does
-- as little as it can (adds 1 to an upvalue), so the run's extra time over the C plugin's empty
-- callback is qlua's delivery. Every instruction (or access) is also counted natively, as the C
-- plugin counts it with an inline add, so both sides do that alike; at exit the script prints
-- both counts ("events LUA native NATIVE"), which must agree: nothing was lost on the way.
local args = qemu.script {
  name = "delivery",
  description = "one Lua call (or tracer event) per instruction or memory access, doing nothing",
  args = {
    { name = "kind", type = "enum", required = true,
      values = { "exec", "exec_data", "exec_counter", "mem", "trace", "trace_mem" },
      help = "exec: insn:on_exec(fn); exec_data: insn:on_exec(fn, data); exec_counter: "
        .. "insn:on_exec(fn, nil, { counter = c }); mem: insn:on_mem(fn); trace: insn:trace(t); "
        .. "trace_mem: insn:trace_mem(t)" },
  },
}

local native = qemu.counter()
local seen = 0
local kind = args.kind
qemu.count_every((kind == "mem" or kind == "trace_mem") and "mem" or "insn", native)

local register
if kind == "exec" then
  local function on_insn() seen = seen + 1 end
  register = function(insn) insn:on_exec(on_insn) end
elseif kind == "exec_data" then
  local function on_insn() seen = seen + 1 end
  register = function(insn) insn:on_exec(on_insn, insn.vaddr) end
elseif kind == "exec_counter" then
  local function on_insn() seen = seen + 1 end
  local opts = { counter = native }
  register = function(insn) insn:on_exec(on_insn, nil, opts) end
elseif kind == "mem" then
  local function on_access() seen = seen + 1 end
  register = function(insn) insn:on_mem(on_access) end
else
  -- a tracer's function sees every event: it reads one field of each (every size is >= 1)
  local t = qemu.tracer { fn = function(events, n)
    for i = 1, n do
      if events[i].size ~= 0 then seen = seen + 1 end
    end
  end }
  if kind == "trace" then
    register = function(insn) insn:trace(t) end
  else
    register = function(insn) insn:trace_mem(t) end
  end
end

qemu.on_translate(function(tb) for insn in tb:insns() do register(insn) end end)
qemu.on_exit(function() qemu.printf("events %d native %d\n", seen, native:sum()) end)
