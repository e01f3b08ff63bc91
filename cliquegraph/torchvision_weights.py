"""torchvision's weights in our layout: `from_torchvision(state_dict, spec)` gives the compiled
spec carrying a torchvision model's weights, so that it computes that model's logits.

A layout is a map {torchvision key: [(our key, slice of its input channels or None), ...]},
made from the IR: the names on our side come from names.py, so the map cannot drift from what
the lowering builds. DenseNet is the layout written so far: torchvision's dense layer runs
norm1 - relu - conv1 (1x1 to 4k) - norm2 - relu - conv2 (3x3 to k) over the concatenation of
the block input and every earlier layer, in that order, which is our Stage-I order; conv1's
weight is the W_ij of those inputs side by side, so it is cut along its input channels.
"""

from __future__ import annotations

import re

from . import names
from .checkpoint import CheckpointError, load_state
from .lower import build

BN_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# torchvision's old DenseNet files name `norm.1` what its modules call `norm1` (its own loader
# renames them the same way)
_OLD_DENSE_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\."
                            r"(?:weight|bias|running_mean|running_var))$")


def from_torchvision(state_dict, spec, /, overrides=None, **params):
    """The compiled `spec` (a .clq path or text; `overrides`/params as build takes them)
    with torchvision's `state_dict` loaded. A state_dict that is not the spec's torchvision
    model is refused with the first key that differs (CheckpointError); a spec with no
    torchvision layout is refused saying which layouts there are."""
    gm = build(spec, overrides, **params)
    net = gm.meta["cliquegraph"]["network"]
    layout = torchvision_layout(net)
    state_dict = {_OLD_DENSE_KEY.sub(r"\1\2", k): v for k, v in state_dict.items()}
    own = gm.state_dict()
    where = f"state_dict does not fit {net.name} ({net.path})"
    for key in layout:
        # files older than BatchNorm's counter lack it; it only matters for momentum=None
        if key not in state_dict and not key.endswith("num_batches_tracked"):
            raise CheckpointError(f"{where}: it has no {key!r}")
    converted = {}
    for key, value in state_dict.items():
        if key not in layout:
            raise CheckpointError(f"{where}: unexpected key {key!r}")
        targets = layout[key]
        expected = _their_shape(own, targets)
        if tuple(value.shape) != expected:
            raise CheckpointError(f"{where}: {key} has shape {tuple(value.shape)}, the spec "
                                  f"needs {expected}")
        for ours, cut in targets:
            converted[ours] = value[:, cut] if cut is not None else value
    for key, value in own.items():
        converted.setdefault(key, value)  # the counters an old file lacks
    load_state(gm, converted, "state_dict")
    return gm


def torchvision_layout(net) -> dict:
    """{torchvision key: [(our key, input-channel slice or None), ...]} for `net`, or a
    CheckpointError when torchvision has no model of its form."""
    why = _densenet_mismatch(net)
    if why:
        raise CheckpointError(f"{net.name} has no torchvision layout: {why} (the layouts "
                              "written so far are torchvision's densenet121/169/201)")
    return _densenet(net)


def _their_shape(own, targets) -> tuple:
    """The shape of the torchvision tensor that fills `targets`."""
    first, cut = targets[0]
    if cut is None:
        return tuple(own[first].shape)
    shape = list(own[first].shape)
    shape[1] = sum(own[k].shape[1] for k, _ in targets)
    return tuple(shape)


def _kinds(ops) -> list:
    return [op.kind for op in ops]


def _densenet_mismatch(net) -> str | None:
    """Why `net` is not of torchvision's DenseNet form, or None."""
    if _kinds(net.stem) != ["conv", "bn", "relu", "maxpool"] or net.stem[0].bias:
        return "its stem is not conv (no bias) - bn - relu - pool max"
    for b in net.blocks:
        if b.topology != "dense" or b.stages != 1 or b.bottleneck is None or b.dropout:
            return (f"block {b.index} is not a dense block with a bottleneck (topology dense, "
                    "stages 1, bottleneck, no dropout)")
        if b.transit != ("x0", "stage1") or b.feature != ("x0", "stage1"):
            return f"block {b.index} does not pass on x0 + stage1"
    for t, ops in enumerate(net.transitions, 1):
        if _kinds(ops) != ["bn", "relu", "conv", "avgpool"] or ops[2].bias:
            return f"transition {t} is not bn - relu - conv (no bias) - pool avg"
    if net.scales != (len(net.blocks),) or _kinds(net.head_scale[0]) != ["bn", "relu", "gpool"]:
        return "its head is not `scales last; bn; relu; pool global`"
    if _kinds(net.head) != ["fc"]:
        return "its classifier is not one fc"
    return None


def _densenet(net) -> dict:
    m = {}

    def bn(theirs, ours):
        for leaf in BN_LEAVES:
            m[f"{theirs}.{leaf}"] = [(names.key(ours, leaf), None)]

    m["features.conv0.weight"] = [(names.key(names.STEM, names.op("conv", 0), "weight"), None)]
    bn("features.norm0", names.key(names.STEM, names.op("bn", 1)))
    for b in net.blocks:
        ours = names.block(b.index)
        for j in range(1, b.layers + 1):
            layer = f"features.denseblock{b.index}.denselayer{j}"
            bn(f"{layer}.norm1", names.key(ours, names.update_unit(1, j)))
            cuts, start = [], 0
            for i in range(j):  # X_0 .. X_{j-1}, as torchvision concatenates them
                width = b.c0 if i == 0 else b.width
                cuts.append((names.key(ours, names.weight(i, j)), slice(start, start + width)))
                start += width
            m[f"{layer}.conv1.weight"] = cuts
            bn(f"{layer}.norm2", names.key(ours, names.bottleneck_unit(1, j)))
            m[f"{layer}.conv2.weight"] = [(names.key(ours, names.bottleneck_weight(j)), None)]
        if b.index <= len(net.transitions):
            t = names.transition(b.index)
            bn(f"features.transition{b.index}.norm", names.key(t, names.op("bn", 0)))
            m[f"features.transition{b.index}.conv.weight"] = [
                (names.key(t, names.op("conv", 2), "weight"), None)]
    bn("features.norm5", names.key(names.head(len(net.blocks)), names.op("bn", 0)))
    for leaf in ("weight", "bias"):
        m[f"classifier.{leaf}"] = [(names.key(names.CLASSIFIER, names.op("fc", 0), leaf), None)]
    return m
