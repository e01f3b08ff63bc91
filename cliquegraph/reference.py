"""The naive reference interpreter of a network, written independently of the lowering
(lower.py): plain loops over stages and layers as Eq. (1) reads, one conv per edge W_li,
summed; BatchNorm applied per source slice. It reads the compiled module's parameters by name
and knows nothing of its graph. The tests hold the compiled module to it; the benchmark times
it as `naive`. (The original implementation's form is in original.py.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import ir, names, ops
from .units import dropout


def _apply_op(op: ir.Op, prefix: str, p, x, training):
    return ops.KINDS[op.kind].reference(op, lambda *leaf: p[names.key(prefix, *leaf)], x,
                                        training)


def _bn(p, prefix, x, channels, training):
    """BatchNorm of `x` with the channels `channels` of the BN called `prefix`."""
    return ops.batch_norm(lambda leaf: p[names.key(prefix, leaf)][channels], x, training)


def _section(ops, name, p, x, training):
    for j, op in enumerate(ops):
        x = _apply_op(op, names.key(name, names.op(op.kind, j)), p, x, training)
    return x


def _naive_block(b: ir.Block, p, x0, training):
    g, n = b.graph, b.layers
    tag = names.block(b.index)
    pad = (0, 0) if b.bottleneck else (b.kernel[0] // 2, b.kernel[1] // 2)
    X = {0: x0}                     # the newest value of every node
    snapshots = {}                  # stage -> {layer: value when that stage ended}

    def unit(i, stage, sources):
        """g(sum_l W_li * X_l): BN-ReLU on each source's slice, one conv per edge, summed."""
        bn = names.key(tag, names.update_unit(stage, i, b.bn))
        total, offset = 0, 0
        for l in sources:
            c = g.nodes[l]["channels"]
            h = torch.relu(_bn(p, bn, X[l], slice(offset, offset + c), training))
            total = total + F.conv2d(h, p[names.key(tag, names.weight(l, i))], None, 1, pad)
            offset += c
        y = dropout(total, b.dropout, training)
        if b.bottleneck:
            h = torch.relu(_bn(p, names.key(tag, names.bottleneck_unit(stage, i, b.bn)), y,
                               slice(None), training))
            y = F.conv2d(h, p[names.key(tag, names.bottleneck_weight(i))], None, 1,
                         (b.kernel[0] // 2, b.kernel[1] // 2))
            y = dropout(y, b.dropout, training)
        return y

    # Stage I: X_i = g(sum_{l<i} W_li X_l), X_0 included, sources in ascending order
    for i in range(1, n + 1):
        sources = [l for l in range(0, i) if g.has_edge(l, i)]
        X[i] = unit(i, 1, sources)
    snapshots[1] = {i: X[i] for i in range(1, n + 1)}
    # Stage s >= 2, Eq. (1): newer layers (l < i) already hold stage s, older ones stage s-1;
    # the BN's channels follow Table 1's order: i+1..n, then 1..i-1
    last = b.stages
    for s in range(2, last + 1):
        count = b.steps if (s == last and b.steps is not None) else n
        for i in range(1, count + 1):
            sources = [l for l in list(range(i + 1, n + 1)) + list(range(1, i))
                       if g.has_edge(l, i)]
            if sources:
                X[i] = unit(i, s, sources)
        snapshots[s] = {i: X[i] for i in range(1, n + 1)}

    def gather(policy):
        parts = []
        for src in policy:
            if src == "x0":
                parts.append(x0)
            else:
                snap = snapshots[int(src[5:])]
                parts.extend(snap[i] for i in range(1, n + 1))
        return torch.cat(parts, 1) if parts else None

    return gather(b.feature), gather(b.transit)


def naive_forward(net: ir.Network, params: dict, x, training: bool = False):
    """The network's output by the naive interpreter, with parameters/buffers `params` named as
    in the compiled module's state_dict."""
    features, vecs = {}, []
    for part in ir.parts(net):
        if part.kind == "stem":
            x = _section(part.ops, part.name, params, x, training)
        elif part.kind == "block":
            features[part.index], transit = _naive_block(part.block, params, x, training)
        elif part.kind == "transition":
            x = _section(part.ops, part.name, params, transit, training)
        elif part.kind == "scale":
            vecs.append(_section(part.ops, part.name, params, features[part.index], training))
        else:
            x = _section(part.ops, part.name, params, torch.cat(vecs, 1), training)
    return x


class NaiveNet(nn.Module):
    """The naive interpreter as a module over the compiled module's own parameters."""

    def __init__(self, net: ir.Network, gm: nn.Module):
        super().__init__()
        self.net, self.gm = net, gm

    def forward(self, x):
        state = dict(self.gm.named_parameters())
        state.update(dict(self.gm.named_buffers()))
        return naive_forward(self.net, state, x, self.training)
