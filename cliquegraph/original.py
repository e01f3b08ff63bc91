"""from_original: weights of the original PyTorch ImageNet implementation -> our GraphModule.

The original names W_ij of block b `list_block.b.conv_param.(i*(n+1)+j)` (i = 0 is X_0),
the per-layer 3x3 `conv_param_bottle.(j-1)`, and the Stage-I/II BatchNorms `forward_bn*` /
`loop_bn*`. Its Stage-II input is concatenated in ascending layer order; ours follows Table 1
(i+1..n, then 1..i-1), so the channels of each loop BatchNorm are permuted on the way in.
"""

from __future__ import annotations

import torch

from .checkpoint import CheckpointError, load_state
from .elaborate import elaborate
from .lower import lower
from .topology import loop_inputs

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _modules_of(section_ops, kinds):
    """Names (kind+index) of the ops of a section with one of `kinds`, in order."""
    return [f"{op.kind}{j}" for j, op in enumerate(section_ops) if op.kind in kinds]


def key_map(net) -> dict:
    """{original key: (our key, permutation or None)} for an ImageNet-style CliqueNet IR."""
    m = {}

    def bn(src, dst, perm=None):
        for leaf in BN_KEYS:
            m[f"{src}.{leaf}"] = (f"{dst}.{leaf}", perm if leaf != "num_batches_tracked" else None)

    stem_convs, stem_bns = _modules_of(net.stem, {"conv"}), _modules_of(net.stem, {"bn"})
    m["fir_trans.weight"] = (f"stem.{stem_convs[0]}.weight", None)
    if stem_bns:
        bn("fir_bn", f"stem.{stem_bns[0]}")
    for b in net.blocks:
        src, dst, n, k = f"list_block.{b.index - 1}", f"block{b.index}", b.layers, b.width
        for i, j in b.graph.edges():
            m[f"{src}.conv_param.{i * (n + 1) + j}.weight"] = (f"{dst}.w_{i}_{j}", None)
        for j in range(1, n + 1):
            bn(f"{src}.forward_bn.{j - 1}", f"{dst}.g_s1_x{j}")
            ours = loop_inputs(b.graph, j, n)           # Table 1 order
            theirs = sorted(ours)                        # the original's ascending order
            perm = torch.cat([torch.arange(theirs.index(l) * k, theirs.index(l) * k + k)
                              for l in ours])
            bn(f"{src}.loop_bn.{j - 1}", f"{dst}.g_s2_x{j}", perm)
            if b.bottleneck:
                m[f"{src}.conv_param_bottle.{j - 1}.weight"] = (f"{dst}.wb_{j}", None)
                bn(f"{src}.forward_bn_b.{j - 1}", f"{dst}.gb_s1_x{j}")
                bn(f"{src}.loop_bn_b.{j - 1}", f"{dst}.gb_s2_x{j}")
    for t, ops in enumerate(net.transitions):
        dst = f"transition{t + 1}"
        bn(f"list_trans.{t}.bn", f"{dst}.{_modules_of(ops, {'bn'})[0]}")
        m[f"list_trans.{t}.conv.weight"] = (f"{dst}.{_modules_of(ops, {'conv'})[0]}.weight",
                                            None)
        for se in _modules_of(ops, {"se"}):
            for leaf in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
                m[f"list_trans.{t}.attention.{leaf}"] = (f"{dst}.{se}.{leaf}", None)
    for s, ops in zip(net.scales, net.head_scale):
        dst, bns, convs = f"head{s}", _modules_of(ops, {"bn"}), _modules_of(ops, {"conv"})
        if convs:  # compression: BN-ReLU-conv1x1, then the global pool's BN
            bn(f"list_compress.{s - 1}.bn", f"{dst}.{bns[0]}")
            m[f"list_compress.{s - 1}.conv.weight"] = (f"{dst}.{convs[0]}.weight", None)
        bn(f"list_gb.{s - 1}.bn", f"{dst}.{bns[-1]}")
    fcs = _modules_of(net.head, {"fc"})
    m["fc.weight"] = (f"classifier.{fcs[0]}.weight", None)
    m["fc.bias"] = (f"classifier.{fcs[0]}.bias", None)
    return m


def from_original(state_dict, spec_path="specs/cliquenet-imagenet.clq", **params):
    """Our GraphModule for `spec_path`, carrying the original implementation's weights, so it
    gives the original's logits. A state_dict that does not fit the spec is refused, naming
    the first mismatched key."""
    net = elaborate(spec_path, params)
    gm = lower(net)
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
    gm.meta["cliquegraph"]["params"] = {k: str(v) for k, v in params.items()}
    return gm
