"""Names: every module, parameter and fx node name the compiler gives, in one place.

The state_dict keys are the public contract (checkpoints, from_original, weights_figure), and
the fx node names are what `print(gm.code)` shows as the paper's Table 1; the lowering, the
reference interpreter, the summaries, the diagrams and the original's key map all read them
from here so that none of them can drift from the others.

    block1.w_4_3          W_43 of block 1          weight(4, 3)
    block1.wb_3           X_3's bottleneck conv     bottleneck_weight(3)
    block1.g_s2_x3        the unit g updating X_3 in stage 2 (its BatchNorm)
    block1.gb_s2_x3       the second BN of that unit (gc_, gd_, ... the next ones)
    block1.wb_3           the conv after the first in X_3's unit (wc_3, ... the next ones)
    block1.bias_3         the bias of X_3's first conv (biasb_3: of wb_3)
    block1.x3_se5         another op of X_3's unit that owns weights (the op's index 5)
    block1.s_0_3.conv0    the shortcut of the edge X_0 -> X_3 (merge add), one per edge
    b1_x3_s2              the fx node holding X_3^(2) of block 1
"""

from __future__ import annotations

STEM, CLASSIFIER = "stem", "classifier"
HEAD = "head"            # the summary's part made of every head{s} and the classifier
INPUT, INPUT_NHWC, SCALES = "x", "x_nhwc", "scales"   # fx nodes outside any block
DROPOUT = "dropout"      # a block's dropout module (no state; gone once fused)
# the lean units' CPU scratch slots (units.py; estimate.py counts them by these names)
CAT_SLOT, ACT_SLOT, UNIFORMS_SLOT, GRAD_SLOT = "cat", "act", "uniforms", "grad"


# ---- modules and parameters (state_dict keys) -------------------------------------------------

def key(*parts: str) -> str:
    """A submodule path or state_dict key from its parts: key(block(1), weight(4, 3))."""
    return ".".join(parts)


def block(b: int) -> str:
    return f"block{b}"


def transition(t: int) -> str:
    """The transition after block t."""
    return f"transition{t}"


def head(s: int) -> str:
    """The head's ops on the feature of block s (one scale)."""
    return f"head{s}"


def op(kind: str, j: int) -> str:
    """The module of the j-th op (0-based) of a stem, transition or head: conv2, bn0; relu6_3
    (a kind that ends in a digit would run into its index)."""
    return f"{kind}_{j}" if kind[-1].isdigit() else f"{kind}{j}"


def weight(i: int, j: int) -> str:
    """W_ij, shared by every stage that reads it."""
    return f"w_{i}_{j}"


_NTH = "bcdefghijklmnopqrstuvwxyz"  # the unit's second, third, ... BN and conv


def _nth(m: int) -> str:
    return "" if m == 0 else _NTH[m - 1] if m <= len(_NTH) else f"{m}_"


def unit_weight(m: int, j: int) -> str:
    """The m-th conv after the first of layer j's unit (m >= 1), shared by every stage."""
    return f"w{_nth(m)}_{j}"


def unit_bias(m: int, j: int) -> str:
    """The bias of layer j's first conv (m = 0) or of its m-th conv after it."""
    return f"bias{_nth(m)}_{j}"


def bottleneck_weight(j: int) -> str:
    """The conv after layer j's bottleneck."""
    return unit_weight(1, j)


def unit_bn(m: int, stage: int, i: int, bn: str = "per_stage") -> str:
    """The m-th BN (0-based) of the unit g updating X_i in `stage`; with `bn shared` all loop
    stages share one."""
    tail = f"s{stage}_x{i}" if stage == 1 or bn == "per_stage" else f"loop_x{i}"
    return f"g{_nth(m)}_{tail}"


def update_unit(stage: int, i: int, bn: str = "per_stage") -> str:
    """The unit g updating X_i in `stage` (its first BN)."""
    return unit_bn(0, stage, i, bn)


def bottleneck_unit(stage: int, i: int, bn: str = "per_stage") -> str:
    """The unit after the bottleneck of the update of X_i in `stage`."""
    return unit_bn(1, stage, i, bn)


def branch_op(path: int, kind: str, j: int) -> str:
    """The j-th op of path `path` of a branches op, inside its module: p1_conv0."""
    return f"p{path}_{op(kind, j)}"


def unit_module(j: int, kind: str, index: int) -> str:
    """An op of layer j's unit other than a BN or conv, at `index` in the unit: x3_se5."""
    return f"x{j}_{op(kind, index)}"


def shortcut(i: int, j: int) -> str:
    """The shortcut ops of the edge X_i -> X_j (merge add), where its shapes differ."""
    return f"s_{i}_{j}"


# ---- fx nodes ---------------------------------------------------------------------------------

def node(*parts: str) -> str:
    """An fx node name from its parts: node(block_tag(1), value(3, 2)) is b1_x3_s2."""
    return "_".join(parts)


def block_tag(b: int) -> str:
    """Block b's prefix of fx node names (short, so gm.code stays readable)."""
    return f"b{b}"


def value(i: int, stage: int) -> str:
    """X_i^(stage) as a name: x3_s2."""
    return f"x{i}_s{stage}"


def value_node(b: int, i: int, stage: int) -> str:
    return node(block_tag(b), value(i, stage))


def update_weights_node(b: int, i: int, stage: int) -> str:
    """The W_li of one update, concatenated along their input channels."""
    return node(block_tag(b), "w", value(i, stage))


def input_node(b: int, i: int, stage: int) -> str:
    """An update's inputs concatenated (before fuse.py lets its unit read them apart)."""
    return node(block_tag(b), "in", value(i, stage))


def unit_op_node(name: str, kind: str) -> str:
    """An op of the unit whose output is the node `name`, before fusing: b1_x3_s2_relu."""
    return node(name, kind)


def mid_node(b: int, i: int, stage: int) -> str:
    """An update's output before its bottleneck conv."""
    return node(block_tag(b), "mid", value(i, stage))


def section_weight_node(section: str, j: int) -> str:
    """The weight of the j-th op (a conv) of a stem, transition or head, read by a lean unit."""
    return node(section, f"w{j}")


def transit_node(b: int) -> str:
    return node(block_tag(b), "transit")


def feature_node(b: int) -> str:
    return node(block_tag(b), "feature")
