-- qemu.callgraph_stacks: the pure logic of scripts/callgraph.lua. No QEMU here: it recognises
-- call and return instructions from their disassembly, keeps a shadow call stack per vCPU from a
-- stream of executed blocks, and accumulates weights per distinct stack in a trie that prints as
-- folded stacks ("root;caller;callee WEIGHT"), the input of flamegraph tools.
--
-- The stream: profile:block(vcpu, now, vaddr, symbol, kind, next) at the start of every executed
-- block, where `now` is the vCPU's count of executed instructions before that block (a native
-- counter), `symbol` the block's symbol (nil when unknown), `kind` "call"/"ret"/nil for the
-- block's last instruction, `next` the address after that call (its return address). A call or
-- return always ends a block, so it takes effect at the vCPU's next block:
--   * the instructions counted since the previous block belong to the stack as it was then;
--   * after a call the new block is the callee's entry: a frame is pushed, holding the return
--     address;
--   * after a return the new block is where it landed: frames are popped down to and including the
--     topmost frame whose return address is that block. When no frame matches (the return was a
--     jump in disguise, or returned out of a frame pushed before tracking began) nothing is
--     popped. A landing below the top frame (an unwinder returning past frames) is a resync:
--     every abandoned frame goes at once.
--
-- Names, as a sampling profiler shows them: each frame is named after the function its code is
-- running in, i.e. a caller after the function of its call instruction, the top frame after the
-- symbol of the block running now. So a tail call (a jump to another function) renames the top
-- frame from there on; a symbol-less block (a PLT stub) counts for the frame's current name, or,
-- before the frame has one, for the first name it gets; a frame that calls, returns or ends
-- without ever reaching a symbol is named after the hex address of its entry.
--
-- longjmp lands with a jump, not a return: so when the top frame turns to a function that is a
-- deeper frame's name, the frames above that one were abandoned and are popped (resync by symbol).
-- A frame's first name never triggers this, so plain recursion is safe. Cost: one string
-- comparison per block, and a search of the stack once per frame and new function name.
local M = {}

local u64 = require "qemu.u64"

--- Hex text of an address: "0x401136", for any u64 in either Lua (qemu.u64's digits).
function M.hex(v) return "0x" .. u64.hex(v) end

-- Instruction prefixes capstone prints before the mnemonic (x86).
local PREFIX = {
  rep = true, repe = true, repz = true, repne = true, repnz = true, bnd = true, notrack = true,
  lock = true, data16 = true, addr32 = true,
}

local X86 = {
  call = "call", callq = "call", callw = "call", calll = "call", lcall = "call", lcallq = "call",
  lcalll = "call", lcallw = "call",
  ret = "ret", retq = "ret", retw = "ret", retl = "ret", lret = "ret", lretq = "ret",
  lretl = "ret", lretw = "ret",
}

local AARCH64 = {
  bl = "call", blr = "call", blraa = "call", blrab = "call", blraaz = "call", blrabz = "call",
  ret = "ret", retaa = "ret", retab = "ret",
}

local BY_TARGET = { x86_64 = X86, i386 = X86, aarch64 = AARCH64 }

--- The targets classify() knows.
function M.supported(target)
  return BY_TARGET[target] ~= nil
end

--- "call", "ret" or nil for one instruction's disassembly on `target` ("x86_64", "i386",
-- "aarch64"). Leading prefixes (rep, bnd, notrack, ...) are skipped; case is ignored.
function M.classify(disas, target)
  local table_ = BY_TARGET[target]
  if not table_ or not disas then return nil end
  for word in disas:gmatch("%S+") do
    word = word:lower()
    if not PREFIX[word] then return table_[word] end
  end
  return nil
end

-- ---- the trie of stacks ----

local function new_node(name, parent)
  return { name = name, parent = parent, weight = 0, children = {} }
end

local function child(node, name)
  local c = node.children[name]
  if not c then
    c = new_node(name, node)
    node.children[name] = c
  end
  return c
end

local Profile = {}
Profile.__index = Profile

--- A new profile. opts.max_depth (default 0: unlimited): stacks deeper than this many frames are
-- cut, their weight joins the stack of their first max_depth frames. opts.weight: "insns"
-- (default: instructions executed with that stack on top) or "calls" (calls that entered a frame
-- with that stack, counted under the first name the new frame got).
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({}, Profile)
  self.max_depth = opts.max_depth or 0
  self.count_calls = opts.weight == "calls"
  self.root = new_node(nil, nil)
  self.states = {}
  self.stats = { calls = 0, returns = 0, unmatched = 0, resyncs = 0, insns = 0 }
  return self
end

