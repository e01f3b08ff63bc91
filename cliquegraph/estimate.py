"""Training memory from the IR, before anything is built: will one training step fit?

    est = estimate_memory(net, batch=64)          # MemoryEstimate, bytes; nothing is allocated
    check_fits(est)                               # MemoryEstimateError when it cannot fit

The estimate is the peak of one step of the bundled runner (forward, backward, Nesterov SGD
with weight decay; the previous step's gradients are still alive during the forward, as the
runner zeroes them after it): weights, gradients and momentum buffers (exactly the parameter
count times their bytes), BatchNorm's running statistics, and a walk over the network in the
order the default lowering runs it, adding up what each unit keeps for backward (its inputs
when they are the network's layers, dropout's 1-byte masks, a bottleneck's middle map, a max
pool's int64 indices, a kept concatenation with --no-memory-efficient, BN-ReLU's output under
torch.compile, counted as its plain ops) and, at each unit, the transient tensors of its
forward and backward (the recomputed concatenation and BN-ReLU, the conv's input gradient,
gradients of layers whose producer has not run its backward yet). On CPU the unit's
temporaries live in scratch buffers that stay allocated between steps (units.py), so they
count whole; on CUDA they are fresh and only the largest counts. All but the parameters and
the concatenated weights grows linearly with the batch, so the estimate at another batch, or
the largest batch that fits, needs no second walk.

Calibrated on this project's machine (2-core VM, torch 2.13.0 CPU, fp32, NHWC) against the
ru_maxrss of a fresh process running 1 warm-up + 2 steps (`cliquegraph bench --variants
default`): estimate / measured 0.99-1.20 over 16 configurations, CliqueNet-CIFAR k=12..256 at
batch 4-64, DenseNet-40 and DenseNet-BC-100 at 16-64, S0 at 224x224, batch 2-4, and
--no-memory-efficient (1.12-1.20, the high end); 1.05-1.14 against the README's S3 figures,
batch 1-16. The runner's own peak on the README's main job (digits, batch 64) is 655-690 MiB
against an estimate of 600: it also holds scikit-learn, the data and the evaluation.
Residual networks (merge add, units written in the spec): the activations term is what the
forward saves for backward (0.999-1.000: ResNet-20/50, PreAct-18, WRN, PyramidNet, ResNeXt-29),
and the estimate 0.995-1.16 of the measured peak (ResNet-20 at batch 16-256, ResNet-56, WRN-16-4,
PyramidNet-110, PreAct-18, ResNet-50 at 16).
Not calibrated for the depthwise and multi-branch networks: at batch 16 the estimate was 1.32x
MobileNet v2's peak RSS as `cliquegraph bench --variants default` measured it, 0.82x
GoogLeNet's and 0.75x ShuffleNet v2's (a `branches` op is counted as one plain op, the chains
fused inside its paths unseen).
glibc keeps freed heap blocks resident, so the CPU figure adds CPU_HEAP_SLACK of the
batch-sized memory to the tensors' own peak. The CUDA terms (fresh temporaries, autocast, the
caching allocator) have not been measured: no GPU has been lent to the project yet.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

from . import ir
from .ops import KINDS
from .elaborate import count_params
from .errors import UserError
from .fuse import CONV_UNIT, match
from .names import ACT_SLOT, CAT_SLOT, GRAD_SLOT, UNIFORMS_SLOT

GiB = 2 ** 30
MiB = 2 ** 20
# The process around the step: Python, torch and its CPU libraries, the compiler, the data
# (measured here: 315-340 MiB resident in `cliquegraph bench`'s workers before their first
# step, 420-440 MiB in the runner before it trains on digits, scikit-learn loaded)
CPU_RUNTIME = 380 * MiB
# RSS above the live tensors' peak on CPU, as a fraction of the activation-sized memory: glibc
# keeps blocks below its mmap threshold (up to 32 MB) resident after they are freed.
CPU_HEAP_SLACK = 0.4
# CUDA: cuDNN workspaces and the caching allocator's fragmentation (not yet measured).
CUDA_RESERVE = 512 * MiB
CUDA_SLACK = 0.15


class MemoryEstimateError(UserError):
    """A training step that will not fit in the memory available (one paragraph: the
    estimate, its largest terms, the memory available and what to do)."""

    def __init__(self, message, estimate=None, available=None, largest_batch=None):
        super().__init__(message)
        self.estimate, self.available, self.largest_batch = estimate, available, largest_batch


@dataclass(frozen=True)
class MemoryEstimate:
    """One training step's peak memory in bytes, as the sum of what makes it up at the peak.

    weights, gradients, optimizer (momentum buffers) and buffers (BatchNorm running statistics)
    do not depend on the batch; activations are the tensors the step keeps for backward (the
    input batch included); weight_copies the concatenated W_ij each multi-input update keeps
    for backward (and autocast's 16-bit weights), which do not depend on the batch either;
    workspace is the rest at the peak (scratch buffers, a unit's temporaries, gradients of
    layers waiting for their producer's backward); overhead is the allocator's (freed heap
    kept resident on CPU, cuDNN and fragmentation on CUDA); runtime the process itself on CPU
    (on CUDA what the process holds outside the allocator, its context, is already missing
    from the free memory the device reports)."""
    network: str
    batch: int
    device: str
    params: int
    weights: int
    gradients: int
    optimizer: int
    buffers: int
    activations: int
    weight_copies: int
    workspace: int
    overhead: int
    runtime: int
    total: int
    # the model behind the figures: the peak above `fixed` is
    # max(batch * per_image + per_step, floor), plus the allocator's overhead
    per_image: int     # activations and workspace of one image at the peak
    per_step: int      # what backward keeps or makes whatever the batch: concatenated W_ij
    floor: int         # the optimizer step's temporaries (the peak when the batch is tiny)

    @property
    def fixed(self) -> int:
        return self.runtime + self.weights + self.gradients + self.optimizer + self.buffers

    def at(self, batch: int) -> "MemoryEstimate":
        """The same network and options at another batch size."""
        activations = self.activations * batch // self.batch
        step = batch * self.per_image + self.per_step
        copies = self.per_step if step >= self.floor else 0  # else the optimizer's step peaks
        dynamic = max(step, self.floor)
        overhead = _overhead(self.device, batch * self.per_image)
        return replace(self, batch=batch, activations=activations, weight_copies=copies,
                       workspace=dynamic - activations - copies, overhead=overhead,
                       total=self.fixed + dynamic + overhead)

    def largest_batch(self, available: int) -> int:
        """The largest batch whose estimate fits in `available` bytes (0: not even one)."""
        if self.at(1).total > available:
            return 0
        low, high = 1, 2
        while self.at(high).total <= available:
            low, high = high, high * 2
            if high > 2 ** 40:
                return low
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if self.at(mid).total <= available else (low, mid)
        return low

    def terms(self) -> dict:
        """The named terms, largest first (for messages)."""
        names = {"weights": self.weights, "gradients": self.gradients,
                 "momentum": self.optimizer, "activations": self.activations,
                 "concatenated weights": self.weight_copies, "workspace": self.workspace,
                 "allocator": self.overhead, "runtime": self.runtime,
                 "BN statistics": self.buffers}
        return dict(sorted(names.items(), key=lambda kv: -kv[1]))

    def to_json(self) -> dict:
        return {"batch": self.batch, "device": self.device, "total": self.total,
                "weights": self.weights, "gradients": self.gradients,
                "optimizer": self.optimizer, "buffers": self.buffers,
                "activations": self.activations, "weight_copies": self.weight_copies,
                "workspace": self.workspace, "overhead": self.overhead,
                "runtime": self.runtime, "per_image": self.per_image}

    def describe(self) -> str:
        """'about 9.8 GiB (activations ..., weights with gradients and momentum ...)': the
        total and its four largest terms."""
        terms = {k: v for k, v in self.terms().items()
                 if k not in ("weights", "gradients", "momentum")}
        terms["weights with their gradients and momentum"] = (self.weights + self.gradients
                                                              + self.optimizer)
        big = [f"{name} {gib(v)}" for name, v in sorted(terms.items(), key=lambda kv: -kv[1])
               if v][:4]
        return f"about {gib(self.total)} ({', '.join(big)})"


def gib(n: float) -> str:
    """Bytes as '3.2 GiB' / '512 MiB'."""
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def estimate_memory(net: ir.Network, batch: int, *, device: str = "cpu", amp: str = "off",
                    dtype_bytes: int = 4, memory_efficient: bool = True,
                    channels_last: bool = True, compiled: bool = False,
                    momentum: float = 0.9, ddp: bool = False) -> MemoryEstimate:
    """The peak memory of one training step of `net` at `batch` images (per process), from the
    IR alone: instant for any spec `elaborate` accepts.

    amp: bf16 | fp16 | off; the runner uses it on CUDA only (activations then take 2 bytes; the
    units stay lean, in 16 bits). dtype_bytes: of the parameters and (without amp) activations.
    compiled: torch.compile; counted as the plain ops it starts from, an upper bound (Inductor
    may recompute BN-ReLU rather than keep it). momentum: SGD keeps one buffer per parameter
    unless it is 0. ddp: DistributedDataParallel keeps its gradient buckets, one more copy of
    the gradients."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    device = "cuda" if str(device).startswith("cuda") else "cpu"
    half = amp in ("bf16", "fp16") and device == "cuda"
    act = 2 if half else dtype_bytes
    lean = not compiled and (half or dtype_bytes in (4, 8))
    walk = _Walk(act, dtype_bytes, lean=lean, memory_efficient=memory_efficient,
                 scratch=lean and device == "cpu")
    walk.network(net, channels_last)
    params = count_params(net)
    p_bytes = params * dtype_bytes
    # the optimizer's temporaries: grad + wd * param and the Nesterov step, per tensor on CPU,
    # for all of them at once (foreach) on CUDA
    floor = p_bytes if device == "cuda" else 2 * walk.largest_param * dtype_bytes
    per_step = walk.wpeak
    if half:
        per_step += params * 2  # autocast's 16-bit weights, saved by the convs for backward
    per_image = walk.peak + sum(walk.slots.values())
    est = MemoryEstimate(
        network=net.name, batch=1, device=device, params=params, weights=p_bytes,
        gradients=p_bytes * (2 if ddp else 1), optimizer=p_bytes if momentum else 0,
        buffers=walk.bn_channels * 2 * dtype_bytes, activations=walk.kept, weight_copies=0,
        workspace=0, overhead=0, runtime=CPU_RUNTIME if device == "cpu" else 0, total=0,
        per_image=per_image, per_step=per_step, floor=floor)
    return est.at(batch)


def _overhead(device: str, images: int) -> int:
    """The allocator's share, from the batch's activation-sized memory."""
    if device == "cpu":
        return round(CPU_HEAP_SLACK * images)
    return round(CUDA_SLACK * images) + CUDA_RESERVE


# ---- the walk ---------------------------------------------------------------------------------

class _Tensor:
    """A forward value of one image: its bytes, and whether backward keeps it."""
    __slots__ = ("bytes", "kept")

    def __init__(self, nbytes, kept=False):
        self.bytes, self.kept = nbytes, kept


class _Walk:
    """Runs the network's units in forward order for one image, as lower.py builds them.

    kept: bytes kept for backward so far. peak: the largest of kept + a unit's temporaries,
    in its forward, or in its backward, which runs while what was kept up to the unit is still
    alive, with `pending`, the gradients that wait for their producer's backward. slots: CPU
    scratch (units._Scratch), the largest request per slot."""

    def __init__(self, act, p_bytes, *, lean, memory_efficient, scratch):
        self.act, self.p_bytes = act, p_bytes
        self.lean, self.memory_efficient, self.scratch = lean, memory_efficient, scratch
        self.kept = self.peak = self.pending = 0
        # batch-independent: concatenated weights kept for backward, and the peak of those
        # with a weight gradient's temporary
        self.wkept = self.wpeak = 0
        self.slots = {}
        self.bn_channels = 0
        self.largest_param = 0

    def keep(self, *tensors):
        for t in tensors:
            if not t.kept:
                t.kept = True
                self.kept += t.bytes

    def fwd(self, transient):
        self.peak = max(self.peak, self.kept + transient)

    def bwd(self, transient):
        self.peak = max(self.peak, self.kept + self.pending + transient)

    def temp(self, slot, nbytes):
        """A unit's temporary: scratch `slot` on CPU (counted once, in slots), else fresh."""
        if self.scratch:
            self.slots[slot] = max(self.slots.get(slot, 0), nbytes)
            return 0
        return nbytes

    def param(self, elems):
        self.largest_param = max(self.largest_param, elems)

    def weight(self, w_elems, multi_w=False):
        """A block conv's weight: its gradient's temporary, and with multi_w the W_ij
        concatenated, which the conv keeps for backward (batch-independent)."""
        grad_w = w_elems * self.p_bytes
        if multi_w:
            self.wkept += grad_w
        self.wpeak = max(self.wpeak, self.wkept + grad_w)

    def conv_unit(self, xs, hw, c_out, p, w_elems, keep_out=True, bn=True, multi_w=False,
                  out_hw=None):
        """BN-ReLU-conv(-dropout) over the concatenation of xs (units.BNReLUConv); hw is the
        input's H*W, out_hw the output's where it differs (a conv without padding)."""
        x = sum(t.bytes for t in xs)
        o = c_out * (hw if out_hw is None else out_hw)
        out = _Tensor(o * self.act)
        mask = o if p else 0
        uniforms = o * 4 if p else 0
        self.weight(w_elems, multi_w)
        if bn:
            self.bn_channels += x // (hw * self.act)
        multi = len(xs) > 1
        if self.lean:
            if multi and self.memory_efficient:
                self.keep(*xs)
                work = self.temp(CAT_SLOT, x)        # the concatenation, BN-ReLU over it
            else:
                if multi:
                    self.kept += x                   # the kept concatenation
                else:
                    self.keep(*xs)
                work = x                             # BN-ReLU's output, fresh
            self.fwd(work + self.temp(UNIFORMS_SLOT, uniforms) + out.bytes + mask)
            self.kept += mask
            if keep_out:
                self.keep(out)
            work = 2 * out.bytes + x                 # dL/dout, its dropped copy, dL/dx
            if multi and self.memory_efficient:
                work += self.temp(CAT_SLOT, x)       # the concatenation again
            self.bwd(work + self.temp(ACT_SLOT, x))  # and BN-ReLU
            return out
        # plain ops (torch.compile, as an upper bound): BN keeps the concatenation, ReLU its output
        self.keep(_Tensor(x) if multi else xs[0])
        self.fwd(2 * x)                              # BN's output while ReLU runs
        self.kept += x
        self.fwd(2 * out.bytes + uniforms + mask)
        self.kept += mask
        if keep_out:
            self.keep(out)
        self.bwd(2 * out.bytes + 3 * x)              # the ops' gradients, one after another
        return out

    def pool_unit(self, xs, hw):
        """BN-ReLU-global pool over the concatenation of xs (units.BNReLUPool)."""
        x = sum(t.bytes for t in xs)
        self.bn_channels += x // (hw * self.act)
        multi = len(xs) > 1
        vec = _Tensor(x // hw)
        if self.lean:
            self.keep(*xs)
            self.fwd(self.temp(CAT_SLOT if multi else ACT_SLOT, x))
            # backward: the concatenation, BN-ReLU and dL/dz again; the inputs' gradients
            self.bwd(x + (self.temp(CAT_SLOT, x) if multi else 0) + self.temp(ACT_SLOT, x)
                     + self.temp(GRAD_SLOT, x))
            return vec
        self.keep(_Tensor(x) if multi else xs[0])
        self.fwd(2 * x)
        self.kept += x
        self.bwd(3 * x)
        return vec

    def plain(self, op: ir.Op, t: _Tensor, stats=True, param=True) -> _Tensor:
        """One op as its own module (or function). stats: count its running statistics
        (False where a module called before owns them); param: its largest parameter (False
        for a unit's first conv, whose weight is the W_ij concatenated)."""
        kind = KINDS[op.kind]
        n = math.prod(op.out_shape)
        out = _Tensor(n * self.act)
        if stats:
            self.bn_channels += kind.stats(op)
        if param:
            self.param(kind.largest(op))
        if kind.saves == "input":
            self.keep(t)                             # saved for its backward
        work = 0 if t.kept else t.bytes
        if kind.draws:
            work += self.temp(2, n * 4)              # one float32 random number per element
        if kind.scratch:
            work += out.bytes
        self.kept += n * kind.kept
        self.fwd(work + out.bytes)
        if kind.saves == "output":
            self.keep(out)
        self.bwd(2 * t.bytes + out.bytes)            # dL/dout and dL/din
        return out

    def section(self, ops, xs):
        """A stem, transition or head: lean units where fuse.py makes them (its `match`),
        plain ops (after concatenating xs) elsewhere."""
        j = 0
        while j < len(ops):
            op, m = ops[j], match(ops[j:j + 4])
            hw = math.prod(op.in_shape[1:]) if len(op.in_shape) == 3 else 1
            if m and m.unit == CONV_UNIT:
                conv = ops[j + 2]
                w = KINDS["conv"].largest(conv)
                self.param(w)
                xs = [self.conv_unit(xs, hw, conv.out_shape[0], m.p, w, keep_out=False)]
                j += m.length
                continue
            if m:
                xs = [self.pool_unit(xs, hw)]
                j += m.length
                continue
            if len(xs) > 1:
                xs = [_Tensor(sum(t.bytes for t in xs))]
            xs = [self.plain(op, xs[0])]
            j += 1
        return xs

    def block(self, b: ir.Block, x0: _Tensor):
        g, n = b.graph, b.layers
        value = b.width * math.prod(b.hw) * self.act
        for _, _, d in g.edges(data=True):
            if d["kernel"] is not None:
                self.param(d["out_channels"] * d["in_channels"] * d["kernel"][0] *
                           d["kernel"][1])
        # the updates as schedule() orders them, counted per layer (a 1000-layer block with
        # 16 stages is 16,000 updates: no input lists)
        stage1, loop = [], []
        for i in range(1, n + 1):
            preds = list(g.predecessors(i))
            stage1.append(([x0] if 0 in preds else []) +
                          [_Tensor(value, True)] * sum(1 for l in preds if 1 <= l < i))
            loop.append(sum(1 for l in preds if 1 <= l != i))
        waiting = self.waiting(b, x0, value)
        self.pending += waiting
        seen = set()  # layers that have run: their modules other than BNs are counted
        for s in range(1, b.stages + 1):
            for i in range(1, b.updates(s) + 1):
                xs = stage1[i - 1] if s == 1 else [_Tensor(value, True)] * loop[i - 1]
                if not xs:
                    continue
                bn = s <= 2 or b.bn != "shared"  # `bn shared`: one BN per layer for the loop
                self.update(b, xs, x0 if s == 1 and xs[0] is x0 else None, bn, i not in seen)
                seen.add(i)
        self.pending -= waiting

    def waiting(self, b: ir.Block, x0: _Tensor, value: int) -> int:
        """The gradients of the block's values that wait, during its backward, for the
        update that made them. merge cat: about one stage of the layers (calibrated).
        merge add in one stage: at each update's backward, the values made before it and
        read by it or after it (their gradients from the additions are there already: a
        chain's is its input's, one layer), the largest such count."""
        if b.merge != "add" or b.stages > 1:
            return b.layers * value
        from .topology import stage1_inputs
        last = {}  # source -> the last update reading it
        for i in range(1, b.layers + 1):
            for l in stage1_inputs(b.graph, i):
                last[l] = i
        starts = [0] * (b.layers + 2)  # a difference array over updates 1..n
        for l, i in last.items():
            nbytes = x0.bytes if l == 0 else value
            starts[l + 1] += nbytes
            starts[i + 1] -= nbytes
        live = peak = 0
        for i in range(1, b.layers + 1):
            live += starts[i]
            peak = max(peak, live)
        return peak

    def update(self, b: ir.Block, xs, x0, bn: bool, first_run: bool):
        """One update as lower.py builds it: its unit's ops over its inputs xs (x0: X_0 when
        it reads it), each chain that fuse.py's `match` accepts as its lean unit (the unit's
        first conv reading the inputs, with the W_ij concatenated when several; a bn relu
        conv in the body reading the op before it), the others as plain ops; with merge add
        then the additions of the inputs (X_0 through the shortcut ops where its shape
        differs) and the post ops. bn: count the update's BN statistics (per stage, or the
        loop's shared ones once); first_run: the layer's first update, which counts its
        modules' other statistics (a cbam's BN, the shortcut's)."""
        unit = b.unit_of([0] if x0 is not None else [])
        # a unit that starts with branches has no first conv and reads one input as it is
        first = len(unit.pre) if unit.first is not None else -1
        ops = list(unit.ops)
        in_hw = math.prod(ops[0].in_shape[1:])
        c_in = sum(t.bytes for t in xs) // (in_hw * self.act)
        for j in range(first + 1):  # they see all the inputs (lower.py)
            shape = (c_in,) + ops[j].in_shape[1:]
            ops[j] = replace(ops[j], in_shape=shape,
                             out_shape=shape if j < first else ops[j].out_shape)
        # the shortcut reads the pre ops' output: their last node has two users, so no
        # chain runs through it (fuse._chain)
        shared_pre = (b.merge == "add" and x0 is not None and b.shortcut and first > 0
                      and b.shortcut_from == "pre")

        def fused(j):
            m = match(ops[j:j + 4])
            if m is None or m.unit != CONV_UNIT or \
                    (shared_pre and j <= first - 1 < j + m.length - 1):
                return None
            return m

        def kept_by_next(j):  # whether what op j reads is kept for backward by op j
            if j == len(ops):  # the layer (kept, read by later updates) or the addition's
                return b.merge != "add"
            return fused(j) is not None or KINDS[ops[j].kind].saves == "input"

        y, pre_out, j = list(xs), None, 0
        while j < len(ops):
            op, m = ops[j], fused(j)
            if m:
                conv = ops[j + 2]
                w = KINDS["conv"].largest(conv)
                if j + 2 != first:  # a body weight, the layer's (the W_ij are counted above)
                    self.param(w)
                nxt = j + m.length
                y = [self.conv_unit(y, math.prod(op.in_shape[1:]), conv.out_shape[0], m.p, w,
                                    keep_out=kept_by_next(nxt), bn=bn,
                                    multi_w=j + 2 == first and len(y) > 1,
                                    out_hw=math.prod(conv.out_shape[1:]))]
                j = nxt
                continue
            if len(y) > 1:
                y = [_Tensor(sum(t.bytes for t in y))]  # the concatenation
            if op.kind == "conv":
                self.weight(KINDS["conv"].largest(op), multi_w=j == first and len(xs) > 1)
            y = [self.plain(op, y[0], stats=bn if op.kind == "bn" else first_run,
                            param=j != first)]
            if j == first - 1:
                pre_out = y[0]
            j += 1
        out = y[0]
        if b.merge == "add":
            out = self.residual(b, out, xs, x0, pre_out, first_run)
        self.keep(out)  # the layer X_i

    def residual(self, b: ir.Block, y: _Tensor, xs, x0, pre_out, first_run) -> _Tensor:
        """merge add: y plus each input (X_0 through the shortcut ops where its shape
        differs, reading the pre ops' output with `shortcut_from pre`), then the post ops."""
        terms = [y]
        for t in xs:
            if t is x0 and not b.add_x0:
                continue
            if t is x0 and b.shortcut:
                if b.shortcut_from == "pre" and pre_out is not None:
                    # X_0's channels of it (a view when there are several inputs)
                    t = pre_out if len(xs) == 1 else _Tensor(x0.bytes, pre_out.kept)
                for op in b.shortcut:
                    t = self.plain(op, t, stats=first_run)
            terms.append(t)
        out = terms[0]
        for t in terms[1:]:
            total = _Tensor(out.bytes)
            self.fwd((0 if out.kept else out.bytes) + (0 if t.kept else t.bytes)
                     + total.bytes)
            self.bwd(2 * total.bytes)                # dL/dsum, an input's accumulated one
            out = total
        for op in b.post:
            out = self.plain(op, out)
        return out

    def network(self, net: ir.Network, channels_last: bool):
        act = self.act
        c, h, w = net.input_shape
        x = _Tensor(c * h * w * 4, kept=True)        # the batch, fp32, held by the loop
        self.kept += x.bytes
        if channels_last:
            x = _Tensor(x.bytes)                     # its NHWC copy

        def values(b, sources):  # at the layers' size (the block's input's / its stride)
            hw = math.prod(b.hw)
            return [_Tensor(b.channels_of((s,)) * hw * act, True) for s in sources]

        # the heads' backward runs first: the gradients of each block's feature then wait
        # for that block's backward
        feature = {b.index: values(b, b.feature) for b in net.blocks}
        waiting = {s: sum(t.bytes for t in feature[s]) for s in net.scales}
        xs, vecs = [x], []
        for p in ir.parts(net):
            if p.kind == "stem":
                xs = self.section(p.ops, xs)
                self.keep(*xs)
            elif p.kind == "block":
                self.pending = sum(v for s, v in waiting.items() if s < p.index)
                self.block(p.block, xs[0])
            elif p.kind == "transition":
                self.pending = sum(v for s, v in waiting.items() if s <= p.index)
                xs = self.section(p.ops, values(p.block, p.block.transit))
                self.keep(*xs)
            elif p.kind == "scale":
                self.pending = sum(waiting.values())
                vecs += self.section(p.ops, feature[p.index])
            else:
                vec = _Tensor(sum(t.bytes for t in vecs))
                self.keep(vec)
                self.keep(*self.section(p.ops, [vec]))
        self.pending = 0




# ---- the machine ------------------------------------------------------------------------------

def available_memory(device: str = "cpu") -> int:
    """Bytes this process can still get: on CPU MemAvailable (or free pages), lowered to what
    the cgroup's memory.max leaves; on CUDA the device's free memory (torch.cuda.mem_get_info)."""
    if str(device).startswith("cuda"):
        import torch
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    avail = _meminfo_available()
    limit = _cgroup_room()
    return min(avail, limit) if limit is not None else avail


def _meminfo_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 ** 62  # nothing to go on: do not refuse


def _cgroup_room(root="/sys/fs/cgroup", listing="/proc/self/cgroup"):
    """What this process's cgroup still allows (limit - usage), or None when unlimited:
    cgroup v2's memory.max and memory.current, else v1's memory.limit_in_bytes and
    memory.usage_in_bytes; its own group's, else the root's."""
    own = {}
    try:
        with open(listing) as fh:
            for line in fh:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                own[controllers] = path.rstrip("/")
    except (OSError, ValueError):
        pass
    candidates = [(d, "memory.max", "memory.current")
                  for d in dict.fromkeys((root + own.get("", ""), root))]
    v1 = next((path for names, path in own.items() if "memory" in names.split(",")), "")
    candidates += [(d, "memory.limit_in_bytes", "memory.usage_in_bytes")
                   for d in dict.fromkeys((f"{root}/memory{v1}", f"{root}/memory"))]
    for d, limit_file, usage_file in candidates:
        try:
            with open(os.path.join(d, limit_file)) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if not text.isdigit():  # "max": no limit
            return None
        try:
            with open(os.path.join(d, usage_file)) as fh:
                used = int(fh.read().strip())
        except (OSError, ValueError):
            used = 0
        return max(int(text) - used, 0)
    return None


def _resident() -> int:
    """This process's resident memory now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# ---- the check --------------------------------------------------------------------------------

def check_fits(estimate: MemoryEstimate, available: int | None = None, *,
               processes: int = 1, world_size: int = 1) -> int:
    """Raise MemoryEstimateError when the step cannot fit; return the memory available.

    available: bytes, default measured now (available_memory), in which case the process's own
    resident memory (up to the runtime the estimate counts) is not charged twice. processes:
    CPU processes of this run on this machine, sharing its memory. world_size: processes in all,
    so that the batch suggested is the total `--batch-size`."""
    measured = available is None
    if measured:
        available = available_memory(estimate.device)
    room = available // max(processes, 1) if estimate.device == "cpu" else available
    need = estimate.total
    if measured and estimate.device == "cpu":
        room += min(_resident(), estimate.runtime)
    if need <= room:
        return available
    largest = estimate.largest_batch(room)
    where = (f"this machine has {gib(available)} available" if estimate.device == "cpu" else
             f"the GPU has {gib(available)} free")
    if processes > 1 and estimate.device == "cpu":
        where += f", {gib(room)} for each of its {processes} processes"
    per = " per process" if world_size > 1 else ""
    head = (f"training {estimate.network} needs {estimate.describe()} at batch "
            f"{estimate.batch}{per}, but {where}.")
    if largest:
        advice = (f"Use --batch-size {largest * world_size} or less (the largest that fits), "
                  f"a smaller spec (--set fewer or narrower layers)")
    else:
        advice = (f"Not even batch 1 fits (it needs {gib(estimate.at(1).total)}, weights "
                  f"with their gradients and momentum "
                  f"{gib(estimate.weights + estimate.gradients + estimate.optimizer)}); use a "
                  f"smaller spec (--set fewer or narrower layers)")
    raise MemoryEstimateError(f"{head} {advice}, or --ignore-memory-estimate to train anyway "
                              "(the estimate is meant to err on the high side).",
                              estimate, available, largest * world_size)
