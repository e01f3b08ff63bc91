"""The lean units fuse.py puts in place of the lowered chains BN -> ReLU -> conv (-> dropout)
(the unit g of a clique update, reading the shared, concatenated weights as an argument, and a
transition's BN-ReLU-conv) and BN -> ReLU -> global pool (heads); and the network's dropout.

In training each unit runs as one autograd Function written for this machine's costs:

- it keeps only its inputs (which the network holds anyway) and the dropout's bool mask, and
  recomputes the concatenation and BN-ReLU in backward (memory-efficient DenseNet's trade);
- batch statistics come from BatchNorm's own kernel, once per update;
- no full-size tensor is freshly allocated on CPU except the conv's input gradient, which then
  becomes BN's input gradient in place: temporaries live in reused scratch buffers, since a
  fresh tensor above glibc's 32 MB mmap threshold costs more in page faults than in compute
  (on CUDA they are ordinary tensors from the caching allocator);
- under autocast (bf16/fp16) it runs in autocast's dtype, BN's parameters and statistics in
  fp32.

Under torch.compile a training unit is traced as `_Traced`, the same trade in plain ops that
inductor fuses (lower.Compiled compiles so that the recomputation stays in backward).
Evaluation and export see the plain ops.
"""

from __future__ import annotations

import contextlib
import math
import threading

import torch
import torch.nn.functional as F
from torch import nn

from .names import ACT_SLOT, CAT_SLOT, GRAD_SLOT, UNIFORMS_SLOT


class _Scratch(threading.local):
    """Reusable full-size CPU buffers for temporaries that never leave a unit: the
    concatenated input and the recomputed BN-ReLU activation.

    On CPU, tensors this large are mmapped fresh on every allocation and the kernel's page
    faults cost more than the kernel itself (a 113 MB cat: 40 ms fresh, 16 ms into a buffer
    already touched). Each thread keeps one flat buffer per slot, grown to the
    largest request; a unit's temporaries are views of it. `release_scratch()` frees them."""

    def __init__(self):
        self.buffers = {}

    def get(self, slot: str, like_shape, dtype, device, channels_last: bool):
        n = math.prod(like_shape)
        key = (slot, dtype, device)
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < n:
            self.buffers.pop(key, None)  # free the old one before the new one is allocated
            buf = self.buffers[key] = torch.empty(n, dtype=dtype, device=device)
        if channels_last:
            b, c, h, w = like_shape
            return buf[:n].view(b, h, w, c).permute(0, 3, 1, 2)
        return buf[:n].view(like_shape)


_scratch = _Scratch()


def keep_freed_memory() -> bool:
    """Have glibc serve large tensors from its heap and keep freed memory for the next ones
    (mmap threshold 1 GiB, trim threshold 2 GiB) instead of mapping each one fresh and
    returning it. A training step frees and reallocates the same sizes every time, and on CPU
    the page faults of fresh mappings cost more than the kernels writing them (an affine
    ReLU over 45 MB: 34 ms fresh, 8.5 ms from the heap); what the scratch buffers above do
    for the units, this does for everything else (inductor's buffers, the convs' outputs).
    Process-wide: the runner and the benchmark's workers call it on CPU before their first
    step. False where the C library is not glibc (nothing changes)."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 31))


def release_scratch():
    """Free this thread's scratch buffers (they are reallocated on the next training step)."""
    _scratch.buffers.clear()


def _buffer(slot: str, shape, dtype, device, nhwc: bool = False):
    """An uninitialised tensor: a view of this thread's scratch on CPU, else a fresh one."""
    if device.type == "cpu" and not torch.compiler.is_compiling():
        return _scratch.get(slot, shape, dtype, device, nhwc)
    return torch.empty(shape, dtype=dtype, device=device,
                       memory_format=torch.channels_last if nhwc else torch.contiguous_format)


def _nhwc(x) -> bool:
    return (x.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))


def _cat(xs, slot):
    """cat(xs, 1) into scratch (the result must not outlive the unit)."""
    x0 = xs[0]
    shape = (x0.shape[0], sum(t.shape[1] for t in xs), *x0.shape[2:])
    return torch.cat(xs, 1, out=_buffer(slot, shape, x0.dtype, x0.device, _nhwc(x0)))


def _like(x, slot):
    """Scratch shaped and laid out like x."""
    return _buffer(slot, tuple(x.shape), x.dtype, x.device, _nhwc(x))


