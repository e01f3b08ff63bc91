"""The block-attribute table: every attribute a `blocks { ... }` statement can set, defined once.

An entry says the attribute's name as written (`layers 4`), its default when a spec does not
write it (REQUIRED: it must), and how its value becomes fields of `ir.Block`: `resolve(r, v,
got)` checks the evaluated value `v` with elaborate's rules `r` (whole numbers, sizes,
probabilities, policies, topologies, errors at the attribute's place in the spec) and returns
the fields, reading in `got` the fields of the attributes resolved before it (the table's
order). The grammar reads any `NAME expr` in a block; parse refuses a name that is not here.

Adding a block attribute: an entry here, its field in `ir.Block`, its use in the lowering
(lower.py), and a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import ir, ops
from .values import Policy, Sym, show

REQUIRED = object()
# unit's and shortcut's default (None) is made from other attributes: BN-ReLU-conv from
# kernel, bottleneck and dropout; conv 1x1 K stride S then bn


@dataclass(frozen=True)
class Attr:
    name: str
    default: object
    resolve: Callable
    ops: bool = False          # written `name { ops }` (resolve gets the ops, unresolved)
    none: bool = False         # an ops attribute also written `name none`


def _steps(r, v, got):
    n, stages = got["layers"], got["stages"]
    if v == Sym("all"):
        return {"steps": None}
    steps = r.whole(v, "steps", 0)
    if steps > n:
        raise r.err(f"steps {steps} is more than the block's {n} layers",
                    "steps counts the last stage's updates: 0..layers")
    if stages == 1 and steps != n:
        raise r.err("steps cuts the last alternate-update stage; with stages 1 there is none",
                    "use stages 2 or more")
    return {"steps": None if steps == n else steps}


def _bottleneck(r, v, got):
    if v in (Sym("none"), False, 0):
        return {"bottleneck": None}
    return {"bottleneck": r.whole(v, "bottleneck width", 1, r.limit("channels"))}


def _bn(r, v, got):
    if v not in (Sym("per_stage"), Sym("shared")):
        raise r.err(f"bn is per_stage or shared, got {show(v)}")
    return {"bn": v.name}


def _merge(r, v, got):
    if v not in (Sym("cat"), Sym("add")):
        raise r.err(f"merge is cat or add, got {show(v)}",
                    "cat: a layer reads its inputs concatenated (CliqueNet, DenseNet); add: "
                    "its unit's output plus its inputs (ResNet)")
    return {"merge": v.name}


# ops that act on each channel alone: before a unit's first conv they see the update's
# inputs concatenated, and act on each input as on its own
_PER_CHANNEL = {"bn", "relu", "relu6", "silu", "sigmoid", "hardswish", "hardsigmoid", "dropout"}


def _default_unit(shape, k, kernel, bottleneck, p):
    """BN-ReLU-conv(kernel) [dropout], or with a bottleneck BN-ReLU-conv 1x1 [dropout]
    BN-ReLU-conv(kernel) [dropout]: what `unit` is when a spec does not write one."""
    same = (kernel[0] // 2, kernel[1] // 2)

    def brc(shape, out, kern, pad):
        o = (out,) + shape[1:]
        conv = ops.node("conv", shape, o, kernel=kern, padding=pad)
        drop = (ops.node("dropout", o, o, p=p),) if p else ()
        return [ops.node("bn", shape, shape), ops.node("relu", shape, shape), conv, *drop], o

    chain, out = brc(shape, bottleneck or k, (1, 1) if bottleneck else kernel,
                     (0, 0) if bottleneck else same)
    if bottleneck:
        more, _ = brc(out, k, kernel, same)
        chain += more
    return chain


def _split(r, chain, what):
    """The unit's ops split at its first conv (the W_ij). A unit that starts with branches
    has none: its edges pass each layer's one input on (elaborate checks that it is one)."""
    first = next((j for j, op in enumerate(chain) if op.kind in ("conv", "branches")), None)
    if first is not None and chain[first].kind == "branches" and all(
            op.kind in _PER_CHANNEL for op in chain[:first]):
        return ir.Unit((), None, tuple(chain))
    if first is None:
        raise r.err(f"{what} has no conv", "a unit's first conv holds the W_ij, one per edge")
    for op in chain[:first]:
        if op.kind not in _PER_CHANNEL:
            raise r.err(f"{what} has {op.kind} before its first conv", "before the first conv "
                        "only per-channel ops (bn, activations, dropout): they see the update's "
                        "inputs concatenated")
    return ir.Unit(tuple(chain[:first]), chain[first], tuple(chain[first + 1:]))


