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

from .values import Policy, Sym, show

REQUIRED = object()


@dataclass(frozen=True)
class Attr:
    name: str
    default: object
    resolve: Callable


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
    Attr("feature", Policy(("x0", "last")), lambda r, v, got: {
        "feature": r.policy("feature", v, got["stages"])}),
    Attr("transit", Policy(("last",)), _transit),
    # last: the block graph needs the layers, widths, kernel and bottleneck above
    Attr("topology", Sym("clique"), lambda r, v, got: r.topology(v, got)),
)

ATTRS = {a.name: a for a in _TABLE}
