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
- MobileNet v2/v3 and EfficientNet: `features.0` is the stem, then one module per unit
  (MobileNet: numbered through the network, `features.5`; EfficientNet: by stage and unit,
  `features.3.1`), then the head's conv; a unit's ops are numbered as torchvision groups
  them: a conv with its BN (and activation) is one module, `.0` the conv and `.1` the BN,
  an SE one module whose 1x1 convs fc1 and fc2 are our Linears (their weights with two
  trailing 1x1 dims); MobileNet v2 leaves its projection conv and BN ungrouped.
- GoogLeNet: the stem's three conv-BN pairs are conv1..conv3; block b is Inception module
  3a, 3b, 4a .. 4e, 5a, 5b; path p is branch{p + 1}, its k-th conv-BN pair `.k` (bare when
  the path has one, and counted after the pool in branch4).
- Inception v3: the stem's conv-BN pairs are Conv2d_1a_3x3 .. Conv2d_4a_3x3; block b is
  Mixed_5b .. Mixed_7c, whose conv-BN pairs, path by path (nested paths in place), carry
  torchvision's names for its kind of module (A .. E, known by how many it has).
- ShuffleNet v2: block b is stage{b + 1}, its layer j the unit `.{j - 1}`; a strided unit's
  paths are branch1 and branch2, a split unit's second path branch2; inside a path every op
  has its index in torchvision's Sequential (ReLUs included); conv5 is the head's conv.
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
            converted[ours] = (value if cut is None else value.flatten(1) if cut == SQUEEZED
                               else value[:, cut])
    for key, value in own.items():
        converted.setdefault(key, value)  # the counters an old file lacks
    load_state(gm, converted, "state_dict")
    return gm


def torchvision_layout(net) -> dict:
    """{torchvision key: [(our key, input-channel slice or None), ...]} for `net`, or a
    CheckpointError when torchvision has no model of its form."""
    whys = []
    for family, mismatch, layout in _LAYOUTS:
        why = mismatch(net)
        if why is None:
            return layout(net)
        whys.append(f"not {family} ({why})")
    raise CheckpointError(f"{net.name} has no torchvision layout: " + ", ".join(whys))


SQUEEZED = "1x1"  # a target's cut: their tensor is ours with two trailing 1x1 dims


def _their_shape(own, targets) -> tuple:
    """The shape of the torchvision tensor that fills `targets`."""
    first, cut = targets[0]
    if cut is None:
        return tuple(own[first].shape)
    if cut == SQUEEZED:
        return tuple(own[first].shape) + (1, 1)
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


_ACTS = {"relu", "relu6", "silu", "hardswish"}


def _mobile_flavour(net) -> str:
    """v2 (the unit's modules in `conv`, projection ungrouped), v3 (in `block`, units
    numbered through the network) or efficientnet (in `block`, numbered by stage)."""
    if len(net.head) == 4:
        return "v3"
    if any(op.kind == "se" for b in net.blocks for op in b.unit.ops + b.unit0.ops):
        return "efficientnet"
    return "v2"


def _mobile_mismatch(net) -> str | None:
    """Why `net` is not of torchvision's MobileNet v2/v3 or EfficientNet form, or None."""
    if _kinds(net.stem)[:2] != ["conv", "bn"] or len(net.stem) != 3 or \
            net.stem[2].kind not in _ACTS:
        return "its stem is not conv - bn - activation"
    for b in net.blocks:
        if not (_chain(b) and b.merge == "add" and not b.post and not b.shortcut):
            return (f"block {b.index} is not a chain of inverted residual units (merge add, "
                    "shortcut none, no post)")
        for unit in (b.unit, b.unit0):
            if any(getattr(op, "bias", False) for op in unit.ops):
                return f"block {b.index}'s unit has a conv with a bias"
            kinds = [k for k in _kinds(unit.ops) if k != "droppath"]
            for j, k in enumerate(kinds):
                if k == "conv" and kinds[j + 1:j + 2] != ["bn"]:
                    return f"block {b.index}'s unit has a conv without a bn after it"
    if any(ops for ops in net.transitions):
        return "it has ops between its stages"
    if _kinds(net.head_scale[0])[:2] != ["conv", "bn"] or \
            _kinds(net.head_scale[0])[3:] != ["gpool"]:
        return "its head is not `conv 1x1; bn; activation; pool global`"
    if _kinds(net.head) not in (["dropout", "fc"], ["fc", "hardswish", "dropout", "fc"]):
        return "its classifier is not `dropout; fc` or `fc; hardswish; dropout; fc`"
    if net.scales != (len(net.blocks),):
        return "its head reads more than the last block (scales last)"
    return None