def _unit(r, v, got):
    """The unit of the updates that read X_0 (at the block's input, with S the stride) and of
    the others (at the layers' size, S = 1)."""
    k, stride = got["width"], got["stride"]
    given = [a for a in ("kernel", "bottleneck") if r.written(a)]
    if v is not None and given:
        raise r.err(f"{' and '.join(given)} shape the default unit; with `unit {{ ... }}` "
                    "write the convs in the unit")

    def resolve(shape, s, what):
        if v is None:
            chain = _default_unit(shape, k, got["kernel"], got["bottleneck"], got["dropout"])
        else:  # the block's dropout follows every conv, as in the default unit
            chain = []
            for op in r.ops(v, shape, K=k, S=s, what=what):
                chain.append(op)
                if op.kind == "conv" and got["dropout"]:
                    chain.append(ops.node("dropout", op.out_shape, op.out_shape,
                                          p=got["dropout"]))
        u = _split(r, chain, what)
        if u.out_shape[0] != k:
            raise r.err(f"{what} ends with {u.out_shape[0]} channels, but the block's width "
                        f"is {k}", "a unit's output is a layer X_i: end it with K channels")
        return u

    unit0 = resolve(r.shape, stride, f"block {r.block}'s unit")
    layer = (k,) + unit0.out_shape[1:]
    if got["layers"] == 1:  # every update of a lone layer reads X_0
        return {"unit": unit0, "unit0": unit0}
    unit = resolve(layer, 1, f"block {r.block}'s unit (an update not reading X_0)")
    if unit.out_shape != layer:
        raise r.err(f"block {r.block}'s unit changes the layers' size {layer} to "
                    f"{unit.out_shape} where S is 1", "stride its convs by S")
    if stride == 1 and unit0.out_shape[1:] != r.shape[1:]:
        raise r.err(f"block {r.block}'s unit changes the size of its input without a stride",
                    "write `stride N` in the block and stride the unit's conv by S")
    return {"unit": unit, "unit0": unit0}


def _shortcut(r, v, got):
    """merge add: the ops of an X_0 edge whose shape differs from the layers'."""
    layer = (got["width"],) + got["unit0"].out_shape[1:]
    if got["merge"] != "add" or tuple(r.shape) == layer:
        return {"shortcut": (), "add_x0": True}
    what = f"block {r.block}'s shortcut"
    if v == Sym("none"):  # MobileNet: a unit that changes the shape adds no residual
        return {"shortcut": (), "add_x0": False}
    if v is None:
        c, hw = r.shape[0], layer[1:]
        s = (got["stride"],) * 2
        chain = (ops.node("conv", r.shape, (layer[0],) + hw, stride=s, padding=(0, 0)),
                 ops.node("bn", layer, layer))
    else:
        chain = r.ops(v, r.shape, K=got["width"], S=got["stride"], what=what)
    out = chain[-1].out_shape if chain else tuple(r.shape)
    if out != layer:
        raise r.err(f"{what} makes {out} of X_0 {tuple(r.shape)}, a layer is {layer}",
                    "end it with K channels at the layers' size, e.g. conv 1x1 K stride S")
    return {"shortcut": tuple(chain), "add_x0": True}


def _post(r, v, got):
    layer = (got["width"],) + got["unit0"].out_shape[1:]
    chain = r.ops(v, layer, K=got["width"], S=1, what=f"block {r.block}'s post")
    for op in chain:
        if op.kind not in _PER_CHANNEL or op.params():
            raise r.err(f"post holds {op.kind}", "post is what follows the addition: "
                        "activations or dropout")
    return {"post": tuple(chain)}


def _shortcut_from(r, v, got):
    if v not in (Sym("input"), Sym("pre")):
        raise r.err(f"shortcut_from is input or pre, got {show(v)}",
                    "pre: the shortcut reads X_0 after the unit's ops before its first conv")
    return {"shortcut_from": v.name}


def _transit(r, v, got):
    transit = r.policy("transit", v, got["stages"])
    if not transit and r.block < r.blocks:
        raise r.err(f"block {r.block} sends nothing to the next block (transit none)")
    return {"transit": transit}


_TABLE = (
    Attr("layers", REQUIRED, lambda r, v, got: {
        "layers": r.whole(v, "layers", 1, r.limit("layers"))}),
    Attr("width", REQUIRED, lambda r, v, got: {
        "width": r.whole(v, "width", 1, r.limit("channels"))}),
    Attr("stages", 2, lambda r, v, got: {"stages": r.whole(v, "stages", 1, r.limit("stages"))}),
    Attr("steps", Sym("all"), _steps),
    Attr("kernel", 3, lambda r, v, got: {"kernel": r.pair(v, "kernel", 1, r.limit("kernel"))}),
    Attr("bottleneck", Sym("none"), _bottleneck),
    Attr("bn", Sym("per_stage"), _bn),
    Attr("dropout", 0.0, lambda r, v, got: {"dropout": r.prob(v)}),
    Attr("merge", Sym("cat"), _merge),
    Attr("stride", 1, lambda r, v, got: {"stride": r.whole(v, "stride", 1, r.limit("kernel"))}),
    Attr("unit", None, _unit, ops=True),
    Attr("shortcut_from", Sym("input"), _shortcut_from),
    Attr("shortcut", None, _shortcut, ops=True, none=True),
    Attr("post", (), _post, ops=True),
    Attr("feature", Policy(("x0", "last")), lambda r, v, got: {
        "feature": r.policy("feature", v, got["stages"])}),
    Attr("transit", Policy(("last",)), _transit),
    # last: the block graph needs the layers, widths, kernel and bottleneck above
    Attr("topology", Sym("clique"), lambda r, v, got: r.topology(v, got)),
)

ATTRS = {a.name: a for a in _TABLE}
