"""Fuse: the lowered graph's plain op chains -> the lean CPU units of units.py.

`lower` builds every op as itself (a BatchNorm2d, a ReLU, a conv reading its weight, the
dropout after it), each fx node carrying the IR op it runs in `meta["op"]`. This pass then
finds the chains the units implement and replaces each by one call:

    bn relu conv [dropout]    -> units.BNReLUConv   (conv: stride 1, no bias, no groups)
    bn relu pool global       -> units.BNReLUPool

over the concatenation that feeds the bn, which the unit reads as separate inputs. A unit is
the BatchNorm2d it replaces (the same parameters, buffers and state_dict keys, at the same
module path); the conv keeps its weight where it was. The chains are recognised by
`match`, a rule over IR ops that the memory estimate (estimate.py) applies to the IR too, so
the two cannot disagree about which ops run fused.

Only the nodes change: outputs, gradients and running statistics equal the plain graph's
(tests/test_compiler.py checks both against the reference interpreter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional
CONV_UNIT, POOL_UNIT = "bn_relu_conv", "bn_relu_pool"


@dataclass(frozen=True)
class Match:
    """A fusable chain: `unit` (CONV_UNIT | POOL_UNIT), how many ops it takes, the conv's
    padding and the dropout's p."""
    unit: str
    length: int
    padding: tuple = (0, 0)
    p: float = 0.0


def match(ops) -> Optional[Match]:
    """The unit that runs the chain starting at ops[0], if any (ops: IR ops in order)."""
    if len(ops) < 3 or ops[0].kind != "bn" or len(ops[0].in_shape) != 3 or ops[1].kind != "relu":
        return None
    last = ops[2]
    if last.kind == "gpool":
        return Match(POOL_UNIT, 3)
    if last.kind != "conv" or last.stride != (1, 1) or last.bias or last.groups != 1:
        return None
    p = ops[3].p if len(ops) > 3 and ops[3].kind == "dropout" else 0.0
    return Match(CONV_UNIT, 4 if p else 3, last.padding, p)


def fuse(gm, *, memory_efficient: bool = True):
    """The GraphModule gm with every chain `match` accepts run by its unit (gm's graph and
    modules are taken over: gm itself is not to be used after).

    memory_efficient: the units keep no copy of a concatenated input for backward and
    recompute it there (see units.BNReLUConv). A BatchNorm called at several nodes (`bn
    shared`) is fused only if every call is the same kind of chain."""
    import torch.fx as fx  # here, not above: estimate.py reads `match` without torch
    found, refused = {}, set()
    for node in gm.graph.nodes:
        if node.op != "call_module" or "op" not in node.meta:
            continue
        chain = _chain(node)
        m = match([n.meta["op"] for n in chain])
        if m is None or (found.get(node.target) or [(None, m)])[0][1] != m:
            refused.add(node.target)
        else:
            found.setdefault(node.target, []).append((chain[:m.length], m))
    for target, calls in found.items():
        if target in refused:
            continue
        _replace_module(gm, target, _unit(gm.get_submodule(target), calls[0][1],
                                          memory_efficient))
        for chain, m in calls:
            _rewrite(gm, chain, m)
    gm.graph.lint()
    # a new GraphModule holds only the modules the graph uses, in the order it uses them (the
    # state_dict's order: a section's conv weight, read first by its unit, before its bn)
    fused = fx.GraphModule(gm, gm.graph, class_name=type(gm).__name__)
    fused.meta.update(gm.meta)
    return fused


def _chain(node, longest: int = 4):
    """node and the nodes after it, each the only user of the one before and reading it as its
    first argument, up to `longest` nodes that carry an IR op."""
    chain = [node]
    while len(chain) < longest and len(chain[-1].users) == 1:
        nxt = next(iter(chain[-1].users))
        if "op" not in nxt.meta or not nxt.args or nxt.args[0] is not chain[-1]:
            break
        chain.append(nxt)
    return chain


def _unit(bn, m: Match, memory_efficient: bool):
    from . import units  # (as fx in fuse)
    if m.unit == POOL_UNIT:
        unit = units.BNReLUPool(bn.num_features)
    else:
        unit = units.BNReLUConv(bn.num_features, m.padding, memory_efficient, m.p)
    for name, t in [*bn.named_parameters(recurse=False), *bn.named_buffers(recurse=False)]:
        setattr(unit, name, t)  # the same tensors: nothing is copied, nothing re-initialised
    unit.momentum, unit.eps = bn.momentum, bn.eps
    return unit.train(bn.training)


def _replace_module(gm, target: str, module):
    parent, _, leaf = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, module)


def _rewrite(gm, chain, m: Match):
    """The chain's last node becomes the unit's call (it keeps its name and its users)."""
    bn, last = chain[0], chain[-1]
    x = bn.args[0]
    fed_by_cat = (x.op == "call_function" and x.meta.get("cat") and len(x.users) == 1)
    xs = list(x.args[0]) if fed_by_cat else [x]
    args = tuple(xs)
    if m.unit == CONV_UNIT:
        conv = chain[2]
        if conv.op == "call_module":  # a section's conv: the unit reads its weight
            with gm.graph.inserting_before(last):
                w = gm.graph.create_node("get_attr", f"{conv.target}.weight",
                                         name=conv.meta["weight_node"])
            w.meta["part"] = conv.meta.get("part")
        else:
            w = conv.args[1]
        args = (w, *xs)
    last.op, last.target, last.args, last.kwargs = "call_module", bn.target, args, {}
    last.meta.pop("op")
    last.meta["unit"] = m.unit
    for n in reversed(chain[:-1]):
        gm.graph.erase_node(n)
    if fed_by_cat:
        gm.graph.erase_node(x)