def _conv_bn_key(m, theirs, ours_conv, ours_bn):
    m[f"{theirs[0]}.weight"] = [(ours_conv, None)]
    _bn_keys(m, theirs[1], ours_bn)


def _mobile(net) -> dict:
    flavour = _mobile_flavour(net)
    stem = names.STEM
    m = {}
    _conv_bn_key(m, ("features.0.0", "features.0.1"),
                 names.key(stem, names.op("conv", 0), "weight"), names.key(stem, names.op("bn", 1)))
    k = 1
    for b in net.blocks:
        ours = names.block(b.index)
        for j in range(1, b.layers + 1):
            unit = b.unit_of([j - 1])
            where = (f"features.{b.index}.{j - 1}.block" if flavour == "efficientnet" else
                     f"features.{k}.block" if flavour == "v3" else f"features.{k}.conv")
            k += 1
            module, n_conv, n_bn, conv = 0, 0, 0, None
            for i, op in enumerate(unit.ops):
                if op.kind == "conv":
                    conv = names.key(ours, names.weight(j - 1, j) if n_conv == 0 else
                                     names.unit_weight(n_conv, j))
                    n_conv += 1
                elif op.kind == "bn":
                    bn = names.key(ours, names.unit_bn(n_bn, 1, j))
                    n_bn += 1
                    grouped = flavour != "v2" or (i + 1 < len(unit.ops)
                                                  and unit.ops[i + 1].kind in _ACTS)
                    if grouped:
                        _conv_bn_key(m, (f"{where}.{module}.0", f"{where}.{module}.1"), conv, bn)
                        module += 1
                    else:  # v2's projection: the conv and its BN, one module each
                        _conv_bn_key(m, (f"{where}.{module}", f"{where}.{module + 1}"), conv, bn)
                        module += 2
                elif op.kind == "se":
                    se = names.key(ours, names.unit_module(j, "se", i))
                    for fc in ("fc1", "fc2"):
                        m[f"{where}.{module}.{fc}.weight"] = [(names.key(se, fc, "weight"),
                                                               SQUEEZED)]
                        m[f"{where}.{module}.{fc}.bias"] = [(names.key(se, fc, "bias"), None)]
                    module += 1
    last = len(net.blocks) + 1 if flavour == "efficientnet" else k
    head = names.head(len(net.blocks))
    _conv_bn_key(m, (f"features.{last}.0", f"features.{last}.1"),
                 names.key(head, names.op("conv", 0), "weight"), names.key(head, names.op("bn", 1)))
    for i, op in enumerate(net.head):
        if op.kind == "fc":
            for leaf in ("weight", "bias"):
                m[f"classifier.{i}.{leaf}"] = [(names.key(names.CLASSIFIER, names.op("fc", i),
                                                          leaf), None)]
    return m


def _branch_unit(b):
    """The branches op a block's units are made of, with the ops after it, or None."""
    for unit in (b.unit, b.unit0):
        if unit.first is not None or unit.body[0].kind != "branches":
            return None
    return b.unit.body


