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


def _bn(p, prefix, x, channels, training, op):
    """BatchNorm of `x` with the channels `channels` of the BN called `prefix` (op: its IR)."""
    return ops.batch_norm(lambda leaf: p[names.key(prefix, leaf)][channels], x, training,
                          op.eps)


def _section(ops, name, p, x, training):
    for j, op in enumerate(ops):
        x = _apply_op(op, names.key(name, names.op(op.kind, j)), p, x, training)
    return x


def _post(b, p, y, training):
    for op in b.post:
        y = dropout(y, op.p, training) if op.kind == "dropout" else \
            _apply_op(op, "", p, y, training)
    return y


def _naive_block(b: ir.Block, p, x0, training):
    g, n = b.graph, b.layers
    tag = names.block(b.index)
    X = {0: x0}                     # the newest value of every node
    snapshots = {}                  # stage -> {layer: value when that stage ended}

    def param(name):
        return p[names.key(tag, name)]

    def unit(i, stage, sources):
        """g(sum_l W_li * X_l): the ops before the first conv on each source's slice (a BN
        with that slice of its channels), one conv per edge, summed; then the layer's ops."""
        u = b.unit_of(sources)
        bn_count = conv_count = 0
        total, offset, pre_x0 = 0, 0, None
        for l in sources if u.first is not None else ():
            c = g.nodes[l]["channels"]
            h = X[l]
            for op in u.pre:
                if op.kind == "bn":
                    h = _bn(p, names.key(tag, names.unit_bn(0, stage, i, b.bn)), h,
                            slice(offset, offset + c), training, op)
                else:
                    h = _apply_op(op, "", p, h, training)
            if l == 0:
                pre_x0 = h
            f = u.first
            total = total + F.conv2d(h, param(names.weight(l, i)), None, f.stride, f.padding,
                                     1, f.groups)
            offset += c
        bn_count = sum(1 for op in u.pre if op.kind == "bn")
        if u.first is None:  # a unit that starts with branches reads its one input as it is
            y = X[sources[0]]
        elif u.first.bias:
            y = total + param(names.unit_bias(0, i))[:, None, None]
        else:
            y = total
        for j, op in enumerate(u.body, len(u.pre) + (u.first is not None)):
            if not b.runs(op, sources):
                continue
            op = op.for_layer(i)
            if op.kind == "bn":
                y = _bn(p, names.key(tag, names.unit_bn(bn_count, stage, i, b.bn)), y,
                        slice(None), training, op)
                bn_count += 1
            elif op.kind == "conv":
                conv_count += 1
                bias = param(names.unit_bias(conv_count, i)) if op.bias else None
                y = F.conv2d(y, param(names.unit_weight(conv_count, i)), bias, op.stride,
                             op.padding, 1, getattr(op, "groups", 1))
            elif op.kind == "dropout":
                y = dropout(y, op.p, training)
            else:
                y = _apply_op(op, names.key(tag, names.unit_module(i, op.kind, j)), p, y,
                              training)
        if b.merge == "cat":
            return _post(b, p, y, training)
        for l in sources:  # merge add: X_i = post(g(...) + the sum of its inputs)
            v = X[l]
            if not b.added(l):
                continue
            if l == 0 and b.shortcut:
                v = pre_x0 if b.shortcut_from == "pre" else v
                v = _section(b.shortcut, names.key(tag, names.shortcut(0, i)), p, v, training)
            y = y + v
        return _post(b, p, y, training)

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
            elif src == "xn":
                parts.append(X[n])
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
