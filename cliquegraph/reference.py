"""Two reference forms of a network, written independently of the lowering (lower.py):

- `NaiveNet`: a deliberately naive interpreter of Eq. (1): plain loops over stages and layers,
  one conv per edge W_li, summed; BatchNorm applied per source slice. It reads the compiled
  module's parameters by name and knows nothing of its graph. The tests hold the compiled
  module to it; the benchmark times it as `naive`.
- `OriginalNet`: an eager module in the form and state_dict layout of the original PyTorch
  implementation (list_block.b.conv_param.(i*(n+1)+j), forward_bn, loop_bn, list_trans,
  list_compress, list_gb, fc): Stage-II inputs concatenated in ascending layer order, weights
  concatenated per update. What `from_original` loads from, and the benchmark's
  `original_style` baseline. It covers what the original covers: clique blocks, two stages,
  feature x0 + Stage II, transit Stage II, with or without bottleneck/attention/compression.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import ir
from .units import dropout


# ---- the naive interpreter --------------------------------------------------------------------

def _apply_op(op: ir.Op, prefix: str, p, x, training):
    if op.kind == "conv":
        return F.conv2d(x, p[f"{prefix}.weight"], p.get(f"{prefix}.bias"), op.stride, op.padding)
    if op.kind == "bn":
        return _bn(p, prefix, x, slice(None), training)
    if op.kind == "relu":
        return torch.relu(x)
    if op.kind == "dropout":
        return dropout(x, op.p, training)
    if op.kind == "maxpool":
        return F.max_pool2d(x, op.kernel, op.stride, op.padding)
    if op.kind == "avgpool":
        return F.avg_pool2d(x, op.kernel, op.stride, op.padding)
    if op.kind == "gpool":
        return x.mean((2, 3))
    if op.kind == "se":
        s = F.linear(x.mean((2, 3)), p[f"{prefix}.fc1.weight"], p[f"{prefix}.fc1.bias"])
        s = torch.sigmoid(F.linear(torch.relu(s), p[f"{prefix}.fc2.weight"],
                                   p[f"{prefix}.fc2.bias"]))
        return x * s[:, :, None, None]
    if op.kind == "fc":
        return F.linear(x, p[f"{prefix}.weight"], p[f"{prefix}.bias"])
    raise ValueError(op.kind)


def _bn(p, prefix, x, channels, training):
    """BatchNorm of `x` with the channels `channels` of the BN called `prefix`."""
    return F.batch_norm(x, p[f"{prefix}.running_mean"][channels].clone(),
                        p[f"{prefix}.running_var"][channels].clone(),
                        p[f"{prefix}.weight"][channels], p[f"{prefix}.bias"][channels],
                        training, 0.0, 1e-5)


def _section(ops, name, p, x, training):
    for j, op in enumerate(ops):
        x = _apply_op(op, f"{name}.{op.kind}{j}", p, x, training)
    return x


def _naive_block(b: ir.Block, p, x0, training):
    g, n = b.graph, b.layers
    tag = f"block{b.index}"
    pad = (0, 0) if b.bottleneck else (b.kernel[0] // 2, b.kernel[1] // 2)
    X = {0: x0}                     # the newest value of every node
    snapshots = {}                  # stage -> {layer: value when that stage ended}

    def unit(i, stage, sources, bn):
        """g(sum_l W_li * X_l): BN-ReLU on each source's slice, one conv per edge, summed."""
        total, offset = 0, 0
        for l in sources:
            c = g.nodes[l]["channels"]
            h = torch.relu(_bn(p, f"{tag}.{bn}", X[l], slice(offset, offset + c), training))
            total = total + F.conv2d(h, p[f"{tag}.w_{l}_{i}"], None, 1, pad)
            offset += c
        y = dropout(total, b.dropout, training)
        if b.bottleneck:
            h = torch.relu(_bn(p, f"{tag}.{bn.replace('g_', 'gb_', 1)}", y, slice(None),
                               training))
            y = F.conv2d(h, p[f"{tag}.wb_{i}"], None, 1, (b.kernel[0] // 2, b.kernel[1] // 2))
            y = dropout(y, b.dropout, training)
        return y

    # Stage I: X_i = g(sum_{l<i} W_li X_l), X_0 included, sources in ascending order
    for i in range(1, n + 1):
        sources = [l for l in range(0, i) if g.has_edge(l, i)]
        X[i] = unit(i, 1, sources, f"g_s1_x{i}")
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
                bn = f"g_s{s}_x{i}" if b.bn == "per_stage" else f"g_loop_x{i}"
                X[i] = unit(i, s, sources, bn)
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
    x = _section(net.stem, "stem", params, x, training)
    features = {}
    for b in net.blocks:
        features[b.index], transit = _naive_block(b, params, x, training)
        if b.index <= len(net.transitions):
            x = _section(net.transitions[b.index - 1], f"transition{b.index}", params, transit,
                         training)
    vecs = [_section(ops, f"head{s}", params, features[s], training)
            for s, ops in zip(net.scales, net.head_scale)]
    return _section(net.head, "classifier", params, torch.cat(vecs, 1), training)


class NaiveNet(nn.Module):
    """The naive interpreter as a module over the compiled module's own parameters."""

    def __init__(self, net: ir.Network, gm: nn.Module):
        super().__init__()
        self.net, self.gm = net, gm

    def forward(self, x):
        state = dict(self.gm.named_parameters())
        state.update(dict(self.gm.named_buffers()))
        return naive_forward(self.net, state, x, self.training)


# ---- the original implementation's form -------------------------------------------------------

class _OriginalBlock(nn.Module):
    def __init__(self, c0, k, n, kernel, bottleneck, dropout):
        super().__init__()
        self.n, self.k, self.bottleneck, self.dropout = n, k, bottleneck, dropout
        ksz = 1 if bottleneck else kernel
        self.pad = ksz // 2
        convs = [nn.Conv2d(c0 if i == 0 else k, k, ksz, bias=False)
                 if (i != j and j != 0) else None
                 for i in range(n + 1) for j in range(n + 1)]
        # the original kept None at i == j and j == 0; Identity holds no state either
        self.conv_param = nn.ModuleList([c if c is not None else nn.Identity() for c in convs])
        self.forward_bn = nn.ModuleList([nn.BatchNorm2d(c0 + i * k) for i in range(n)])
        self.loop_bn = nn.ModuleList([nn.BatchNorm2d(k * (n - 1)) for _ in range(n)])
        if bottleneck:
            self.conv_param_bottle = nn.ModuleList(
                [nn.Conv2d(k, k, kernel, padding=kernel // 2, bias=False) for _ in range(n)])
            self.forward_bn_b = nn.ModuleList([nn.BatchNorm2d(k) for _ in range(n)])
            self.loop_bn_b = nn.ModuleList([nn.BatchNorm2d(k) for _ in range(n)])

    def _w(self, i, j):
        return self.conv_param[i * (self.n + 1) + j].weight

    def _unit(self, x, w, bn, bn_b, j):
        y = F.conv2d(torch.relu(bn(x)), w, padding=self.pad)
        y = F.dropout(y, self.dropout, self.training)
        if self.bottleneck:
            y = F.conv2d(torch.relu(bn_b(y)), self.conv_param_bottle[j - 1].weight,
                         padding=self.conv_param_bottle[j - 1].padding)
            y = F.dropout(y, self.dropout, self.training)
        return y

    def forward(self, x):
        blob = {0: x}
        for j in range(1, self.n + 1):  # Stage I: cat(X_0..X_{j-1}) with cat(W_0j..W_{j-1,j})
            bottom = torch.cat([blob[l] for l in range(j)], 1)
            w = torch.cat([self._w(l, j) for l in range(j)], 1)
            blob[j] = self._unit(bottom, w, self.forward_bn[j - 1],
                                 self.forward_bn_b[j - 1] if self.bottleneck else None, j)
        for j in range(1, self.n + 1):  # Stage II: the other layers in ascending order
            others = [l for l in range(1, self.n + 1) if l != j]
            bottom = torch.cat([blob[l] for l in others], 1)
            w = torch.cat([self._w(l, j) for l in others], 1)
            blob[j] = self._unit(bottom, w, self.loop_bn[j - 1],
                                 self.loop_bn_b[j - 1] if self.bottleneck else None, j)
        stage2 = torch.cat([blob[l] for l in range(1, self.n + 1)], 1)
        return torch.cat([x, stage2], 1), stage2


class _OriginalTransition(nn.Module):
    def __init__(self, c, attention, dropout):
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        self.conv = nn.Conv2d(c, c, 1, bias=False)
        self.dropout = dropout
        if attention:
            self.attention = SqueezeExciteOriginal(c)

    def forward(self, x):
        x = F.dropout(self.conv(torch.relu(self.bn(x))), self.dropout, self.training)
        if hasattr(self, "attention"):
            x = self.attention(x)
        return F.avg_pool2d(x, 2)


class SqueezeExciteOriginal(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc1 = nn.Linear(c, c // 2)
        self.fc2 = nn.Linear(c // 2, c)

    def forward(self, x):
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))))
        return x * s[:, :, None, None]


class _Compress(nn.Module):
    def __init__(self, c, dropout):
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        self.conv = nn.Conv2d(c, c // 2, 1, bias=False)
        self.dropout = dropout

    def forward(self, x):
        return F.dropout(self.conv(torch.relu(self.bn(x))), self.dropout, self.training)


class _GlobalPool(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn(x)).mean((2, 3))


class OriginalNet(nn.Module):
    """CliqueNet in the original implementation's form and state_dict layout."""

    def __init__(self, widths, layers, *, imagenet_stem=True, stem_channels=64, attention=True,
                 compression=True, bottleneck=True, classes=1000, kernel=3, dropout=0.0):
        super().__init__()
        self.imagenet_stem = imagenet_stem
        if imagenet_stem:
            self.fir_trans = nn.Conv2d(3, stem_channels, 7, 2, 3, bias=False)
            self.fir_bn = nn.BatchNorm2d(stem_channels)
        else:
            self.fir_trans = nn.Conv2d(3, stem_channels, 3, 1, 1, bias=False)
        self.list_block, self.list_trans = nn.ModuleList(), nn.ModuleList()
        self.list_compress = nn.ModuleList() if compression else None
        self.list_gb = nn.ModuleList()
        c0, total = stem_channels, 0
        for b, (k, n) in enumerate(zip(widths, layers)):
            self.list_block.append(_OriginalBlock(c0, k, n, kernel, bottleneck, dropout))
            feat = c0 + k * n
            if compression:
                self.list_compress.append(_Compress(feat, dropout))
                feat //= 2
            self.list_gb.append(_GlobalPool(feat))
            total += feat
            if b < len(widths) - 1:
                self.list_trans.append(_OriginalTransition(k * n, attention, dropout))
            c0 = k * n
        self.fc = nn.Linear(total, classes)

    def forward(self, x):
        x = self.fir_trans(x)
        if self.imagenet_stem:
            x = F.max_pool2d(torch.relu(self.fir_bn(x)), 3, 2, 1)
        pooled = []
        for b, block in enumerate(self.list_block):
            feature, transit = block(x)
            if self.list_compress is not None:
                feature = self.list_compress[b](feature)
            pooled.append(self.list_gb[b](feature))
            if b < len(self.list_trans):
                x = self.list_trans[b](transit)
        return self.fc(torch.cat(pooled, 1))