def _googlenet_mismatch(net) -> str | None:
    if _kinds(net.stem) != ["conv", "bn", "relu", "maxpool", "conv", "bn", "relu", "conv", "bn",
                            "relu", "maxpool"]:
        return "its stem is not three conv-bn-relu with pools"
    if len(net.blocks) != 9:
        return f"it has {len(net.blocks)} blocks, not 9 Inception modules"
    for b in net.blocks:
        body = _branch_unit(b)
        if b.layers != 1 or body is None or len(body) != 1 or len(body[0].paths) != 4:
            return f"block {b.index} is not one layer of four paths"
        if any(op.kind not in ("conv", "bn", "relu", "maxpool") for op in body[0].leaves()):
            return f"block {b.index}'s paths are not conv-bn-relu (and a pool)"
    if _kinds(net.head_scale[0]) != ["gpool"] or _kinds(net.head) != ["dropout", "fc"]:
        return "its head is not `pool global; dropout; fc`"
    return None


_INCEPTIONS = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")


def _conv_bn_pairs(ops):
    """(conv index, bn index) of each conv followed by a bn in `ops`."""
    return [(j, j + 1) for j, op in enumerate(ops) if op.kind == "conv"
            and j + 1 < len(ops) and ops[j + 1].kind == "bn"]


def _googlenet(net) -> dict:
    m, stem = {}, names.STEM
    for n, (c, bn) in enumerate(_conv_bn_pairs(net.stem), 1):
        _conv_bn_key(m, (f"conv{n}.conv", f"conv{n}.bn"), names.key(stem, names.op("conv", c),
                                                                    "weight"),
                     names.key(stem, names.op("bn", bn)))
    for b, module in zip(net.blocks, _INCEPTIONS):
        op = b.unit.body[0]
        ours = names.key(names.block(b.index), names.unit_module(1, "branches", 0))
        for p, path in enumerate(op.paths):
            pairs = _conv_bn_pairs(path)
            for k, (c, bn) in enumerate(pairs):
                # a path with one conv names it bare, unless a pool comes first (branch4.1)
                where = f"inception{module}.branch{p + 1}" + (
                    "" if len(pairs) == 1 and c == 0 else f".{k + (c > 0 and k == 0)}")
                _conv_bn_key(m, (f"{where}.conv", f"{where}.bn"),
                             names.key(ours, names.branch_op(p, "conv", c), "weight"),
                             names.key(ours, names.branch_op(p, "bn", bn)))
    fc = _kinds(net.head).index("fc")
    for leaf in ("weight", "bias"):
        m[f"fc.{leaf}"] = [(names.key(names.CLASSIFIER, names.op("fc", fc), leaf), None)]
    return m


def _shufflenet_mismatch(net) -> str | None:
    if _kinds(net.stem) != ["conv", "bn", "relu", "maxpool"]:
        return "its stem is not conv - bn - relu - pool max"
    if len(net.blocks) != 3:
        return f"it has {len(net.blocks)} blocks, not 3 stages"
    for b in net.blocks:
        for unit in (b.unit, b.unit0):
            if unit.first is not None or _kinds(unit.body) != ["branches", "shuffle"] or \
                    len(unit.body[0].paths) != 2:
                return f"block {b.index}'s unit is not two paths then a shuffle"
    if _kinds(net.head_scale[0]) != ["conv", "bn", "relu", "gpool"] or _kinds(net.head) != ["fc"]:
        return "its head is not `conv; bn; relu; pool global; fc`"
    return None


def _indexed(m, where, ours, ops, branch_op):
    """Ops numbered as one torchvision Sequential, every op its index."""
    for j, op in enumerate(ops):
        if op.kind == "conv":
            m[f"{where}.{j}.weight"] = [(names.key(ours, branch_op("conv", j), "weight"), None)]
        elif op.kind == "bn":
            _bn_keys(m, f"{where}.{j}", names.key(ours, branch_op("bn", j)))


def _shufflenet(net) -> dict:
    m, stem = {}, names.STEM
    _indexed(m, "conv1", stem, net.stem, names.op)
    for b in net.blocks:
        for j in range(1, b.layers + 1):
            op = b.unit_of([j - 1]).body[0]
            ours = names.key(names.block(b.index), names.unit_module(j, "branches", 0))
            for p, path in enumerate(op.paths):
                if not path:  # the split's half that passes on
                    continue
                branch = f"branch{p + 1}" if not op.split else "branch2"
                _indexed(m, f"stage{b.index + 1}.{j - 1}.{branch}", ours, path,
                         lambda kind, i, p=p: names.branch_op(p, kind, i))
    _indexed(m, "conv5", names.head(len(net.blocks)), net.head_scale[0], names.op)
    for leaf in ("weight", "bias"):
        m[f"fc.{leaf}"] = [(names.key(names.CLASSIFIER, names.op("fc", 0), leaf), None)]
    return m


