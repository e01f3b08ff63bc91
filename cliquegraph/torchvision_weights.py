"""torchvision's weights in our layout: `from_torchvision(state_dict, spec)` gives the compiled
spec carrying a torchvision model's weights, so that it computes that model's logits.

A layout is a map {torchvision key: [(our key, slice of its input channels or None), ...]},
made from the IR: the names on our side come from names.py, so the map cannot drift from what
the lowering builds. Three layouts:

- DenseNet: torchvision's dense layer runs norm1 - relu - conv1 (1x1 to 4k) - norm2 - relu -
  conv2 (3x3 to k) over the concatenation of the block input and every earlier layer, in that
  order, which is our Stage-I order; conv1's weight is the W_ij of those inputs side by side,
  so it is cut along its input channels.
- ResNet (resnet18..152, wide_resnet50_2, resnext50_32x4d): stage s is block s, unit u its
  layer u + 1: conv1 is W_u,u+1 (the unit's first conv), conv2/conv3 the layer's later convs
  (wb, wc), bn1..bn3 its BNs, downsample the shortcut of the edge X_0 -> X_1.
- VGG and AlexNet: `features` is one nn.Sequential numbering every op, which is our blocks'
  units and transitions and the head's ops up to `flatten`, in order; `classifier` numbers
  the ops after it as our classifier does.
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
    whys = []
    for mismatch, layout in ((_densenet_mismatch, _densenet), (_resnet_mismatch, _resnet),
                             (_sequential_mismatch, _sequential)):
        why = mismatch(net)
        if why is None:
            return layout(net)
        whys.append(why)
    raise CheckpointError(f"{net.name} has no torchvision layout: not DenseNet ({whys[0]}), "
                          f"not ResNet ({whys[1]}), not VGG/AlexNet ({whys[2]})")


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


def _classifier_mismatch(net) -> str | None:
    if net.scales != (len(net.blocks),):
        return "its head reads more than the last block (scales last)"
    if any(k not in ("fc", "relu", "dropout") for k in _kinds(net.head)) or \
            _kinds(net.head)[-1:] != ["fc"]:
        return "its classifier is not fc, relu and dropout ending with fc"
    return None


def _chain(b) -> bool:
    return b.topology == "chain" and b.stages == 1 and not b.unit.pre


_BASIC = ["conv", "bn", "relu", "conv", "bn"]
_BOTTLENECK = ["conv", "bn", "relu", "conv", "bn", "relu", "conv", "bn"]


def _resnet_mismatch(net) -> str | None:
    """Why `net` is not of torchvision's ResNet form, or None."""
    if _kinds(net.stem) != ["conv", "bn", "relu", "maxpool"] or net.stem[0].bias:
        return "its stem is not conv (no bias) - bn - relu - pool max"
    if len(net.blocks) != 4:
        return f"it has {len(net.blocks)} blocks, not 4 stages"
    for b in net.blocks:
        if not (_chain(b) and b.merge == "add" and _kinds(b.post) == ["relu"]):
            return f"block {b.index} is not a chain of residual units (merge add, post relu)"
        if _kinds(b.unit.ops) not in (_BASIC, _BOTTLENECK) or any(
                getattr(op, "bias", False) for op in b.unit.ops):
            return f"block {b.index}'s unit is not a basic or bottleneck unit without biases"
        if b.shortcut and (_kinds(b.shortcut) != ["conv", "bn"] or b.shortcut_from != "input"):
            return f"block {b.index}'s shortcut is not conv - bn"
    if any(ops for ops in net.transitions):
        return "it has ops between its stages"
    if _kinds(net.head_scale[0]) != ["gpool"] or _kinds(net.head) != ["fc"]:
        return "its head is not `pool global; fc`"
    return _classifier_mismatch(net)


def _bn_keys(m, theirs, ours):
    for leaf in BN_LEAVES:
        m[f"{theirs}.{leaf}"] = [(names.key(ours, leaf), None)]


def _resnet(net) -> dict:
    m = {"conv1.weight": [(names.key(names.STEM, names.op("conv", 0), "weight"), None)]}
    _bn_keys(m, "bn1", names.key(names.STEM, names.op("bn", 1)))
    for b in net.blocks:
        ours = names.block(b.index)
        for j in range(1, b.layers + 1):
            unit = f"layer{b.index}.{j - 1}"
            for c in range(sum(1 for op in b.unit.ops if op.kind == "conv")):
                w = names.weight(j - 1, j) if c == 0 else names.unit_weight(c, j)
                m[f"{unit}.conv{c + 1}.weight"] = [(names.key(ours, w), None)]
                _bn_keys(m, f"{unit}.bn{c + 1}", names.key(ours, names.unit_bn(c, 1, j)))
            if j == 1 and b.shortcut:
                sc = names.key(ours, names.shortcut(0, 1))
                m[f"{unit}.downsample.0.weight"] = [(names.key(sc, names.op("conv", 0),
                                                               "weight"), None)]
                _bn_keys(m, f"{unit}.downsample.1", names.key(sc, names.op("bn", 1)))
    for leaf in ("weight", "bias"):
        m[f"fc.{leaf}"] = [(names.key(names.CLASSIFIER, names.op("fc", 0), leaf), None)]
    return m


def _sequential_mismatch(net) -> str | None:
    """Why `net` is not of torchvision's VGG/AlexNet form, or None."""
    if net.stem:
        return "it has a stem"
    for b in net.blocks:
        if not (_chain(b) and b.merge == "cat" and not b.post):
            return f"block {b.index} is not a chain of plain layers"
        if any(k not in ("conv", "bn", "relu") for k in _kinds(b.unit.ops)):
            return f"block {b.index}'s unit is not conv, bn and relu"
    if any(k not in ("maxpool", "avgpool") for ops in net.transitions for k in _kinds(ops)):
        return "its transitions are not pools"
    if _kinds(net.head_scale[0])[-2:] != ["apool", "flatten"]:
        return "its head does not end its features with `pool adaptive; flatten`"
    return _classifier_mismatch(net)


def _sequential(net) -> dict:
    m, index = {}, 0

    def add(op, theirs, ours_of):
        if op.kind == "conv" or op.kind == "fc":
            for leaf in ("weight", "bias") if getattr(op, "bias", True) else ("weight",):
                m[f"{theirs}.{leaf}"] = [(ours_of(leaf), None)]
        elif op.kind == "bn":
            for leaf in BN_LEAVES:
                m[f"{theirs}.{leaf}"] = [(ours_of(leaf), None)]

    for b in net.blocks:
        ours = names.block(b.index)
        for j in range(1, b.layers + 1):
            n_bn = 0
            for op in b.unit.ops:
                if op.kind == "conv":
                    add(op, f"features.{index}", lambda leaf, j=j: names.key(
                        ours, names.weight(j - 1, j) if leaf == "weight" else
                        names.unit_bias(0, j)))
                elif op.kind == "bn":
                    add(op, f"features.{index}", lambda leaf, j=j, n=n_bn: names.key(
                        ours, names.unit_bn(n, 1, j), leaf))
                    n_bn += 1
                index += 1
        if b.index <= len(net.transitions):
            index += len(net.transitions[b.index - 1])
    for k, op in enumerate(net.head):
        add(op, f"classifier.{k}", lambda leaf, k=k, op=op: names.key(
            names.CLASSIFIER, names.op(op.kind, k), leaf))
    return m