-- The top frame (at `depth`) now runs `name`: its weight goes to the stack "caller path;name".
-- Pending weight (counted before the frame had a name) joins it.
function Profile:rename(frame, depth, name)
  local node = frame.parent
  if self.max_depth == 0 or depth <= self.max_depth then node = child(node, name) end
  if self.count_calls and not frame.cur and depth > 1 then node.weight = node.weight + 1 end
  frame.name, frame.cur = name, node
  if frame.pending > 0 then
    node.weight = node.weight + frame.pending
    frame.pending = 0
  end
end

local function ensure_named(self, stack, depth)
  local frame = stack[depth]
  if not frame.cur then self:rename(frame, depth, M.hex(frame.entry)) end
end

local function pop_to(self, s, k)
  -- frames k..depth go; only the top one can still be unnamed (a push names its caller)
  ensure_named(self, s.stack, s.depth)
  for i = s.depth, k, -1 do s.stack[i] = nil end
  s.depth = k - 1
end

local function attribute(self, s, now)
  local d = now - s.snap
  s.snap = now
  if d <= 0 then return end
  self.stats.insns = self.stats.insns + d
  if self.count_calls then return end
  local top = s.stack[s.depth]
  if top.cur then
    top.cur.weight = top.cur.weight + d
  else
    top.pending = top.pending + d
  end
end

-- The top frame runs a block of `symbol`, another function than its current name.
local function switch(self, s, symbol)
  local stack, depth = s.stack, s.depth
  local top = stack[depth]
  if not (top.checked and top.checked[symbol]) then
    local k = depth - 1
    while k >= 1 and stack[k].name ~= symbol do k = k - 1 end
    if k >= 1 then
      self.stats.resyncs = self.stats.resyncs + 1
      pop_to(self, s, k + 1)
      return
    end
    top.checked = top.checked or {}
    top.checked[symbol] = true
  end
  self:rename(top, depth, symbol)
end

--- One executed block (see the header).
function Profile:block(vcpu, now, vaddr, symbol, kind, next)
  local s = self.states[vcpu]
  if not s then
    s = { stack = { { parent = self.root, entry = vaddr, pending = 0 } }, depth = 1, snap = now }
    self.states[vcpu] = s
  else
    attribute(self, s, now)
    local stack, depth = s.stack, s.depth
    if s.kind == "call" then
      ensure_named(self, stack, depth)
      depth = depth + 1
      stack[depth] = { parent = stack[depth - 1].cur, entry = vaddr, ret = s.next, pending = 0 }
      s.depth = depth
      self.stats.calls = self.stats.calls + 1
    elseif s.kind == "ret" then
      self.stats.returns = self.stats.returns + 1
      local k = depth
      while k > 1 and stack[k].ret ~= vaddr do k = k - 1 end
      if k > 1 then
        if k < depth then self.stats.resyncs = self.stats.resyncs + 1 end
        pop_to(self, s, k)
      else
        self.stats.unmatched = self.stats.unmatched + 1
      end
    end
  end
  if symbol then
    local top = s.stack[s.depth]
    if not top.cur then
      self:rename(top, s.depth, symbol)
    elseif top.name ~= symbol then
      switch(self, s, symbol)
    end
  end
  s.kind, s.next = kind, next
end

--- The vCPU ended (or its index is being reused): its last instructions (up to `now`) join its
-- current stack, and its shadow stack is dropped.
function Profile:finish(vcpu, now)
  local s = self.states[vcpu]
  if not s then return end
  attribute(self, s, now)
  ensure_named(self, s.stack, s.depth)
  self.states[vcpu] = nil
end

--- Finishes every vCPU still running; counts(vcpu) gives each one's final instruction count.
function Profile:finish_all(counts)
  local vcpus = {}
  for v in pairs(self.states) do vcpus[#vcpus + 1] = v end
  table.sort(vcpus)
  for _, v in ipairs(vcpus) do self:finish(v, counts(v)) end
end

-- Bytewise order (Lua 5.4's string `<` follows the locale's collation).
local bytes_lt = require("qemu.report").bytes_lt

--- The folded stacks with a non-zero weight, as { path, weight } pairs in depth-first order,
-- siblings sorted by name (bytewise): the same order as sorting the paths frame by frame.
function Profile:folded()
  local out = {}
  -- iterative depth-first walk: a deep recursion in the guest makes a deep trie
  local todo = { { self.root, nil } }
  while #todo > 0 do
    local item = table.remove(todo)
    local node, path = item[1], item[2]
    if path and node.weight > 0 then out[#out + 1] = { path, node.weight } end
    local names = {}
    for name in pairs(node.children) do names[#names + 1] = name end
    table.sort(names, bytes_lt)
    for i = #names, 1, -1 do -- pushed in reverse: popped in order
      local name = names[i]
      todo[#todo + 1] = { node.children[name], path and (path .. ";" .. name) or name }
    end
  end
  return out
end

--- Sum of all stacks' weights.
function Profile:total()
  local sum = 0
  for _, rec in ipairs(self:folded()) do sum = sum + rec[2] end
  return sum
end

return M
