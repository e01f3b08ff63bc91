"""The unit g of a clique update, BN -> ReLU -> conv, as one module that reads the shared
(concatenated) weights as an argument.

In training it runs as one autograd Function that keeps only its input (which the network
holds anyway) and recomputes BN-ReLU in backward instead of storing a second full-size copy:
the memory-lean form. Evaluation, export and torch.compile see the plain ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _BNReLUConv(torch.autograd.Function):
    """g(cat(xs)) with BN batch statistics; backward recomputes BN-ReLU (and, when
    `keep_cat` is false, the concatenation too) from what the network holds anyway."""

    @staticmethod
    def forward(ctx, weight, bias, w, running_mean, running_var, momentum, eps, padding,
                keep_cat, *xs):
        x = torch.cat(xs, 1) if len(xs) > 1 else xs[0]
        mean, invstd = _batch_stats(x, running_mean, running_var, momentum, eps)
        out = F.conv2d(_affine_relu(x, weight, bias, mean, invstd), w, None, 1, padding)
        saved = (x,) if keep_cat or len(xs) == 1 else xs
        ctx.save_for_backward(weight, bias, w, mean, invstd, *saved)
        ctx.padding, ctx.eps, ctx.widths = padding, eps, [t.shape[1] for t in xs]
        return out

    @staticmethod
    def backward(ctx, grad_out):
        weight, bias, w, mean, invstd, *saved = ctx.saved_tensors
        x = torch.cat(saved, 1) if len(saved) > 1 else saved[0]
        h = _affine_relu(x, weight, bias, mean, invstd)  # recomputed, not stored
        grad_h, grad_w, _ = torch.ops.aten.convolution_backward(
            grad_out, h, w, None, [1, 1], list(ctx.padding), [1, 1], False, [0, 0], 1,
            [True, True, False])
        grad_z = torch.ops.aten.threshold_backward(grad_h, h, 0)
        del h, grad_h
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad_z, x, weight, None, None, mean, invstd, True, ctx.eps, [True, True, True])
        grad_xs = torch.split(grad_x, ctx.widths, 1) if len(ctx.widths) > 1 else (grad_x,)
        return (grad_weight, grad_bias, grad_w, None, None, None, None, None, None, *grad_xs)


def _batch_stats(x, running_mean, running_var, momentum, eps):
    """BatchNorm's batch mean and 1/std of x, computed once; the running averages are updated
    here (unbiased variance, as nn.BatchNorm2d) and never again in backward."""
    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    n = x.numel() // x.shape[1]
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        running_var.mul_(1 - momentum).add_(var * (n / max(n - 1, 1)), alpha=momentum)
    return mean, torch.rsqrt(var + eps)


def _affine_relu(x, weight, bias, mean, invstd):
    scale = weight * invstd
    shift = bias - mean * scale
    return torch.relu_(torch.addcmul(shift[:, None, None], x, scale[:, None, None]))


class BNReLUConv(nn.BatchNorm2d):
    """g: BatchNorm2d over the concatenated inputs, ReLU, conv with the weights given.

    It is a BatchNorm2d (same parameters, buffers and state_dict keys). `padding` is the
    conv's; with `keep_cat=False` backward recomputes the concatenation instead of keeping it
    (the memory-efficient form: an update then holds nothing the network does not)."""

    def __init__(self, channels: int, padding=(0, 0), keep_cat=True):
        super().__init__(channels)
        self.padding, self.keep_cat = tuple(padding), keep_cat

    def extra_repr(self):
        return super().extra_repr() + f", padding={self.padding}, keep_cat={self.keep_cat}"

    def forward(self, w, *xs):
        # the hand-written backward is for fp32/fp64 eager training; autocast (bf16/fp16),
        # torch.compile (which fuses BN-ReLU itself) and evaluation take the plain ops
        if _lean(self, xs[0]):
            self.num_batches_tracked.add_(1)
            return _BNReLUConv.apply(self.weight, self.bias, w, self.running_mean,
                                     self.running_var, self.momentum, self.eps, self.padding,
                                     self.keep_cat, *xs)
        x = torch.cat(xs, 1) if len(xs) > 1 else xs[0]
        return F.conv2d(torch.relu(super().forward(x)), w, None, 1, self.padding)


class _BNReLUPool(torch.autograd.Function):
    """Global average pool of ReLU(BN(x)), keeping only x: BN-ReLU is recomputed in backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        mean, invstd = _batch_stats(x, running_mean, running_var, momentum, eps)
        out = _affine_relu(x, weight, bias, mean, invstd).mean((2, 3))
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        h = _affine_relu(x, weight, bias, mean, invstd)
        grad_h = (grad_out / (x.shape[2] * x.shape[3]))[:, :, None, None].expand_as(h)
        grad_z = torch.ops.aten.threshold_backward(grad_h, h, 0)
        del h
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad_z, x, weight, None, None, mean, invstd, True, ctx.eps, [True, True, True])
        return grad_x, grad_weight, grad_bias, None, None, None, None


class BNReLUPool(nn.BatchNorm2d):
    """BatchNorm2d, ReLU and global average pooling as one module (a head's `bn relu pool
    global`), memory-lean in training like BNReLUConv; the same state_dict as a BatchNorm2d."""

    def forward(self, x):
        if _lean(self, x):
            self.num_batches_tracked.add_(1)
            return _BNReLUPool.apply(x, self.weight, self.bias, self.running_mean,
                                     self.running_var, self.momentum, self.eps)
        return torch.relu(super().forward(x)).mean((2, 3))


def _lean(bn: nn.BatchNorm2d, x) -> bool:
    """Whether the hand-written (fp32/fp64, eager, training) path applies."""
    return (bn.training and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and bn.momentum is not None and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled(x.device.type))