class _BNReLUConv(torch.autograd.Function):
    """dropout(g(cat(xs))) with BN batch statistics; backward recomputes BN-ReLU (and, when
    `memory_efficient`, the concatenation too) from what the network holds anyway.

    Few full-size tensors are allocated: with `memory_efficient` forward concatenates into
    scratch and writes BN-ReLU over it; backward recomputes both into scratch, then writes the
    ReLU mask and BN's input gradient over the conv's input gradient (the inputs' gradients
    are views of it). Dropout masks the conv's output in place and keeps its bool mask."""

    @staticmethod
    def forward(ctx, weight, bias, w, running_mean, running_var, momentum, eps, padding,
                memory_efficient, p, *xs):
        scratch = len(xs) > 1 and memory_efficient  # x is this call's scratch: overwrite it
        if scratch:
            x = _cat(xs, CAT_SLOT)
        else:
            x = torch.cat(xs, 1) if len(xs) > 1 else xs[0]
        mean, invstd = _batch_stats(x, running_mean, running_var, momentum, eps)
        h = _affine_relu(x, weight, bias, mean, invstd, out=x if scratch else None)
        out = F.conv2d(h, w, None, 1, padding)
        drop = None
        if p > 0:  # in place on the conv's output (a bool mask; mul would make it float)
            drop = _drop_mask(out, p)
            out.masked_fill_(drop, 0).mul_(_scale(p))
        saved = xs if scratch else (x,)
        ctx.save_for_backward(weight, bias, w, mean, invstd, drop, *saved)
        ctx.padding, ctx.eps, ctx.p, ctx.widths = padding, eps, p, [t.shape[1] for t in xs]
        return out

    @staticmethod
    def backward(ctx, grad_out):
        weight, bias, w, mean, invstd, drop, *saved = ctx.saved_tensors
        if drop is not None:
            grad_out = torch.where(drop, 0.0, grad_out).mul_(_scale(ctx.p))
        x = _cat(saved, CAT_SLOT) if len(saved) > 1 else saved[0]
        h = _affine_relu(x, weight, bias, mean, invstd, out=_like(x, ACT_SLOT))  # recomputed
        grad_h, grad_w, _ = torch.ops.aten.convolution_backward(
            grad_out, h, w, None, [1, 1], list(ctx.padding), [1, 1], False, [0, 0], 1,
            [True, True, False])
        torch.ops.aten.threshold_backward.grad_input(grad_h, h, 0, grad_input=grad_h)
        grad_xs, grad_weight, grad_bias = _bn_backward_split(
            grad_h, x, weight, mean, invstd, ctx.eps, ctx.widths, reuse=True)
        return (grad_weight, grad_bias, grad_w, None, None, None, None, None, None, None,
                *grad_xs)


def _bn_backward_split(grad_z, x, weight, mean, invstd, eps, widths, reuse: bool):
    """BatchNorm's backward (given dL/dz, z = BN(x)) for x = cat of inputs `widths` wide:
    one gradient per input, and those of BN's weight and bias.

    BatchNorm's kernel gives the two reductions; the input gradient is affine per channel in
    dL/dz and x (dx = a dz + b x + c), so it is written without a fresh concatenation-sized
    tensor (which would be mapped and page-faulted at every update): over grad_z itself when
    `reuse` (grad_z is the caller's to give away; the gradients are views of it), else input
    by input, into tensors of one layer's size that the allocator recycles."""
    _, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
        grad_z, x, weight, None, None, mean, invstd, True, eps, [False, True, True])
    count = x.numel() // x.shape[1]
    a = weight * invstd                        # dx = a (dz - mean(dz) - xhat mean(dz xhat))
    b = -a * invstd * grad_weight / count
    c = -a * grad_bias / count - b * mean
    if reuse:
        torch.addcmul(c[:, None, None], grad_z, a[:, None, None], out=grad_z)
        grad_z.addcmul_(x, b[:, None, None])
        return torch.split(grad_z, widths, 1), grad_weight, grad_bias
    grads, start = [], 0
    for width in widths:
        part = slice(start, start + width)
        g = torch.addcmul(c[part, None, None], grad_z[:, part], a[part, None, None])
        grads.append(g.addcmul_(x[:, part], b[part, None, None]))
        start += width
    return grads, grad_weight, grad_bias