_INCEPTION_V3_STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1",
                      "Conv2d_4a_3x3")
_INCEPTION_V3_MIXED = ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c")
# each kind of module's conv-BN pairs in path order, by how many there are
_INCEPTION_V3_CONVS = {len(convs): convs for convs in (
    ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2",
     "branch3x3dbl_3", "branch_pool"),
    ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
    ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1",
     "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"),
    ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3",
     "branch7x7x3_4"),
    ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1",
     "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"),
)}


def _path_pairs(op, prefix):
    """(our conv weight key, our BN key) of each conv-BN pair inside a branches op, path by
    path, nested paths in place."""
    for p, path in enumerate(op.paths):
        for j, o in enumerate(path):
            if o.kind == "branches":
                yield from _path_pairs(o, names.key(prefix, names.branch_op(p, o.kind, j)))
            elif o.kind == "conv" and j + 1 < len(path) and path[j + 1].kind == "bn":
                yield (names.key(prefix, names.branch_op(p, "conv", j), "weight"),
                       names.key(prefix, names.branch_op(p, "bn", j + 1)))


def _inception_v3_mismatch(net) -> str | None:
    if len(net.blocks) != 11 or len(_conv_bn_pairs(net.stem)) != 5:
        return "it is not a stem of five conv-bn pairs and eleven modules"
    for b in net.blocks:
        body = _branch_unit(b)
        if b.layers != 1 or body is None or len(body) != 1:
            return f"block {b.index} is not one layer of paths"
        n = sum(1 for _ in _path_pairs(body[0], ""))
        if n not in _INCEPTION_V3_CONVS:
            return f"block {b.index} has {n} conv-bn pairs, as no Inception v3 module"
    if _kinds(net.head_scale[0]) != ["gpool"] or _kinds(net.head) != ["dropout", "fc"]:
        return "its head is not `pool global; dropout; fc`"
    return None


def _inception_v3(net) -> dict:
    m, stem = {}, names.STEM
    for theirs, (c, bn) in zip(_INCEPTION_V3_STEM, _conv_bn_pairs(net.stem)):
        _conv_bn_key(m, (f"{theirs}.conv", f"{theirs}.bn"),
                     names.key(stem, names.op("conv", c), "weight"),
                     names.key(stem, names.op("bn", bn)))
    for b, mixed in zip(net.blocks, _INCEPTION_V3_MIXED):
        ours = names.key(names.block(b.index), names.unit_module(1, "branches", 0))
        pairs = list(_path_pairs(b.unit.body[0], ours))
        for theirs, (conv, bn) in zip(_INCEPTION_V3_CONVS[len(pairs)], pairs):
            _conv_bn_key(m, (f"Mixed_{mixed}.{theirs}.conv", f"Mixed_{mixed}.{theirs}.bn"),
                         conv, bn)
    fc = _kinds(net.head).index("fc")
    for leaf in ("weight", "bias"):
        m[f"fc.{leaf}"] = [(names.key(names.CLASSIFIER, names.op("fc", fc), leaf), None)]
    return m


_LAYOUTS = (("DenseNet", _densenet_mismatch, _densenet), ("ResNet", _resnet_mismatch, _resnet),
            ("VGG/AlexNet", _sequential_mismatch, _sequential),
            ("MobileNet/EfficientNet", _mobile_mismatch, _mobile),
            ("GoogLeNet", _googlenet_mismatch, _googlenet),
            ("ShuffleNet v2", _shufflenet_mismatch, _shufflenet),
            ("Inception v3", _inception_v3_mismatch, _inception_v3))
