"""The original PyTorch implementation of CliqueNet, in one place: its eager module form and
state_dict layout (`OriginalNet`), which specs it can express (`original_config`), and the map
from its weights to ours (`key_map`, `from_original`).

`OriginalNet` has the original's form: list_block.b.conv_param.(i*(n+1)+j), forward_bn,
loop_bn, list_trans, list_compress, list_gb, fc; Stage-II inputs concatenated in ascending
layer order, weights concatenated per update. It is what `from_original` loads from and the
benchmark's `original_style` baseline. It covers what the original covers: clique blocks, two
stages, feature x0 + Stage II, transit Stage II, with or without bottleneck/attention/compression.

The original names W_ij of block b `list_block.b.conv_param.(i*(n+1)+j)` (i = 0 is X_0),
the per-layer 3x3 `conv_param_bottle.(j-1)`, and the Stage-I/II BatchNorms `forward_bn*` /
`loop_bn*`. Its Stage-II input is concatenated in ascending layer order; ours follows Table 1
(i+1..n, then 1..i-1), so the channels of each loop BatchNorm are permuted on the way in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import names
from .checkpoint import CheckpointError, load_state
from .errors import plural
from .elaborate import count_params
from .lower import build
from .units import SqueezeExcite
from .topology import loop_inputs


# ---- the original's module form ------------------------------------------------------------------

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
            self.attention = SqueezeExcite(c, c // 2)

    def forward(self, x):
        x = F.dropout(self.conv(torch.relu(self.bn(x))), self.dropout, self.training)
        if hasattr(self, "attention"):
            x = self.attention(x)
        return F.avg_pool2d(x, 2)


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


# ---- what the original can express, from the IR --------------------------------------------------

def _unsupported(why: str) -> ValueError:
    return ValueError(f"original_style cannot express this spec: {why}")


def _kinds(ops) -> list:
    return [op.kind for op in ops if op.kind != "dropout"]  # the original always has dropout


def _check_block(b, first) -> None:
    """ValueError if the original cannot express block b (`first`: block 1, whose settings the
    original uses for all blocks)."""
    where, n = f"block {b.index}", b.layers
    if b.topology != "clique" or b.graph.number_of_edges() != n * n:
        raise _unsupported(f"{where} has topology {b.topology} (the original has clique "
                           f"blocks only)")
    if n < 2:
        raise _unsupported(f"{where} has {n} layer (the original's Stage II needs two)")
    if b.stages != 2:
        raise _unsupported(f"{where} has {plural(b.stages, 'stage')} (the original has "
                           f"exactly 2)")
    if b.steps is not None and b.steps != n:
        raise _unsupported(f"{where} stops Stage II after {b.steps} of {n} updates (steps)")
    if tuple(b.feature) != ("x0", "stage2"):
        raise _unsupported(f"{where} sends {' + '.join(b.feature) or 'nothing'} to the loss "
                           f"(the original: x0 + stage2)")
    if tuple(b.transit) != ("stage2",):
        raise _unsupported(f"{where} sends {' + '.join(b.transit) or 'nothing'} to the next "
                           f"block (the original: stage2)")
    if b.bn != "per_stage":
        raise _unsupported(f"{where} has bn {b.bn} (the original: one BN per stage)")
    if b.bottleneck is not None and b.bottleneck != b.width:
        raise _unsupported(f"{where} has bottleneck {b.bottleneck} != width {b.width}")
    if b.kernel[0] != b.kernel[1]:
        raise _unsupported(f"{where} has a non-square kernel {b.kernel}")
    if (b.kernel, b.dropout, b.bottleneck is None) != \
            (first.kernel, first.dropout, first.bottleneck is None):
        raise _unsupported(f"{where} differs from block 1 in kernel, dropout or bottleneck "
                           f"(the original has one setting for all blocks)")


def original_config(net) -> dict:
    """OriginalNet's constructor arguments for an IR network, or ValueError saying what the
    original cannot express. Reads the IR only."""
    blocks = net.blocks
    if net.input_shape[0] != 3:
        raise _unsupported(f"input has {net.input_shape[0]} channels (the original takes RGB)")
    for b in blocks:
        _check_block(b, blocks[0])

    stem = net.stem
    imagenet_stem = any(op.kind == "maxpool" or getattr(op, "stride", (1, 1)) != (1, 1)
                        for op in stem)
    if imagenet_stem:
        ok = (_kinds(stem) == ["conv", "bn", "relu", "maxpool"]
              and (stem[0].kernel, stem[0].stride, stem[0].padding) == ((7, 7), (2, 2), (3, 3))
              and (stem[3].kernel, stem[3].stride, stem[3].padding) == ((3, 3), (2, 2), (1, 1)))
    else:
        ok = _kinds(stem) == ["conv"] and (stem[0].kernel, stem[0].padding) == ((3, 3), (1, 1))
    if not ok or stem[0].bias:
        raise _unsupported("the stem is neither conv 7x7/2 + BN-ReLU + max pool 3x3/2 nor a "
                           "bare conv 3x3")

    attention = any(op.kind == "se" for ops in net.transitions for op in ops)
    for t, ops in enumerate(net.transitions, 1):
        want = ["bn", "relu", "conv"] + (["se"] if attention else []) + ["avgpool"]
        conv = next((op for op in ops if op.kind == "conv"), None)
        if _kinds(ops) != want or conv.kernel != (1, 1) or conv.in_shape[0] != conv.out_shape[0] \
                or ops[-1].kernel != (2, 2):
            raise _unsupported(f"transition {t} is {' '.join(op.kind for op in ops)} (the "
                               f"original: bn relu conv1x1 C [se] pool avg 2, in every one)")
        se = [op for op in ops if op.kind == "se"]
        if se and se[0].hidden != se[0].in_shape[0] // 2:
            raise _unsupported(f"transition {t} has se reduction != 2")

    if tuple(net.scales) != tuple(b.index for b in blocks):
        raise _unsupported(f"the head reads scales {list(net.scales)} (the original: all)")
    compression = any(op.kind == "conv" for ops in net.head_scale for op in ops)
    for s, ops in zip(net.scales, net.head_scale):
        want = (["bn", "relu", "conv"] if compression else []) + ["bn", "relu", "gpool"]
        if _kinds(ops) != want:
            raise _unsupported(f"the head of block {s} is {' '.join(op.kind for op in ops)} "
                               f"(the original: [bn relu conv1x1 C//2] bn relu pool global)")
    if _kinds(net.head) != ["fc"]:
        raise _unsupported(f"the classifier is {' '.join(_kinds(net.head))} (the original: fc)")
    drops = {op.p for ops in net.transitions + net.head_scale for op in ops
             if op.kind == "dropout"}
    if drops - {blocks[0].dropout}:
        raise _unsupported(f"dropout {sorted(drops)} outside the blocks differs from the "
                           f"blocks' {blocks[0].dropout} (the original has one rate)")

    first = blocks[0]
    return dict(widths=[b.width for b in blocks], layers=[b.layers for b in blocks],
                imagenet_stem=imagenet_stem, stem_channels=stem[0].out_shape[0],
                attention=attention, compression=compression,
                bottleneck=first.bottleneck is not None, classes=net.outputs,
                kernel=first.kernel[0], dropout=first.dropout)


def original_from_ir(net):
    """OriginalNet for an IR network, with the same parameter count as the network
    (ValueError when the original cannot express the spec)."""
    model = OriginalNet(**original_config(net))
    got, want = sum(p.numel() for p in model.parameters()), count_params(net)
    if got != want:
        raise _unsupported(f"the original form has {got:,} parameters, the spec {want:,}")
    return model


# ---- its weights in our layout -------------------------------------------------------------------

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _modules_of(section_ops, kinds):
    """Names (kind+index) of the ops of a section with one of `kinds`, in order."""
    return [names.op(op.kind, j) for j, op in enumerate(section_ops) if op.kind in kinds]


def key_map(net) -> dict:
    """{original key: (our key, permutation or None)} for an ImageNet-style CliqueNet IR."""
    m = {}

    def bn(src, dst, perm=None):
        for leaf in BN_KEYS:
            m[f"{src}.{leaf}"] = (names.key(dst, leaf),
                                  perm if leaf != "num_batches_tracked" else None)

    stem_convs, stem_bns = _modules_of(net.stem, {"conv"}), _modules_of(net.stem, {"bn"})
    m["fir_trans.weight"] = (names.key(names.STEM, stem_convs[0], "weight"), None)
    if stem_bns:
        bn("fir_bn", names.key(names.STEM, stem_bns[0]))
    for b in net.blocks:
        src, dst, n, k = f"list_block.{b.index - 1}", names.block(b.index), b.layers, b.width
        for i, j in b.graph.edges():
            m[f"{src}.conv_param.{i * (n + 1) + j}.weight"] = (
                names.key(dst, names.weight(i, j)), None)
        for j in range(1, n + 1):
            bn(f"{src}.forward_bn.{j - 1}", names.key(dst, names.update_unit(1, j)))
            ours = loop_inputs(b.graph, j, n)           # Table 1 order
            theirs = sorted(ours)                        # the original's ascending order
            perm = torch.cat([torch.arange(theirs.index(l) * k, theirs.index(l) * k + k)
                              for l in ours])
            bn(f"{src}.loop_bn.{j - 1}", names.key(dst, names.update_unit(2, j)), perm)
            if b.bottleneck:
                m[f"{src}.conv_param_bottle.{j - 1}.weight"] = (
                    names.key(dst, names.bottleneck_weight(j)), None)
                bn(f"{src}.forward_bn_b.{j - 1}", names.key(dst, names.bottleneck_unit(1, j)))
                bn(f"{src}.loop_bn_b.{j - 1}", names.key(dst, names.bottleneck_unit(2, j)))
    for t, ops in enumerate(net.transitions):
        dst = names.transition(t + 1)
        bn(f"list_trans.{t}.bn", names.key(dst, _modules_of(ops, {"bn"})[0]))
        m[f"list_trans.{t}.conv.weight"] = (
            names.key(dst, _modules_of(ops, {"conv"})[0], "weight"), None)
        for se in _modules_of(ops, {"se"}):
            for leaf in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
                m[f"list_trans.{t}.attention.{leaf}"] = (names.key(dst, se, leaf), None)
    for s, ops in zip(net.scales, net.head_scale):
        dst, bns, convs = names.head(s), _modules_of(ops, {"bn"}), _modules_of(ops, {"conv"})
        if convs:  # compression: BN-ReLU-conv1x1, then the global pool's BN
            bn(f"list_compress.{s - 1}.bn", names.key(dst, bns[0]))
            m[f"list_compress.{s - 1}.conv.weight"] = (names.key(dst, convs[0], "weight"), None)
        bn(f"list_gb.{s - 1}.bn", names.key(dst, bns[-1]))
    fcs = _modules_of(net.head, {"fc"})
    for leaf in ("weight", "bias"):
        m[f"fc.{leaf}"] = (names.key(names.CLASSIFIER, fcs[0], leaf), None)
    return m


def from_original(state_dict, spec_path="specs/cliquenet-imagenet.clq", **params):
    """Our GraphModule for `spec_path`, carrying the original implementation's weights, so it
    gives the original's logits. A state_dict that does not fit the spec is refused, naming
    the first mismatched key."""
    gm = build(spec_path, params)
    net = gm.meta["cliquegraph"]["network"]
    own = gm.state_dict()
    mapping = key_map(net)
    converted = {}
    for key, value in state_dict.items():
        if key not in mapping:
            raise CheckpointError(f"state_dict does not fit {spec_path}: unexpected key {key!r}")
        ours, perm = mapping[key]
        if ours not in own or own[ours].shape != value.shape:
            want = tuple(own[ours].shape) if ours in own else "nothing"
            raise CheckpointError(f"state_dict does not fit {spec_path}: {key} has shape "
                                  f"{tuple(value.shape)}, the spec needs {want}")
        converted[ours] = value[perm] if perm is not None else value
    for key in mapping:
        if key not in state_dict:
            raise CheckpointError(f"state_dict does not fit {spec_path}: missing key {key!r}")
    load_state(gm, converted, "state_dict")
    return gm