def _batch_stats(x, running_mean, running_var, momentum, eps):
    """BatchNorm's batch mean and 1/std of x, computed once; the running averages are updated
    here (unbiased variance, as nn.BatchNorm2d) and never again in backward.

    batch_norm_update_stats is BatchNorm's own statistics kernel: on CPU it reads an NHWC
    tensor in one vectorised pass, about 14x faster than var_mean over (0, 2, 3)."""
    mean, var = torch.batch_norm_update_stats(x, running_mean, running_var, momentum)
    return mean, torch.rsqrt(var + eps)


def _affine_relu(x, weight, bias, mean, invstd, out=None):
    """ReLU(BN(x)) with the given batch statistics, into `out` (which may be x itself), in
    x's dtype and layout (for bf16/fp16 x it is computed in fp32 and rounded once)."""
    scale, shift = _scale_shift(weight, bias, mean, invstd)
    out = torch.empty_like(x) if out is None else out
    return torch.relu_(torch.addcmul(shift, x, scale, out=out))


def _scale_shift(weight, bias, mean, invstd):
    """BN with these statistics as x * scale + shift, both shaped (C, 1, 1)."""
    scale = weight * invstd
    return scale[:, None, None], (bias - mean * scale)[:, None, None]


class BNReLUConv(nn.BatchNorm2d):
    """g: BatchNorm2d over the concatenated inputs, ReLU, conv with the weights given, and
    the dropout that follows it (p = `dropout`; none when 0).

    It is a BatchNorm2d (same parameters, buffers and state_dict keys). `padding` is the
    conv's; with `memory_efficient` backward recomputes the concatenation instead of keeping
    it (an update then holds nothing the network does not)."""

    def __init__(self, channels: int, padding=(0, 0), memory_efficient: bool = True,
                 dropout: float = 0.0):
        super().__init__(channels)
        self.padding, self.memory_efficient = tuple(padding), bool(memory_efficient)
        self.dropout = float(dropout)

    def extra_repr(self):
        return (super().extra_repr() + f", padding={self.padding}, "
                f"memory_efficient={self.memory_efficient}"
                + (f", dropout={self.dropout}" if self.dropout else ""))

    def forward(self, w, *xs):
        # eager training runs the hand-written Function (under autocast too, in its dtype);
        # torch.compile traces _Traced; evaluation and export take the plain ops
        if _lean(self, xs[0]):
            self.num_batches_tracked.add_(1)
            (w, *xs), autocast_off = _autocast_args(w, *xs)
            with autocast_off:
                return _BNReLUConv.apply(self.weight, self.bias, w, self.running_mean,
                                         self.running_var, self.momentum, self.eps,
                                         self.padding, self.memory_efficient, self.dropout, *xs)
        if _traced_training(self):
            return dropout(_traced(self, w, xs, self.padding), self.dropout)
        x = torch.cat(xs, 1) if len(xs) > 1 else xs[0]
        y = F.conv2d(torch.relu(super().forward(x)), w, None, 1, self.padding)
        return dropout(y, self.dropout, self.training)


class _BNReLUPool(torch.autograd.Function):
    """Global average pool of ReLU(BN(cat(xs))), keeping only the xs: the concatenation and
    BN-ReLU are recomputed (into scratch) in backward."""

    @staticmethod
    def forward(ctx, weight, bias, running_mean, running_var, momentum, eps, *xs):
        x = _cat(xs, CAT_SLOT) if len(xs) > 1 else xs[0]
        mean, invstd = _batch_stats(x, running_mean, running_var, momentum, eps)
        h = _affine_relu(x, weight, bias, mean, invstd,
                         out=x if len(xs) > 1 else _like(x, ACT_SLOT))
        out = h.mean((2, 3))
        ctx.save_for_backward(weight, bias, mean, invstd, *xs)
        ctx.eps, ctx.widths = eps, [t.shape[1] for t in xs]
        return out

    @staticmethod
    def backward(ctx, grad_out):
        weight, bias, mean, invstd, *xs = ctx.saved_tensors
        x = _cat(xs, CAT_SLOT) if len(xs) > 1 else xs[0]
        h = _affine_relu(x, weight, bias, mean, invstd, out=_like(x, ACT_SLOT))
        grad_h = (grad_out / (x.shape[2] * x.shape[3]))[:, :, None, None].expand_as(h)
        grad_z = torch.ops.aten.threshold_backward.grad_input(grad_h, h, 0,
                                                              grad_input=_like(x, GRAD_SLOT))
        grad_xs, grad_weight, grad_bias = _bn_backward_split(grad_z, x, weight, mean, invstd,
                                                             ctx.eps, ctx.widths, reuse=False)
        return grad_weight, grad_bias, None, None, None, None, *grad_xs


class BNReLUPool(nn.BatchNorm2d):
    """BatchNorm2d, ReLU and global average pooling of the concatenated inputs as one module
    (a head's `bn relu pool global`), memory-lean in training like BNReLUConv; the same
    state_dict as a BatchNorm2d."""

    def forward(self, *xs):
        if _lean(self, xs[0]):
            self.num_batches_tracked.add_(1)
            xs, autocast_off = _autocast_args(*xs)
            with autocast_off:
                return _BNReLUPool.apply(self.weight, self.bias, self.running_mean,
                                         self.running_var, self.momentum, self.eps, *xs)
        if _traced_training(self):
            return _traced(self, None, xs)
        x = torch.cat(xs, 1) if len(xs) > 1 else xs[0]
        return torch.relu(super().forward(x)).mean((2, 3))


def _traced_training(bn: nn.BatchNorm2d) -> bool:
    """Whether torch.compile is tracing a unit for training (then _Traced runs it)."""
    return _trains(bn) and torch.compiler.is_compiling()


def _traced(bn, w, xs, padding=None):
    """A unit under torch.compile: _Traced's output, the running averages updated from its
    batch statistics (once, here: not where backward could recompute them)."""
    (w, *xs), autocast_off = _autocast_args(w, *xs)
    with autocast_off:
        out, mean, var = _Traced.apply(bn.weight, bn.bias, w, bn.eps, padding, *xs)
    with torch.no_grad():
        n = xs[0].numel() // xs[0].shape[1]
        bn.running_mean.lerp_(mean, bn.momentum)
        bn.running_var.lerp_(var * (n / max(n - 1, 1)), bn.momentum)
        bn.num_batches_tracked.add_(1)
    return out


class _Traced(torch.autograd.Function):
    """conv(ReLU(BN(cat(xs))), w), or with w None the global average pool of ReLU(BN(...)),
    written for torch.compile: plain functional ops that inductor fuses (the concatenation
    into BN's statistics and into BN-ReLU, ReLU's and BN's backward into one pass), and the
    lean units' trade made explicit: only the xs (which the network holds anyway) and the
    per-channel statistics are saved; backward recomputes the concatenation and BN-ReLU.
    Per-channel sums go through `_channel_sums`, a form inductor runs fast on NHWC."""

    @staticmethod
    def forward(ctx, weight, bias, w, eps, padding, *xs):
        x = torch.cat(xs, 1) if len(xs) > 1 else xs[0]
        mean, var = _channel_stats(x)
        invstd = torch.rsqrt(var + eps)
        h = _affine_relu_ops(x, weight, bias, mean, invstd)
        out = h.mean((2, 3)) if w is None else F.conv2d(h, w, None, 1, padding)
        ctx.save_for_backward(weight, bias, w, mean, invstd, *xs)
        ctx.padding, ctx.widths = padding, [t.shape[1] for t in xs]
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad_out, _mean, _var):
        weight, bias, w, mean, invstd, *xs = ctx.saved_tensors
        x = torch.cat(xs, 1) if len(xs) > 1 else xs[0]
        h = _affine_relu_ops(x, weight, bias, mean, invstd)
        if w is None:
            grad_w = None
            grad_h = (grad_out / (x.shape[2] * x.shape[3]))[:, :, None, None].expand_as(h)
        else:
            grad_h, grad_w, _ = torch.ops.aten.convolution_backward(
                grad_out, h, w, None, [1, 1], list(ctx.padding), [1, 1], False, [0, 0], 1,
                [True, True, False])
        grad_z = torch.where(h > 0, grad_h, 0)
        xhat = (x - mean[:, None, None]) * invstd[:, None, None]
        grad_bias, grad_weight = _channel_sums(grad_z, grad_z * xhat)
        n = x.numel() // x.shape[1]
        grad_x = ((weight * invstd)[:, None, None] * (
            grad_z - (grad_bias / n)[:, None, None] - xhat * (grad_weight / n)[:, None, None])
        ).to(x.dtype)
        grads = torch.split(grad_x, ctx.widths, 1) if len(xs) > 1 else (grad_x,)
        return grad_weight, grad_bias, grad_w, None, None, *grads


def _channel_stats(x):
    """Batch mean and (biased) variance per channel, from sums shifted by one sample of each
    channel (so E[x^2] - E[x]^2 does not cancel when |mean| >> std)."""
    x = _widened(x)
    shift = x[:1, :, :1, :1].detach()
    s1, s2 = _channel_sums(x - shift, (x - shift).square())
    n = x.numel() // x.shape[1]
    m1 = s1 / n
    return shift.flatten() + m1, (s2 / n - m1.square()).clamp_min(0)


def _channel_sums(*ts):
    """Each t summed over (0, 2, 3), bf16/fp16 in fp32. An NHWC t is summed row by row
    first: inductor then reads each row once, where one reduction over (0, 2, 3) rereads the
    whole tensor for every few channels (8x slower on CPU)."""
    out = []
    for t in ts:
        t = _widened(t)
        if _nhwc(t):
            b, c, h, w = t.shape
            out.append(t.permute(0, 2, 3, 1).reshape(b * h, w, c).sum(1).sum(0))
        else:
            out.append(t.sum((0, 2, 3)))
    return out


def _widened(t):
    """bf16/fp16 t in fp32 (sums of 16-bit values lose the statistics), others as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _affine_relu_ops(x, weight, bias, mean, invstd):
    """_affine_relu in functional ops (for inductor to fuse)."""
    scale, shift = _scale_shift(weight, bias, mean, invstd)
    return torch.relu(x * scale + shift).to(x.dtype)


def _lean(bn: nn.BatchNorm2d, x) -> bool:
    """Whether the hand-written path applies: eager training of fp32/fp64 inputs, or of any
    floating inputs under autocast."""
    return (_trains(bn) and not torch.compiler.is_compiling()
            and (x.dtype in (torch.float32, torch.float64) or _autocast_dtype(x) is not None))


def _trains(bn: nn.BatchNorm2d) -> bool:
    """Training with batch statistics and a momentum (what the units' own paths implement;
    a cumulative average, momentum None, takes the plain ops)."""
    return bn.training and torch.is_grad_enabled() and bn.momentum is not None


def _autocast_dtype(x):
    """The dtype autocast runs convolutions in on x's device; None when autocast is off."""
    kind = x.device.type
    if not x.is_floating_point() or not torch.is_autocast_enabled(kind):
        return None
    return torch.get_autocast_dtype(kind)


def _autocast_args(*ts):
    """A lean unit's tensor arguments (w, then the xs) under autocast: in autocast's dtype,
    as autocast would give them to the conv (BN's parameters and statistics stay fp32, the
    kernels take the mix), and a context that turns autocast off for the Function, which
    casts nothing itself. Without autocast: the arguments and a context that does nothing."""
    dtype = _autocast_dtype(ts[-1])
    if dtype is None:
        return ts, contextlib.nullcontext()
    return ([t if t is None else t.to(dtype) for t in ts],
            torch.autocast(ts[-1].device.type, enabled=False))


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # --amp's names

ACTIVATIONS = {"relu": torch.relu, "relu6": F.relu6, "silu": F.silu, "sigmoid": torch.sigmoid,
               "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid}


def dropout(x, p: float, training: bool = True):
    """Dropout as the network runs it: keep each element with probability 1 - p, scale by
    1/(1-p). Same distribution as F.dropout, cheaper and leaner on CPU:

    - the mask is `uniform < p`, a bool tensor (autograd keeps 1 byte per element, where
      F.dropout keeps a float mask of 4); drawing uniforms is about 2.5x faster than the
      CPU's bernoulli_;
    - the uniforms are drawn in NHWC order whatever x's memory format (into scratch on CPU),
      so the same seed drops the same elements in an NHWC network and in the NCHW reference
      interpreter."""
    if not training or p == 0:
        return x
    return torch.where(_drop_mask(x, p), 0.0, x).mul_(_scale(p))


def _drop_mask(x, p: float):
    """dropout's bool mask of the elements it zeroes, shaped and laid out as x."""
    f32 = torch.float32  # uniforms in fp32 even for bf16/fp16 x: P(keep) stays 1 - p
    if x.dim() == 4:  # uniforms in NHWC order (x's own when channels_last): no reorder
        b, c, h, w = x.shape
        if torch.compiler.is_compiling():  # inductor's own parallel generator
            u = torch.rand((b, h, w, c), dtype=f32, device=x.device)
        else:
            u = _buffer(UNIFORMS_SLOT, (b, h, w, c), f32, x.device).uniform_()
        u = u.permute(0, 3, 1, 2)
    else:
        u = torch.rand(x.shape, dtype=f32, device=x.device)
    return u < p


def _scale(p: float) -> float:
    return 1 / (1 - p) if p < 1 else 0.0


class Dropout(nn.Dropout):
    """nn.Dropout (same repr, no state) running `dropout` above."""

    def forward(self, x):
        return dropout(x, self.p, self.training)


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: global pool -> FC C->hidden -> act -> FC -> gate -> scale (act
    relu, gate sigmoid as SENet; silu/sigmoid in EfficientNet, relu/hardsigmoid in MobileNet
    v3)."""

    def __init__(self, channels: int, hidden: int, act: str = "relu", gate: str = "sigmoid"):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.act, self.gate = act, gate

    def forward(self, x):
        s = ACTIVATIONS[self.act](self.fc1(x.mean((2, 3))))
        return x * ACTIVATIONS[self.gate](self.fc2(s))[:, :, None, None]

    def extra_repr(self):
        return f"act={self.act}, gate={self.gate}"


class Branches(nn.Module):
    """A `branches` op: its paths' modules, named p{path}_{kind}{index} (nested branches
    alike). The lowering calls them node by node so gm.code shows each path; forward runs
    the same for a module used on its own."""

    def __init__(self, op):
        super().__init__()
        from .names import branch_op
        from .ops import KINDS
        self.split, self.layout = op.split, []
        for k, path in enumerate(op.paths):
            self.layout.append([])
            for j, o in enumerate(path):
                name = branch_op(k, o.kind, j)
                self.add_module(name, KINDS[o.kind].module(o))
                self.layout[-1].append(name)

    def forward(self, x):
        outs = []
        for k, path in enumerate(self.layout):
            y = path_input(x, k, len(self.layout), self.split)
            for name in path:
                y = getattr(self, name)(y)
            outs.append(y)
        return torch.cat(outs, 1)


def path_input(x, k: int, paths: int, split: bool):
    """What path k of `paths` reads: x, or with split its k-th share of the channels."""
    if not split:
        return x
    width = x.shape[1] // paths
    return x.narrow(1, k * width, width)


def channel_shuffle(x, groups: int):
    """ShuffleNet's channel shuffle: channel c of group g goes to position c * groups + g."""
    n, c, h, w = x.shape
    y = x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)
    if _nhwc(x):  # the reshapes give NCHW: keep the network's layout
        return y.contiguous(memory_format=torch.channels_last)
    return y


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        return channel_shuffle(x, self.groups)

    def extra_repr(self):
        return f"groups={self.groups}"


def drop_path(x, p: float, training: bool = True):
    """Stochastic depth (Huang et al., 2016) on a residual branch: in training each sample's
    branch is dropped with probability p and the kept ones scaled by 1/(1-p); identity in
    eval. The keep decision is one uniform per sample, drawn as `dropout` draws its own."""
    if not training or p == 0:
        return x
    keep = torch.rand(x.shape[0], device=x.device) >= p
    return x * (keep.to(x.dtype) * _scale(p)).view(-1, *([1] * (x.dim() - 1)))


class DropPath(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        return drop_path(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p:g}"


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al., 2018), as pytorchcv builds it: a channel gate
    (one MLP, fc1-ReLU-fc2, on the average- and the max-pooled vector, summed, sigmoid), then
    a spatial gate (the channel-wise max and mean maps, conv 7x7 2->1 without bias, BN,
    sigmoid)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        def mlp(v):
            return self.fc2(torch.relu(self.fc1(v)))
        x = x * torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]
        maps = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.bn(self.conv(maps)))


class ZeroPadChannels(nn.Module):
    """Zero channels appended up to `width` (PyramidNet's shortcut)."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width

    def forward(self, x):
        return F.pad(x, (0, 0, 0, 0, 0, self.width - x.shape[1]))


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))
